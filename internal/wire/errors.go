package wire

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jtarchie/pocketci/orchestra"
)

// errorDomain marks the ErrorInfo details this protocol attaches.
const errorDomain = "pocketci.orchestra"

// sentinels are the orchestra errors that keep their identity across the
// wire: the plugin sends the reason, the host wraps the same sentinel again.
var sentinels = []struct {
	reason string
	code   codes.Code
	err    error
}{
	{"CONTAINER_NOT_FOUND", codes.NotFound, orchestra.ErrContainerNotFound},
	{"VOLUME_NOT_FOUND", codes.NotFound, orchestra.ErrVolumeNotFound},
	{"INVALID_TASK", codes.InvalidArgument, orchestra.ErrInvalidTask},
	{"IMAGE_NOT_FOUND", codes.NotFound, orchestra.ErrImageNotFound},
	{"DRIVER_CLOSED", codes.FailedPrecondition, orchestra.ErrClosed},
	{"INVALID_CONFIG", codes.InvalidArgument, orchestra.ErrInvalidConfig},
	{"UNSUPPORTED", codes.Unimplemented, errors.ErrUnsupported},
}

// toStatus turns a driver's error into a gRPC status that carries the
// sentinel it wraps, if any.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			st, derr := status.New(s.code, err.Error()).WithDetails(&errdetails.ErrorInfo{Reason: s.reason, Domain: errorDomain})
			if derr != nil {
				return status.Error(s.code, err.Error())
			}
			return st.Err()
		}
	}
	return status.Error(codes.Unknown, err.Error())
}

// RemoteError is an error returned by a plugin. Its message is the plugin's;
// it unwraps to the orchestra sentinel or context error the plugin reported,
// so errors.Is works on the host side as it does in process.
type RemoteError struct {
	// Plugin is the plugin's name.
	Plugin string
	// Op is the operation that failed, such as "RunContainer".
	Op string
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the error text from the plugin (or from the transport).
	Message string
	cause   error
}

// Error says which plugin failed in which operation, and why.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("plugin %s: %s: %s", e.Plugin, e.Op, e.Message)
}

// Unwrap returns the sentinel or context error carried across the wire.
func (e *RemoteError) Unwrap() error { return e.cause }

// fromStatus rebuilds a host-side error from a gRPC status.
func fromStatus(plugin, op string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("plugin %s: %s: %w", plugin, op, err)
	}
	re := &RemoteError{Plugin: plugin, Op: op, Code: st.Code(), Message: st.Message()}
	switch st.Code() {
	case codes.Canceled:
		re.cause = context.Canceled
	case codes.DeadlineExceeded:
		re.cause = context.DeadlineExceeded
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != errorDomain {
			continue
		}
		for _, s := range sentinels {
			if s.reason == info.GetReason() {
				re.cause = s.err
			}
		}
	}
	return re
}

// fail names the plugin and op in err, an error of the host's side.
func (c *Client) fail(op string, err error) error {
	return fmt.Errorf("plugin %s: %s: %w", c.name, op, err)
}

// streamError is fail for the failure of a bulk connection, or for the
// caller's context error when that ended it.
func (c *Client) streamError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return c.fail(op, err)
}
