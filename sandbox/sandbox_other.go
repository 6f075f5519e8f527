//go:build !linux

package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"time"
)

// SystemPaths are the host paths every command may read; on this system
// nothing confines the command to them.
var SystemPaths []string

// Init returns at once: the sandbox's helper runs on Linux only.
func Init() {}

// HelperName is the helper program's file name (Linux only).
const HelperName = "reconciler-sandbox"

// UseHelper fails for any path: the helper runs on Linux only.
func UseHelper(path string) error {
	if path == "" {
		return nil
	}
	return errors.New("sandbox: the helper runs on Linux only")
}

// Probe reports that this system offers none of the mechanisms.
func Probe() Support {
	r := map[string]string{}
	for _, m := range append(wanted(false, 0), NetNS) {
		r[m] = "not Linux"
	}
	return Support{Reasons: r}
}

// Run fails in Strict mode; in Permissive mode it runs cmd unconfined,
// with private HOME and TMPDIR.
func (c Config) Run(ctx context.Context, cmd Command) ([]string, error) {
	if cmd.Path == "" || len(cmd.Args) == 0 {
		return nil, errors.New("sandbox: no command")
	}
	if _, err := plan(c.Mode, Probe(), cmd.Network); err != nil {
		return nil, err
	}
	priv, err := os.MkdirTemp("", "reconciler-home-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(priv)
	h := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	h.Args = cmd.Args
	h.Dir = cmd.Dir
	for _, kv := range cmd.Env {
		if !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "TMPDIR=") {
			h.Env = append(h.Env, kv)
		}
	}
	h.Env = append(h.Env, "HOME="+priv, "TMPDIR="+priv)
	h.Stdin, h.Stdout, h.Stderr = cmd.Stdin, cmd.Stdout, cmd.Stderr
	h.WaitDelay = 2 * time.Second
	err = h.Run()
	if ctx.Err() != nil {
		return []string{}, ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return []string{}, &ExitError{Code: ee.ExitCode()}
	}
	return []string{}, err
}
