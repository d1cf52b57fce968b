package wire

import "github.com/jtarchie/pocketci/orchestra"

// The optional orchestra interfaces a driver value has must be exactly its
// plugin's (pocketci type-asserts them). Optional is the one place that
// builds such a value, for the wire's drivers and the host's alike.

// Optional is base with the optional interfaces vd and sb give it; either
// may be nil. Base undoes it.
func Optional(base orchestra.Driver, vd orchestra.VolumeDataAccessor, sb orchestra.SandboxDriver) orchestra.Driver {
	switch {
	case vd != nil && sb != nil:
		return driverVDSB{base, vd, sb}
	case vd != nil:
		return driverVD{base, vd}
	case sb != nil:
		return driverSB{base, sb}
	}
	return base
}

// Base is the driver Optional was given.
func Base(d orchestra.Driver) orchestra.Driver {
	switch d := d.(type) {
	case driverVDSB:
		return d.Driver
	case driverVD:
		return d.Driver
	case driverSB:
		return d.Driver
	}
	return d
}

type driverVD struct {
	orchestra.Driver
	orchestra.VolumeDataAccessor
}

type driverSB struct {
	orchestra.Driver
	orchestra.SandboxDriver
}

type driverVDSB struct {
	orchestra.Driver
	orchestra.VolumeDataAccessor
	orchestra.SandboxDriver
}

var (
	_ orchestra.VolumeDataAccessor = driverVD{}
	_ orchestra.SandboxDriver      = driverSB{}
	_ orchestra.VolumeDataAccessor = driverVDSB{}
	_ orchestra.SandboxDriver      = driverVDSB{}
)
