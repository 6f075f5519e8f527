package reconcile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/sandbox"
	"github.com/agentgitops/reconciler/signing"
)

// recorder is a runner that keeps what each agent's run reported.
type recorder struct {
	agent.Runner
	mu      sync.Mutex
	results map[string]agent.Result
}

func (r *recorder) Run(ctx context.Context, t agent.Task) (agent.Result, error) {
	res, err := r.Runner.Run(ctx, t)
	r.mu.Lock()
	r.results[t.Agent.Name] = res
	r.mu.Unlock()
	return res, err
}

// escape is one agent of the escape catalogue of issue 10: what it tries,
// and how its run must end, with nothing escaped.
type escape struct {
	name   string
	script string
	// network declares network = true.
	network bool
	// failed is part of the run.failed error the run must end with; ""
	// means the run finishes (its effect contained) and proposes what it
	// saw in out/<name>.txt.
	failed string
}

// TestSandboxEscapes runs the escape catalogue of issue 10 as exec agents of
// one pass, over a local path and smart HTTP, beside the example's own
// agents: each attempt ends with the run failed or its effect contained,
// and nothing of the reconciler's (environment, key, cache, origin,
// process, network, files) reaches an agent or outlives its run.
func TestSandboxEscapes(t *testing.T) {
	sup := sandbox.Probe()
	if len(sup.Mechanisms) < 7 {
		t.Skipf("this kernel lacks sandbox mechanisms: %v", sup.Reasons)
	}
	for _, http := range []bool{false, true} {
		t.Run(map[bool]string{false: "local path", true: "smart HTTP"}[http], func(t *testing.T) {
			testSandboxEscapes(t, http, sup)
		})
	}
	// The same with the sandbox built by reconciler-sandbox, as make build
	// and the image install it, rather than by this program itself.
	t.Run("local path, reconciler-sandbox helper", func(t *testing.T) {
		helper := filepath.Join(t.TempDir(), sandbox.HelperName)
		if out, err := exec.Command("go", "build", "-o", helper, "../cmd/reconciler-sandbox").CombinedOutput(); err != nil {
			t.Fatalf("build the helper: %v\n%s", err, out)
		}
		if err := sandbox.UseHelper(helper); err != nil {
			t.Fatal(err)
		}
		defer sandbox.UseHelper("")
		if got := sandbox.Probe().Helper; got != helper {
			t.Fatalf("the helper in use is %q, want %q", got, helper)
		}
		testSandboxEscapes(t, false, sandbox.Probe())
	})
}

func testSandboxEscapes(t *testing.T, http bool, sup sandbox.Support) {
	const secret = "hunter2-reconciler-environment-secret"
	t.Setenv("RECONCILER_TEST_SECRET", secret)

	// The reconciler's own key, in a file agents know the path of.
	keyPath := filepath.Join(t.TempDir(), "reconciler.key")
	signer, err := signing.GenerateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, http, func(dir string) {
		os.WriteFile(filepath.Join(dir, ".reconciler/keys/sandbox.pub"), signer.PublicKeyPEM(), 0o644)
	})
	cacheDir := t.TempDir()
	outside := t.TempDir()

	var accepted atomic.Int32
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Write([]byte("listener reached\n"))
			c.Close()
		}
	}()
	dial := fmt.Sprintf(`bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d && head -1 <&3'`, ln.Addr().(*net.TCPAddr).Port)

	escapes := []escape{
		{name: "proc-reader", script: fmt.Sprintf(`set +e; mkdir -p out
{ echo "parent $PPID"; cat /proc/$PPID/environ; cat /proc/$PPID/cmdline; echo; cat /proc/%[1]d/environ; cat /proc/%[1]d/cmdline; env; } 2>&1 | tr '\000' ' ' > out/proc-reader.txt
echo "Read the parent's /proc"`, os.Getpid())},
		{name: "key-reader", script: "cat " + keyPath, failed: "No such file or directory"},
		{name: "cache-reader", script: "ls " + cacheDir, failed: "No such file or directory"},
		{name: "outside-writer", script: "echo escaped > " + filepath.Join(outside, "escaped"), failed: "Directory nonexistent"},
		{name: "origin-git", script: "git ls-remote " + e.url, failed: map[bool]string{false: "does not appear to be a git repository", true: "Couldn't connect to server"}[http]},
		{name: "origin-push", script: "git clone -q " + e.url + " clone", failed: map[bool]string{false: "does not exist", true: "Couldn't connect to server"}[http]},
		{name: "sleeper", script: "setsid sleep 31357 & setsid sh -c 'sleep 31357' & echo started"},
		{name: "forker", script: "i=0; while [ $i -lt 1000 ]; do sleep 31358 & i=$((i+1)); done; echo forked", failed: "Cannot fork"},
		{name: "filler", script: "mkdir -p out; head -c 1073741824 /dev/zero > out/big", failed: "128+SIGXFSZ: a process wrote past the file size limit of 128 MiB"},
		{name: "dialer", script: dial, failed: "Permission denied"},
		{name: "networked", network: true, script: "mkdir -p out; " + dial + " > out/networked.txt; echo Reached the listener"},
	}
	e.commitAs("Mallory", "mallory@example.com", "Add escape attempts", func(work string) {
		for _, x := range escapes {
			writeAgent(work, x.name, `"out/**"`, x.script)
			if x.network {
				p := filepath.Join(work, "agents", x.name+".hcl")
				b, _ := os.ReadFile(p)
				os.WriteFile(p, bytes.Replace(b, []byte("  trigger {"), []byte("  network  = true\n  trigger {"), 1), 0o644)
			}
		}
	})

	rec := &recorder{results: map[string]agent.Result{}, Runner: agent.Exec{Sandbox: sandbox.Config{
		Hide: []string{keyPath, cacheDir, e.bare},
	}}}
	r := e.reconcilerConfig(signer, func(c *reconcile.Config) {
		c.CacheDir = cacheDir
		c.Runners = map[string]agent.Runner{hclspec.ProviderExec: rec}
	})
	start := time.Now()
	err = r.Reconcile(context.Background())
	t.Logf("pass of %d agents: %s", len(escapes)+2, time.Since(start))
	if err == nil {
		t.Error("a pass whose runs failed did not fail")
	}
	es := e.entries()

	for _, x := range escapes {
		t.Run(x.name, func(t *testing.T) {
			res := rec.results[x.name]
			want := sup.Mechanisms
			if x.network {
				want = nil
				for _, m := range sup.Mechanisms {
					if m != sandbox.NetNS {
						want = append(want, m)
					}
				}
			}
			if strings.Join(res.Sandbox, " ") != strings.Join(want, " ") {
				t.Errorf("mechanisms in force = %v, want %v", res.Sandbox, want)
			}
			if x.failed != "" {
				f, ok := find(es, ledger.RunFailed, x.name)
				if !ok || !strings.Contains(f.Error, x.failed) {
					t.Fatalf("run.failed = %q (found %v), want one with %q; events %q", f.Error, ok, x.failed, e.events())
				}
				t.Logf("failed: %s", f.Error)
				checkRecordedSandbox(t, f, want)
				return
			}
			f, ok := find(es, ledger.RunFinished, x.name)
			if !ok {
				t.Fatalf("no run.finished; events %q", e.events())
			}
			checkRecordedSandbox(t, f, want)
		})
	}

	t.Run("what proc-reader saw", func(t *testing.T) {
		seen := proposed(t, e, "proc-reader", "out/proc-reader.txt")
		t.Logf("%s", seen)
		for _, leak := range []string{secret, os.Args[0], "GIT_CONFIG"} {
			if strings.Contains(seen, leak) {
				t.Errorf("the agent saw %q of the reconciler's: %s", leak, seen)
			}
		}
		if !strings.Contains(seen, "Permission denied") || !strings.Contains(seen, "No such file") {
			t.Errorf("reading the parent's and the reconciler's /proc: %s", seen)
		}
	})
	t.Run("what networked got", func(t *testing.T) {
		if seen := proposed(t, e, "networked", "out/networked.txt"); strings.TrimSpace(seen) != "listener reached" {
			t.Errorf("an agent with network = true read %q", seen)
		}
		if n := accepted.Load(); n != 1 {
			t.Errorf("the listener accepted %d connections, want only networked's", n)
		}
	})
	t.Run("the example's agents still work", func(t *testing.T) {
		for _, name := range []string{"image-pinner", "env-normaliser"} {
			f, ok := find(es, ledger.RunFinished, name)
			if !ok || f.Outcome != ledger.OutcomeChanged {
				t.Errorf("%s: run.finished %v %q; events %q", name, ok, f.Outcome, e.events())
			}
			if res := rec.results[name]; strings.Join(res.Sandbox, " ") != strings.Join(sup.Mechanisms, " ") {
				t.Errorf("%s ran with %v", name, res.Sandbox)
			}
		}
	})
	t.Run("nothing escaped", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(outside, "escaped")); err == nil {
			t.Error("a file was written outside the workspace")
		}
		noneLeft(t, "sleep\x0031357")
		noneLeft(t, "sleep\x0031358")
		for _, en := range es {
			b, _ := json.Marshal(en)
			for _, leak := range []string{secret, "PRIVATE KEY", strings.TrimSpace(string(keyPEM))[40:80]} {
				if bytes.Contains(b, []byte(leak)) {
					t.Errorf("entry %d (%s %s) holds %q", en.Seq, en.Type, en.Agent, leak)
				}
			}
		}
		for _, b := range e.branches() {
			if diff := e.git("", "--git-dir", e.bare, "log", "-p", "main.."+b); strings.Contains(diff, secret) || strings.Contains(diff, "PRIVATE KEY") {
				t.Errorf("proposal %s holds the reconciler's secrets", b)
			}
		}
	})
}

// checkRecordedSandbox checks the mechanisms the run's ledger entry names.
func checkRecordedSandbox(t *testing.T, en ledger.Entry, want []string) {
	t.Helper()
	if strings.Join(en.Sandbox, " ") != strings.Join(want, " ") {
		t.Errorf("%s records sandbox %v, want %v", en.Type, en.Sandbox, want)
	}
}

// proposed returns a file of the agent's proposal.
func proposed(t *testing.T, e *env, agentName, path string) string {
	t.Helper()
	for _, b := range e.branches() {
		if strings.HasPrefix(b, "agents/"+agentName+"/") {
			return e.git("", "--git-dir", e.bare, "show", b+":"+path)
		}
	}
	t.Fatalf("%s proposed nothing: %v", agentName, e.branches())
	return ""
}

// noneLeft fails when a process whose command line holds marker still runs.
func noneLeft(t *testing.T, marker string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		var left []string
		ps, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range ps {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(marker)) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes outlived their run: %v", len(left), left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
