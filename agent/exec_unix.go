//go:build unix

package agent

import (
	"os/exec"
	"syscall"
)

// setProcessGroup makes the command the leader of its own process group and
// kills the whole group on cancellation, so a timeout also ends what the
// command started.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
