package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/sandbox"
)

// ExecPath is the PATH exec agents run with.
const ExecPath = "/usr/local/bin:/usr/bin:/bin"

// Exec runs an exec provider's command in the workspace: a deterministic
// agent. The command runs in the OS sandbox (package sandbox): new user,
// PID, IPC, mount and, unless the agent declares network = true, network
// namespaces; a filesystem holding only the workspace (read-write), a
// private /tmp with HOME in it, and the system's read-only directories;
// Landlock; rlimits; and every process it starts is killed when it ends.
// It gets the agent's prompt on stdin and an environment built from
// nothing: PATH, HOME and TMPDIR, LANG=C.UTF-8, LC_ALL=C, TZ=UTC and
// RECONCILER_* variables naming the run. Its first line of stdout is the
// proposal's summary and the rest its body. It is killed, with everything
// it started, at the timeout.
type Exec struct {
	// Sandbox confines the command. The zero value is sandbox.Strict: a
	// run fails when the kernel lacks a mechanism.
	Sandbox sandbox.Config
}

var _ Runner = Exec{}

// ErrTimeout is wrapped when a run exceeds its time limit.
var ErrTimeout = errors.New("run timed out")

// ErrOutputLimit is wrapped when a command writes more than the provider's
// max_output_bytes.
var ErrOutputLimit = errors.New("output limit exceeded")

// Run runs t.Agent's command in t.Dir. The Result's Sandbox lists the
// mechanisms in force, also when the command failed; a run refused for a
// missing mechanism wraps sandbox.ErrUnavailable.
func (e Exec) Run(ctx context.Context, t Task) (Result, error) {
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

	name := a.Command[0]
	if !strings.Contains(name, "/") {
		var err error
		if name, err = lookPath(name); err != nil {
			return Result{}, fmt.Errorf("run %s: command %q: %w", a.Name, a.Command[0], err)
		}
	}
	limit := a.Provider.MaxOutputBytes
	stdout := &capped{max: limit}
	stderr := &capped{max: 64 << 10, truncate: true}
	mechs, err := e.Sandbox.Run(ctx, sandbox.Command{
		Path: name, Args: a.Command, Dir: t.Dir,
		Env: append([]string{
			"PATH=" + ExecPath,
			"LANG=C.UTF-8",
			"LC_ALL=C",
			"TZ=UTC",
			"RECONCILER_AGENT=" + a.Name,
			"RECONCILER_RUN_ID=" + t.RunID,
			"RECONCILER_SPEC_COMMIT=" + t.SpecCommit,
			"RECONCILER_TRIGGER=" + t.Trigger,
		}, append(triggerEnv(t.Input), declaredEnv(a)...)...),
		Network: a.Network,
		Limits:  sandbox.Limits{CPU: timeout},
		Stdin:   strings.NewReader(a.Prompt),
		Stdout:  stdout,
		Stderr:  stderr,
	})
	res := Result{Sandbox: mechs}
	// What the command printed is recorded: without credentials it may
	// have found, or the host's paths.
	clean := func(s string) string { return ScrubPaths(Redact(s), t.Dir) }
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return res, fmt.Errorf("run %s: %w after %s", a.Name, ErrTimeout, timeout)
	case stdout.exceeded:
		return res, fmt.Errorf("run %s: %w: stdout is over %d bytes", a.Name, ErrOutputLimit, limit)
	case err != nil:
		var exit *sandbox.ExitError
		if !errors.As(err, &exit) {
			return res, fmt.Errorf("run %s: %w", a.Name, err)
		}
		msg := strings.TrimSpace(stderr.buf.String())
		if i := strings.LastIndexByte(msg, '\n'); len(msg) > 500 && i >= 0 {
			msg = msg[i+1:]
		}
		if len(msg) > 500 {
			msg = msg[:500]
		}
		if msg = clean(msg); msg != "" {
			return res, fmt.Errorf("run %s: %w: %s", a.Name, err, msg)
		}
		return res, fmt.Errorf("run %s: %w", a.Name, err)
	}
	summary, body := splitMessage(a.Name, clean(stdout.buf.String()))
	res.Summary, res.Body = summary, body
	return res, nil
}

// MaxEnvInput bounds the trigger input an exec command gets in its
// environment: the kernel refuses an exec with a longer variable
// (MAX_ARG_STRLEN, 128 KiB).
const MaxEnvInput = 96 << 10

// inputForEnv is the trigger input as the environment carries it: a larger
// one is replaced by a JSON note saying so (the whole input is on the run's
// run.started entry).
func inputForEnv(in []byte) []byte {
	if len(in) <= MaxEnvInput {
		return in
	}
	return fmt.Appendf(nil, `{"truncated":true,"bytes":%d,"note":"the trigger input is over %d bytes; the whole of it is on the run's run.started ledger entry"}`, len(in), MaxEnvInput)
}

// triggerEnv is RECONCILER_TRIGGER_INPUT for a run whose trigger carries
// input (an alert, a manual request).
func triggerEnv(in []byte) []string {
	if len(in) == 0 {
		return nil
	}
	return []string{"RECONCILER_TRIGGER_INPUT=" + string(inputForEnv(in))}
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

// declaredEnv is the agent's env = { ... } as NAME=value, sorted.
func declaredEnv(a *hclspec.Agent) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(a.Env)) {
		out = append(out, k+"="+a.Env[k])
	}
	return out
}
