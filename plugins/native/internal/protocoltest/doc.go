// Package protocoltest runs the conformance suite against native through
// the plugin protocol (sdktest: the SDK's gRPC server and the host's client
// inside this process, no binary built; the shim is this test binary, as it
// is the plugin binary in bin/), with native's leak probe. It is a package
// of its own so that native's own tests build without the wire.
package protocoltest
