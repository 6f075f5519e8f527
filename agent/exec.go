package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentgitops/reconciler/hclspec"
)

// ExecPath is the PATH exec agents run with.
const ExecPath = "/usr/local/bin:/usr/bin:/bin"

// Exec runs an exec provider's command in the workspace: a deterministic
// agent. The command gets the agent's prompt on stdin and a scrubbed
// environment (PATH, HOME and TMPDIR in a private directory, LC_ALL=C,
// TZ=UTC and RECONCILER_* variables naming the run; nothing of the
// reconciler's own environment, so no secrets). Its first line of stdout is
// the proposal's summary and the rest its body. It is killed, with its
// process group, at the timeout.
type Exec struct{}

var _ Runner = Exec{}

// ErrTimeout is wrapped when a run exceeds its time limit.
var ErrTimeout = errors.New("run timed out")

// ErrOutputLimit is wrapped when a command writes more than the provider's
// max_output_bytes.
var ErrOutputLimit = errors.New("output limit exceeded")

// Run runs t.Agent's command in t.Dir.
func (Exec) Run(ctx context.Context, t Task) (Result, error) {
	a := t.Agent
	if a.Provider == nil || a.Provider.Kind != hclspec.ProviderExec {
		return Result{}, fmt.Errorf("run %s: agent does not use an exec provider", a.Name)
	}
	if len(a.Command) == 0 {
		return Result{}, fmt.Errorf("run %s: no command", a.Name)
	}
	timeout := a.Limits.Timeout
	if p := a.Provider.Timeout; p > 0 && (timeout == 0 || p < timeout) {
		timeout = p
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	private, err := os.MkdirTemp("", "reconciler-home-")
	if err != nil {
		return Result{}, fmt.Errorf("run %s: %w", a.Name, err)
	}
	defer os.RemoveAll(private)

	name := a.Command[0]
	if !strings.Contains(name, "/") {
		if name, err = lookPath(name); err != nil {
			return Result{}, fmt.Errorf("run %s: command %q: %w", a.Name, a.Command[0], err)
		}
	}
	cmd := exec.CommandContext(ctx, name, a.Command[1:]...)
	cmd.Dir = t.Dir
	cmd.Env = []string{
		"PATH=" + ExecPath,
		"HOME=" + private,
		"TMPDIR=" + private,
		"LC_ALL=C",
		"TZ=UTC",
		"RECONCILER_AGENT=" + a.Name,
		"RECONCILER_RUN_ID=" + t.RunID,
		"RECONCILER_SPEC_COMMIT=" + t.SpecCommit,
		"RECONCILER_TRIGGER=" + t.Trigger,
	}
	cmd.Stdin = strings.NewReader(a.Prompt)
	limit := a.Provider.MaxOutputBytes
	stdout := &capped{max: limit}
	stderr := &capped{max: 64 << 10, truncate: true}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	setProcessGroup(cmd)
	cmd.WaitDelay = 2 * time.Second
	err = cmd.Run()
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return Result{}, fmt.Errorf("run %s: %w after %s", a.Name, ErrTimeout, timeout)
	case stdout.exceeded:
		return Result{}, fmt.Errorf("run %s: %w: stdout is over %d bytes", a.Name, ErrOutputLimit, limit)
	case err != nil:
		msg := strings.TrimSpace(stderr.buf.String())
		if i := strings.LastIndexByte(msg, '\n'); len(msg) > 500 && i >= 0 {
			msg = msg[i+1:]
		}
		if msg != "" {
			return Result{}, fmt.Errorf("run %s: %w: %s", a.Name, err, msg)
		}
		return Result{}, fmt.Errorf("run %s: %w", a.Name, err)
	}
	summary, body := splitMessage(a.Name, stdout.buf.String())
	return Result{Summary: summary, Body: body}, nil
}

// lookPath finds a command in ExecPath, not in the reconciler's PATH.
func lookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList(ExecPath) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in %s", ExecPath)
}

// capped is a writer that keeps at most max bytes.
type capped struct {
	buf      bytes.Buffer
	max      int64
	truncate bool
	exceeded bool
}

func (c *capped) Write(p []byte) (int, error) {
	room := c.max - int64(c.buf.Len())
	if int64(len(p)) > room {
		c.exceeded = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		if c.truncate {
			return len(p), nil
		}
		return 0, ErrOutputLimit
	}
	return c.buf.Write(p)
}
