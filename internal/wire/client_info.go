package wire

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// knownCapabilities are the capabilities a plugin may list.
var knownCapabilities = []string{CapabilityBulk, CapabilityRun, CapabilityDetach, CapabilityEphemeral, CapabilityConfig,
	// Listed by 1.3 plugins, and implied by every 1.4 one.
	"stdin_stream", "follow_logs", "get_container"}

// CheckInfo checks a plugin's Info before the host uses it, and returns the
// protocol minor it speaks. It refuses, in one line that says why: a
// protocol version that is not "1.N", one this host does not serve (before
// 1.3, or newer than its own), an unknown or repeated capability, and a
// plugin without a bulk socket serving Run.
func CheckInfo(info Info) (minor int, err error) {
	minor, err = parseVersion(info.ProtocolVersion)
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	for _, c := range info.Capabilities {
		switch {
		case seen[c]:
			return 0, fmt.Errorf("Info lists the capability %q twice", c)
		case !slices.Contains(knownCapabilities, c):
			return 0, fmt.Errorf("Info lists the capability %q, which protocol %s does not define", c, ProtocolVersion)
		}
		seen[c] = true
	}
	for _, c := range []string{CapabilityBulk, CapabilityRun} {
		if !seen[c] {
			return 0, fmt.Errorf("Info lacks the capability %q that protocol 1.%d requires", c, minor)
		}
	}
	if minor > legacyMinor && !seen[CapabilityConfig] {
		return 0, fmt.Errorf("Info lacks the capability %q that protocol 1.%d requires", CapabilityConfig, minor)
	}
	if info.BulkAddr == "" {
		return 0, errors.New("Info has no bulk socket address")
	}
	return minor, nil
}

// parseVersion reads "1.N" and checks that this host serves it.
func parseVersion(v string) (int, error) {
	major, minorText, ok := strings.Cut(v, ".")
	minor, err := strconv.Atoi(minorText)
	if !ok || major != strconv.Itoa(ProtocolMajor) || err != nil || minor < 0 || strconv.Itoa(minor) != minorText {
		return 0, fmt.Errorf("Info reports protocol version %q, which is not %d.N", v, ProtocolMajor)
	}
	switch {
	case minor < legacyMinor:
		return 0, fmt.Errorf("protocol %s is no longer served (this host serves 1.%d to %s); rebuild the plugin with SDK %s or later",
			v, legacyMinor, ProtocolVersion, SDKVersion)
	case minor > ProtocolMinor:
		return 0, fmt.Errorf("protocol %s is newer than this host's %s; update orchestra", v, ProtocolVersion)
	}
	return minor, nil
}
