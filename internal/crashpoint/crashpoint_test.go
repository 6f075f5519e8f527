//go:build unix

package crashpoint_test

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/agentgitops/reconciler/internal/crashpoint"
)

// Without RECONCILER_CRASH_AT (and in builds without the tag) Hit returns.
func TestHitUnarmed(t *testing.T) {
	t.Setenv(crashpoint.EnvVar, "")
	for range 3 {
		crashpoint.Hit("push")
	}
}

// helperEnv makes the test binary act as the process under test.
const helperEnv = "CRASHPOINT_TEST_HELPER"

// TestHelperProcess is the process TestHitKills kills: it hits "other"
// three times and "push" twice, then exits 0.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("run by TestHitKills")
	}
	for range 3 {
		crashpoint.Hit("other")
	}
	crashpoint.Hit("push")
	crashpoint.Hit("push")
	os.Exit(0)
}

// The Nth call of the armed name kills the process with SIGKILL; calls of
// other names do not count; an N past the last call changes nothing.
func TestHitKills(t *testing.T) {
	if !crashpoint.Enabled {
		t.Skip("built without -tags crashpoint")
	}
	for _, tc := range []struct {
		at     string
		killed bool
	}{
		{"push:1", true},
		{"push:2", true},
		{"push:3", false},
		{"nothing:1", false},
		{"push:0", false},
		{"push", false},
	} {
		t.Run(tc.at, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
			cmd.Env = append(os.Environ(), helperEnv+"=1", crashpoint.EnvVar+"="+tc.at)
			err := cmd.Run()
			var ee *exec.ExitError
			killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
			if killed != tc.killed || (!killed && err != nil) {
				t.Errorf("%s=%s: err = %v, killed = %v; want killed = %v", crashpoint.EnvVar, tc.at, err, killed, tc.killed)
			}
		})
	}
}
