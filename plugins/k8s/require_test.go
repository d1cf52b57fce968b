package k8s

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNoClusterFailsWhenRequired: with ORCHESTRA_REQUIRE_K8S=1 and no
// cluster, a cluster test fails instead of skipping (this test binary run
// again, with a kubeconfig that names nothing).
func TestNoClusterFailsWhenRequired(t *testing.T) {
	if os.Getenv("K8S_REQUIRE_CHILD") == "1" {
		t.Skip("child run")
	}
	tests := []struct {
		name    string
		require string
		wantErr bool
		want    string
	}{
		{"required", "1", true, "--- FAIL: TestOutputStreamsAndExitCode"},
		{"not required", "", false, "--- SKIP: TestOutputStreamsAndExitCode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run", "^TestOutputStreamsAndExitCode$", "-test.v")
			cmd.Env = append(os.Environ(), "K8S_REQUIRE_CHILD=1", "KUBECONFIG=/nonexistent/kubeconfig",
				"ORCHESTRA_REQUIRE_K8S="+tc.require)
			out, err := cmd.CombinedOutput()
			if (err != nil) != tc.wantErr || !strings.Contains(string(out), tc.want) {
				t.Fatalf("exit error %v, output:\n%s\nwant error %v and %q", err, out, tc.wantErr, tc.want)
			}
		})
	}
}
