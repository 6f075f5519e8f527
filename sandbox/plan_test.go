package sandbox

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	all := Support{Mechanisms: []string{UserNS, PIDNS, NetNS, IPCNS, MountNS, "landlock-abi-7", Rlimits}, LandlockABI: 7}
	noUserNS := Support{Mechanisms: []string{"landlock-abi-7", Rlimits}, LandlockABI: 7,
		Reasons: map[string]string{UserNS: "clone: operation not permitted", PIDNS: "clone: operation not permitted", NetNS: "x", IPCNS: "x", MountNS: "x"}}
	noLandlock := Support{Mechanisms: []string{UserNS, PIDNS, NetNS, IPCNS, MountNS, Rlimits}, Reasons: map[string]string{"landlock": "Landlock is not enabled: function not implemented"}}
	tests := []struct {
		name    string
		mode    Mode
		s       Support
		network bool
		want    string
		missing string
	}{
		{"everything", Strict, all, false, "userns pidns netns ipcns mountns landlock-abi-7 rlimits", ""},
		{"network: no network namespace", Strict, all, true, "userns pidns ipcns mountns landlock-abi-7 rlimits", ""},
		{"strict fails closed", Strict, noUserNS, false, "", "userns (clone: operation not permitted), pidns (clone: operation not permitted), netns (x), ipcns (x), mountns (x)"},
		{"strict without Landlock", Strict, noLandlock, false, "", "landlock (Landlock is not enabled: function not implemented)"},
		{"permissive runs with what there is", Permissive, noUserNS, false, "landlock-abi-7 rlimits", ""},
		{"permissive without Landlock", Permissive, noLandlock, true, "userns pidns ipcns mountns rlimits", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := plan(tt.mode, tt.s, tt.network)
			if tt.missing != "" {
				var ue *UnavailableError
				if !errors.As(err, &ue) || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tt.missing) || !strings.Contains(err.Error(), "--sandbox=permissive") {
					t.Fatalf("err = %v, want one naming %s", err, tt.missing)
				}
				return
			}
			if err != nil || strings.Join(got, " ") != tt.want {
				t.Errorf("plan = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestExitError(t *testing.T) {
	l := Limits{CPU: 2 * time.Second, FileSize: 128 << 20}
	for _, tt := range []struct {
		code int
		sig  syscall.Signal
		want string
	}{
		{3, 0, "exit status 3"},
		{0, syscall.SIGKILL, "killed by signal SIGKILL"},
		{0, syscall.SIGXCPU, "killed by signal SIGXCPU (a process used up its CPU time limit of 2s)"},
		{153, 0, "exit status 153 (128+SIGXFSZ: a process wrote past the file size limit of 128 MiB)"},
	} {
		if got := exitError(tt.code, tt.sig, l).Error(); got != tt.want {
			t.Errorf("%d/%v: %q, want %q", tt.code, tt.sig, got, tt.want)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": Strict, "strict": Strict, "permissive": Permissive} {
		if m, err := ParseMode(in); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %v, %v", in, m, err)
		}
	}
	if _, err := ParseMode("off"); err == nil || !strings.Contains(err.Error(), `use "strict" or "permissive"`) {
		t.Errorf("ParseMode(off): %v", err)
	}
}
