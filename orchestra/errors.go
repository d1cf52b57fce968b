package orchestra

import "errors"

// Sentinel errors shared by all drivers. They keep their identity across the
// plugin boundary: errors.Is works on the host side for errors a plugin
// returned.
var (
	// ErrContainerNotFound means no container exists with the ID.
	ErrContainerNotFound = errors.New("container not found")
	// ErrVolumeNotFound means no volume exists with the name.
	ErrVolumeNotFound = errors.New("volume not found")
	// ErrInvalidTask means the task failed validation; the error names the field.
	ErrInvalidTask = errors.New("invalid task")
	// ErrImageNotFound means the image is absent and cannot be pulled.
	ErrImageNotFound = errors.New("image not found")
	// ErrClosed means the driver was closed.
	ErrClosed = errors.New("driver closed")
	// ErrInvalidConfig means a driver config was refused; the error names
	// the field, never its value (a config may carry secrets).
	ErrInvalidConfig = errors.New("invalid driver config")
)
