package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/sandbox"
)

// TestMain lets the test binary be the exec runner's sandbox helper.
func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(m.Run())
}

func execAgent(script string, timeout time.Duration, maxOut int64) *hclspec.Agent {
	return &hclspec.Agent{
		Name:     "t",
		Provider: &hclspec.Provider{Kind: hclspec.ProviderExec, Name: "local", Timeout: timeout, MaxOutputBytes: maxOut},
		Command:  []string{"sh", "-c", script},
		Prompt:   "do the thing",
		Scope:    []string{"deploy/**"},
		Limits:   hclspec.Limits{Timeout: time.Minute},
	}
}

func TestExec(t *testing.T) {
	t.Setenv("RECONCILER_SECRET_TOKEN", "hunter2")
	tests := []struct {
		name    string
		script  string
		timeout time.Duration
		maxOut  int64
		summary string
		body    string
		err     error
		errText string
	}{
		{name: "summary and body", script: "printf 'Bump x\\n\\nbecause y\\n'", summary: "Bump x", body: "because y"},
		{name: "no output", script: "true", summary: "t: automated change"},
		{name: "prompt on stdin", script: "read line; echo \"got: $line\"", summary: "got: do the thing"},
		{name: "scrubbed environment", script: "env | sort | grep -v '^PWD=\\|^SHLVL=\\|^_=' | cut -d= -f1 | tr '\\n' ' '",
			summary: "HOME LANG LC_ALL PATH RECONCILER_AGENT RECONCILER_RUN_ID RECONCILER_SPEC_COMMIT RECONCILER_TRIGGER TMPDIR TZ"},
		{name: "home outside the workspace", script: "case \"$HOME\" in \"$PWD\"*) echo inside;; *) echo outside;; esac", summary: "outside"},
		{name: "failure", script: "echo oops >&2; exit 3", errText: "exit status 3: oops"},
		{name: "timeout kills the process group", script: "sleep 30 & sleep 30", timeout: 300 * time.Millisecond, err: agent.ErrTimeout},
		{name: "output cap", script: "yes | head -c 100000", maxOut: 1000, err: agent.ErrOutputLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout, maxOut := tt.timeout, tt.maxOut
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			if maxOut == 0 {
				maxOut = 1 << 16
			}
			dir := t.TempDir()
			start := time.Now()
			res, err := agent.Exec{}.Run(context.Background(), agent.Task{Agent: execAgent(tt.script, timeout, maxOut), RunID: "r1", Dir: dir})
			if time.Since(start) > 10*time.Second {
				t.Errorf("run took %s: the process group was not killed", time.Since(start))
			}
			switch {
			case tt.err != nil || tt.errText != "":
				if err == nil || (tt.err != nil && !errors.Is(err, tt.err)) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want %v %q", err, tt.err, tt.errText)
				}
			case err != nil:
				t.Fatal(err)
			default:
				if strings.TrimSpace(res.Summary) != tt.summary || res.Body != tt.body {
					t.Errorf("result = %q / %q, want %q / %q", res.Summary, res.Body, tt.summary, tt.body)
				}
				if strings.Contains(res.Summary, "hunter2") {
					t.Error("secret leaked into the agent's environment")
				}
			}
		})
	}
}

func TestConfine(t *testing.T) {
	a := &hclspec.Agent{Name: "t", Scope: []string{"deploy/**", "config/*.env"}}
	ok := []gitstore.FileChange{{Path: "deploy/prod/a.yaml"}, {Path: "config/x.env"}}
	if err := agent.Confine(a, ok); err != nil {
		t.Errorf("in-scope change refused: %v", err)
	}
	for _, p := range []string{"config/sub/x.env", "policies/p.hcl", "README.md", "deploy/.git/config"} {
		err := agent.Confine(a, append(ok, gitstore.FileChange{Path: p}))
		var se *agent.ScopeError
		if !errors.As(err, &se) || len(se.Paths) != 1 || se.Paths[0] != p {
			t.Errorf("%s: err = %v", p, err)
		}
	}
}

func TestExecWritesFiles(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "deploy"), 0o755)
	_, err := agent.Exec{}.Run(context.Background(), agent.Task{Agent: execAgent("echo hi > deploy/x; echo Wrote x", 10*time.Second, 4096), Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "deploy/x")); string(b) != "hi\n" {
		t.Errorf("file = %q", b)
	}
}

// TestExecSandbox checks what the exec runner adds to the sandbox (whose
// own tests are in package sandbox): the mechanisms it reports, the
// network an agent declares, and redacted stderr.
func TestExecSandbox(t *testing.T) {
	sup := sandbox.Probe()
	if len(sup.Mechanisms) < 7 {
		t.Skipf("this kernel lacks sandbox mechanisms: %v", sup.Reasons)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("reached the host\n"))
			c.Close()
		}
	}()
	dial := fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d && head -1 <&3", ln.Addr().(*net.TCPAddr).Port)

	a := execAgent("true", 10*time.Second, 4096)
	res, err := agent.Exec{}.Run(context.Background(), agent.Task{Agent: a, Dir: t.TempDir()})
	if err != nil || strings.Join(res.Sandbox, " ") != strings.Join(sup.Mechanisms, " ") {
		t.Errorf("mechanisms %v, err %v; want %v", res.Sandbox, err, sup.Mechanisms)
	}

	a = execAgent("", 10*time.Second, 4096)
	a.Command = []string{"bash", "-c", dial}
	res, err = agent.Exec{}.Run(context.Background(), agent.Task{Agent: a, Dir: t.TempDir()})
	if err == nil || res.Summary != "" || len(res.Sandbox) == 0 {
		t.Errorf("without network = true: %q, %v", res.Summary, err)
	}
	a.Network = true
	res, err = agent.Exec{}.Run(context.Background(), agent.Task{Agent: a, Dir: t.TempDir()})
	if err != nil || res.Summary != "reached the host" || slicesContain(res.Sandbox, sandbox.NetNS) {
		t.Errorf("with network = true: %q, %v, %v", res.Summary, err, res.Sandbox)
	}

	token := "ghp_" + strings.Repeat("a1B2", 9)
	a = execAgent("echo \"token "+token+" rejected\" >&2; exit 1", 10*time.Second, 4096)
	res, err = agent.Exec{}.Run(context.Background(), agent.Task{Agent: a, Dir: t.TempDir()})
	if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "[REDACTED]") || len(res.Sandbox) == 0 {
		t.Errorf("err = %v, mechanisms %v", err, res.Sandbox)
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
