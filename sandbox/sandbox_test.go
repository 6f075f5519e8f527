//go:build linux

package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/sandbox"
)

// requireAll skips the test unless this kernel offers every mechanism (the
// development and CI machines do; see shared/recipes/sandbox.md).
func requireAll(t testing.TB) sandbox.Support {
	t.Helper()
	s := sandbox.Probe()
	for _, m := range []string{sandbox.UserNS, sandbox.PIDNS, sandbox.NetNS, sandbox.IPCNS, sandbox.MountNS, sandbox.Rlimits} {
		if !s.Has(m) {
			t.Skipf("this kernel lacks %s: %s", m, s.Reasons[m])
		}
	}
	if s.LandlockABI == 0 {
		t.Skipf("this kernel lacks Landlock: %s", s.Reasons["landlock"])
	}
	return s
}

// result is what a sandboxed script did.
type result struct {
	mechs          []string
	err            error
	stdout, stderr string
	took           time.Duration
}

func run(t testing.TB, cfg sandbox.Config, cmd sandbox.Command, script string) result {
	t.Helper()
	if cmd.Dir == "" {
		cmd.Dir = t.TempDir()
	}
	if cmd.Path == "" {
		cmd.Path, cmd.Args = "/bin/sh", []string{"sh", "-c", script}
	}
	if cmd.Env == nil {
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	mechs, err := cfg.Run(ctx, cmd)
	return result{mechs: mechs, err: err, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
}

// processesWith lists host processes whose command line contains marker.
func processesWith(marker string) []string {
	var out []string
	ps, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range ps {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(marker)) {
			out = append(out, filepath.Base(filepath.Dir(p))+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// noneLeft fails when a process with marker is still running on the host.
func noneLeft(t *testing.T, marker string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		left := processesWith(marker)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes outlived the run: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProbe(t *testing.T) {
	s := requireAll(t)
	want := []string{"userns", "pidns", "netns", "ipcns", "mountns", sandbox.LandlockName(s.LandlockABI), "rlimits"}
	if strings.Join(s.Mechanisms, " ") != strings.Join(want, " ") {
		t.Errorf("mechanisms = %v, want %v", s.Mechanisms, want)
	}
}

func TestMechanismsInForce(t *testing.T) {
	s := requireAll(t)
	r := run(t, sandbox.Config{}, sandbox.Command{}, "true")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if strings.Join(r.mechs, " ") != strings.Join(s.Mechanisms, " ") {
		t.Errorf("in force: %v, want %v", r.mechs, s.Mechanisms)
	}
	r = run(t, sandbox.Config{}, sandbox.Command{Network: true}, "true")
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, m := range r.mechs {
		if m == sandbox.NetNS {
			t.Errorf("a command with the host's network has a network namespace: %v", r.mechs)
		}
	}
}

func TestEnvironmentFromNothing(t *testing.T) {
	requireAll(t)
	t.Setenv("RECONCILER_TEST_SECRET", "hunter2-secret-value")
	r := run(t, sandbox.Config{}, sandbox.Command{Env: []string{"PATH=/usr/bin:/bin", "A=b", "HOME=/root"}},
		`env | grep -v '^PWD=\|^SHLVL=\|^_=' | sort | tr '\n' ' '; echo; cat /proc/1/environ 2>&1 | tr '\0' ' '; cat /proc/1/cmdline | tr '\0' ' '`)
	if r.err != nil {
		t.Fatalf("%v: %s", r.err, r.stderr)
	}
	lines := strings.Split(r.stdout, "\n")
	if want := "A=b HOME=/tmp/home PATH=/usr/bin:/bin TMPDIR=/tmp "; lines[0] != want {
		t.Errorf("environment = %q, want %q", lines[0], want)
	}
	if strings.Contains(r.stdout, "hunter2") {
		t.Errorf("the reconciler's environment reached the command: %s", r.stdout)
	}
}

func TestFilesystem(t *testing.T) {
	requireAll(t)
	secretDir := t.TempDir()
	key := filepath.Join(secretDir, "ledger.key")
	os.WriteFile(key, []byte("PRIVATE-KEY-MATERIAL"), 0o600)
	outside := t.TempDir()
	// A key inside a directory the command may read is covered up.
	shared := t.TempDir()
	os.WriteFile(filepath.Join(shared, "tool"), []byte("TOOL"), 0o644)
	os.WriteFile(filepath.Join(shared, "key"), []byte("SHARED-KEY-MATERIAL"), 0o644)
	os.Mkdir(filepath.Join(shared, "cache"), 0o755)
	os.WriteFile(filepath.Join(shared, "cache", "state"), []byte("CACHE-STATE"), 0o644)
	cfg := sandbox.Config{Hide: []string{key, filepath.Join(shared, "key"), filepath.Join(shared, "cache")}, ReadOnly: []string{shared}}

	ws := t.TempDir()
	os.WriteFile(filepath.Join(ws, "in.txt"), []byte("hello"), 0o644)
	tests := []struct {
		name, script string
		ok           bool
		out          string
	}{
		{"read the workspace", "cat in.txt", true, "hello"},
		{"write the workspace", "echo new > out.txt && mkdir -p d/e && mv out.txt d/e/ && cat d/e/out.txt", true, "new"},
		{"write HOME and TMPDIR", `echo h > "$HOME/x" && echo t > "$TMPDIR/y" && cat "$HOME/x" "$TMPDIR/y" | tr -d '\n'`, true, "ht"},
		{"run system programs", "printf 'b\\na\\n' | sort | sed s/a/A/ | awk '{printf $0}'", true, "Ab"},
		{"read an exposed path", "cat " + shared + "/tool", true, "TOOL"},
		{"read the key by path", "cat " + key, false, ""},
		{"list the key's directory", "ls " + secretDir, false, ""},
		{"read a hidden file inside an exposed directory", "cat " + shared + "/key", false, ""},
		{"read a hidden directory inside an exposed directory", "cat " + shared + "/cache/state", false, ""},
		{"write outside the workspace", "echo x > " + outside + "/escaped", false, ""},
		// /tmp is the command's own.
		{"write the host's /tmp", "echo x > /tmp/escaped-" + filepath.Base(outside), true, ""},
		{"write /etc", "echo x >> /etc/passwd", false, ""},
		{"write /usr", "touch /usr/escaped", false, ""},
		{"read /etc/shadow", "cat /etc/shadow", false, ""},
		{"read the host's ssh keys", "cat /etc/ssh/ssh_host_*_key", false, ""},
		{"read the reconciler's process", fmt.Sprintf("cat /proc/%d/environ", os.Getpid()), false, ""},
		{"read the sandbox's init", "cat /proc/1/environ", false, ""},
		{"read the root's home", "ls /root", false, ""},
		{"mount", "mount -t tmpfs none " + ws, false, ""},
		{"no capabilities", "grep -E '^Cap(Prm|Eff|Bnd|Amb)' /proc/self/status | awk '{printf $2 \" \"}'", true, "0000000000000000 0000000000000000 0000000000000000 0000000000000000 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, cfg, sandbox.Command{Dir: ws}, tt.script)
			if (r.err == nil) != tt.ok {
				t.Fatalf("err = %v (stderr %q), want success %v", r.err, r.stderr, tt.ok)
			}
			if tt.ok && strings.TrimSpace(r.stdout) != strings.TrimSpace(tt.out) {
				t.Errorf("stdout = %q, want %q", r.stdout, tt.out)
			}
			for _, s := range []string{"PRIVATE-KEY", "SHARED-KEY", "CACHE-STATE"} {
				if strings.Contains(r.stdout+r.stderr, s) {
					t.Errorf("hidden content leaked: %q", r.stdout+r.stderr)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(outside, "escaped")); err == nil {
		t.Error("a file was written outside the workspace")
	}
	if _, err := os.Stat("/tmp/escaped-" + filepath.Base(outside)); err == nil {
		os.Remove("/tmp/escaped-" + filepath.Base(outside))
		t.Error("a file was written to the host's /tmp")
	}
	// The workspace is the reconciler's again.
	if st, err := os.Stat(filepath.Join(ws, "d/e/out.txt")); err != nil || int(st.Sys().(*syscall.Stat_t).Uid) != os.Getuid() {
		t.Errorf("the command's file is not given back: %v", err)
	}
}

func TestHideCannotHoldTheWorkspace(t *testing.T) {
	requireAll(t)
	parent := t.TempDir()
	ws := filepath.Join(parent, "ws")
	os.Mkdir(ws, 0o755)
	r := run(t, sandbox.Config{Hide: []string{parent}, ReadOnly: []string{parent}}, sandbox.Command{Dir: ws}, "true")
	if r.err == nil || !strings.Contains(r.err.Error(), "holds their workspace") {
		t.Errorf("err = %v", r.err)
	}
}

func TestNetwork(t *testing.T) {
	requireAll(t)
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
			c.Write([]byte("REACHED-THE-HOST\n"))
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	script := fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d && cat <&3", port)
	cmd := sandbox.Command{Path: "/bin/bash", Args: []string{"bash", "-c", script}}
	r := run(t, sandbox.Config{}, cmd, "")
	if r.err == nil || strings.Contains(r.stdout, "REACHED") {
		t.Errorf("without network: err %v, stdout %q", r.err, r.stdout)
	}
	cmd.Network = true
	r = run(t, sandbox.Config{}, cmd, "")
	if r.err != nil || !strings.Contains(r.stdout, "REACHED-THE-HOST") {
		t.Errorf("with network: err %v, stdout %q, stderr %q", r.err, r.stdout, r.stderr)
	}
}

func TestProcessTreeIsKilled(t *testing.T) {
	requireAll(t)
	t.Run("a setsid child that sleeps past the run", func(t *testing.T) {
		r := run(t, sandbox.Config{}, sandbox.Command{}, "setsid sleep 31337 & setsid sh -c 'sleep 31337 & sleep 31337' & echo started")
		if r.err != nil || !strings.Contains(r.stdout, "started") {
			t.Fatalf("err %v, stdout %q", r.err, r.stdout)
		}
		noneLeft(t, "sleep\x0031337")
	})
	t.Run("the run's context ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := sandbox.Config{}.Run(ctx, sandbox.Command{Path: "/bin/sh", Args: []string{"sh", "-c", "setsid sleep 31338 & sleep 31338"}, Dir: t.TempDir(), Stdout: io.Discard, Stderr: io.Discard})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want the context's", err)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("run took %s", time.Since(start))
		}
		noneLeft(t, "sleep\x0031338")
	})
}

func TestLimits(t *testing.T) {
	requireAll(t)
	t.Run("fork 1000 processes", func(t *testing.T) {
		ws := t.TempDir()
		r := run(t, sandbox.Config{}, sandbox.Command{Dir: ws, Limits: sandbox.Limits{Processes: 100}},
			`i=0; while [ $i -lt 1000 ]; do sleep 31339 & i=$((i+1)); echo $i > count; done; echo forked $i`)
		b, _ := os.ReadFile(filepath.Join(ws, "count"))
		n := strings.TrimSpace(string(b))
		if r.err == nil || n == "1000" {
			t.Errorf("err %v after %s processes, stdout %q", r.err, n, r.stdout)
		}
		t.Logf("%s processes started; %v: %s", n, r.err, firstLine(r.stderr))
		noneLeft(t, "sleep\x0031339")
	})
	t.Run("write 1 GB", func(t *testing.T) {
		ws := t.TempDir()
		r := run(t, sandbox.Config{}, sandbox.Command{Dir: ws}, "set -e; head -c 1073741824 /dev/zero > big; echo wrote")
		var ee *sandbox.ExitError
		if !errors.As(r.err, &ee) || !strings.Contains(ee.Error(), "file size limit of 128 MiB") || strings.Contains(r.stdout, "wrote") {
			t.Fatalf("err = %v, stdout %q", r.err, r.stdout)
		}
		if fi, err := os.Stat(filepath.Join(ws, "big")); err != nil || fi.Size() > sandbox.DefaultLimits.FileSize {
			t.Errorf("big: %v %v", fi, err)
		}
	})
	t.Run("fill /tmp", func(t *testing.T) {
		r := run(t, sandbox.Config{}, sandbox.Command{Limits: sandbox.Limits{TmpSize: 1 << 20}}, `set -e; head -c 2000000 /dev/zero > "$TMPDIR/big"`)
		if r.err == nil || !strings.Contains(r.stderr, "No space left") {
			t.Errorf("err = %v, stderr %q", r.err, r.stderr)
		}
	})
	t.Run("CPU time", func(t *testing.T) {
		r := run(t, sandbox.Config{}, sandbox.Command{Limits: sandbox.Limits{CPU: time.Second}}, "while :; do :; done")
		var ee *sandbox.ExitError
		if !errors.As(r.err, &ee) || ee.Signal != syscall.SIGXCPU || !strings.Contains(ee.Error(), "CPU time limit of 1s") {
			t.Errorf("err = %v", r.err)
		}
	})
	t.Run("address space", func(t *testing.T) {
		r := run(t, sandbox.Config{}, sandbox.Command{Limits: sandbox.Limits{AddressSpace: 64 << 20}}, "awk 'BEGIN { s = \"x\"; while (1) s = s s }'")
		if r.err == nil {
			t.Errorf("a command grew past its address space: %q", r.stderr)
		}
	})
}

func TestExitStatus(t *testing.T) {
	requireAll(t)
	r := run(t, sandbox.Config{}, sandbox.Command{}, "echo oops >&2; exit 3")
	var ee *sandbox.ExitError
	if !errors.As(r.err, &ee) || ee.Code != 3 || r.stderr != "oops\n" {
		t.Errorf("err = %v, stderr %q", r.err, r.stderr)
	}
	r = run(t, sandbox.Config{}, sandbox.Command{Path: "/nonexistent/program", Args: []string{"x"}}, "")
	if r.err == nil || !strings.Contains(r.err.Error(), "no such file") {
		t.Errorf("err = %v", r.err)
	}
	r = run(t, sandbox.Config{}, sandbox.Command{Stdin: strings.NewReader("prompt text\n")}, "read l; echo \"got $l\"")
	if r.err != nil || r.stdout != "got prompt text\n" {
		t.Errorf("stdin: err %v, stdout %q", r.err, r.stdout)
	}
}

func TestPermissiveRunsWithWhatIsAvailable(t *testing.T) {
	s := requireAll(t)
	r := run(t, sandbox.Config{Mode: sandbox.Permissive}, sandbox.Command{}, "true")
	if r.err != nil || strings.Join(r.mechs, " ") != strings.Join(s.Mechanisms, " ") {
		t.Errorf("permissive on a kernel with everything: %v %v", r.mechs, r.err)
	}
}

// TestUnprivileged runs the sandbox from an unprivileged user: the
// confinement must not depend on the caller being root.
func TestUnprivileged(t *testing.T) {
	requireAll(t)
	if ws := os.Getenv("SANDBOX_TEST_UNPRIVILEGED_WS"); ws != "" {
		unprivilegedChild(t, ws)
		return
	}
	if os.Getuid() != 0 {
		t.Skip("already unprivileged: every other test covers it")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	exe, _ := os.Executable()
	bin := filepath.Join(dir, "sandbox.test")
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(dir, "ws")
	os.Mkdir(ws, 0o755)
	os.Chown(ws, 65534, 65534)
	key := filepath.Join(t.TempDir(), "key")
	os.WriteFile(key, []byte("ROOTS-KEY"), 0o644)
	cmd := exec.Command(bin, "-test.run=^TestUnprivileged$", "-test.v")
	cmd.Env = []string{"SANDBOX_TEST_UNPRIVILEGED_WS=" + ws, "SANDBOX_TEST_KEY=" + key, "PATH=/usr/bin:/bin"}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestUnprivileged") {
		t.Fatalf("as uid 65534: %v\n%s", err, out)
	}
}

func unprivilegedChild(t *testing.T, ws string) {
	if os.Getuid() == 0 {
		t.Fatal("not unprivileged")
	}
	r := run(t, sandbox.Config{}, sandbox.Command{Dir: ws, Limits: sandbox.Limits{Processes: 100}}, strings.Join([]string{
		"echo ok > mine",
		"id -u",
		"cat " + os.Getenv("SANDBOX_TEST_KEY") + " 2>/dev/null || echo no-key",
		"echo x > /tmp/../escaped 2>/dev/null || echo no-write",
		"grep -E '^CapEff' /proc/self/status | awk '{print $2}'",
		"i=0; while [ $i -lt 1000 ]; do sleep 31340 & i=$((i+1)); done 2>/dev/null; echo forked $i",
	}, "; "))
	t.Logf("mechanisms %v, err %v\n%s%s", r.mechs, r.err, r.stdout, r.stderr)
	lines := strings.Split(r.stdout, "\n")
	if len(lines) < 4 || lines[0] != "0" || lines[1] != "no-key" || lines[2] != "no-write" || lines[3] != "0000000000000000" {
		t.Errorf("stdout = %q", r.stdout)
	}
	if r.err == nil && strings.Contains(r.stdout, "forked 1000") {
		t.Error("1000 processes started")
	}
	if b, err := os.ReadFile(filepath.Join(ws, "mine")); err != nil || string(b) != "ok\n" {
		t.Errorf("workspace: %q %v", b, err)
	}
	noneLeft(t, "sleep\x0031340")
}

func firstLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Scan()
	return sc.Text()
}

// BenchmarkRun measures a sandboxed `true` against the plain one, for the
// sandbox's cost per run.
// BenchmarkRun is the cost of one sandboxed command (/bin/true) with this
// test binary as the helper and with reconciler-sandbox, while this
// process holds a small heap and a 300 MB one (a reconciler with a large
// ledger in memory): starting the helper in new namespaces from this
// process copies its page tables; the separate helper is started with a
// vfork and starts the namespaces itself.
func BenchmarkRun(b *testing.B) {
	requireAll(b)
	dir := b.TempDir()
	helper := buildHelper(b, b.TempDir())
	var heap [][]byte
	for _, size := range []int{0, 300} {
		for len(heap) < size {
			p := make([]byte, 1<<20)
			for i := 0; i < len(p); i += 4096 {
				p[i] = 1
			}
			heap = append(heap, p)
		}
		for _, h := range []string{"self", sandbox.HelperName} {
			b.Run(fmt.Sprintf("heap=%dMB/helper=%s", size, h), func(b *testing.B) {
				use := ""
				if h != "self" {
					use = helper
				}
				if err := sandbox.UseHelper(use); err != nil {
					b.Fatal(err)
				}
				defer sandbox.UseHelper("")
				for b.Loop() {
					if _, err := (sandbox.Config{}).Run(context.Background(), sandbox.Command{Path: "/bin/true", Args: []string{"true"}, Dir: dir}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	b.Run("unsandboxed", func(b *testing.B) {
		for b.Loop() {
			c := exec.Command("/bin/true")
			c.Dir = dir
			if err := c.Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	runtime.KeepAlive(heap)
}
