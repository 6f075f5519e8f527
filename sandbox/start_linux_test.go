package sandbox_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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

// The tests of this file cover what starting the command from the init
// stage (without the exec stage) could weaken; TestExecStage runs them
// and the escape catalogue through the exec stage as well.

// asNobody runs body as the test's user and, when that is root, again in a
// copy of the test binary run as uid 65534: a command started by an
// unprivileged caller has uid 0 in its user namespace, the init's, and
// only the secure bits, the bounding set and Landlock hold it.
func asNobody(t *testing.T, body func(t *testing.T)) {
	t.Helper()
	if os.Getenv("SANDBOX_TEST_AS_NOBODY") == t.Name() {
		if os.Getuid() == 0 {
			t.Fatal("not unprivileged")
		}
		body(t)
		return
	}
	t.Run("caller", body)
	if os.Getuid() != 0 {
		return
	}
	t.Run("unprivileged caller", func(t *testing.T) {
		dir := t.TempDir()
		os.Chmod(dir, 0o755)
		os.Chmod(filepath.Dir(dir), 0o755)
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(exe)
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "sandbox.test")
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(t.Name(), "/unprivileged_caller")
		args := []string{"-test.run=^" + strings.ReplaceAll(name, "/", "$/^") + "$", "-test.v"}
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"SANDBOX_TEST_AS_NOBODY=" + name, "PATH=/usr/bin:/bin"}
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: "+name+" (") {
			t.Fatalf("as uid 65534: %v\n%s", err, out)
		}
		t.Logf("as uid 65534:\n%s", out)
	})
}

// fields returns the values of "Name: value" lines by name, in order.
func fields(out string) map[string][]string {
	m := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok {
			m[k] = append(m[k], strings.TrimSpace(v))
		}
	}
	return m
}

// TestCapabilitiesInside checks every capability set and no_new_privs of
// the command, of a child, of a setsid grandchild and of a program the
// command executes in its place.
func TestCapabilitiesInside(t *testing.T) {
	requireAll(t)
	asNobody(t, func(t *testing.T) {
		ws := t.TempDir()
		os.WriteFile(filepath.Join(ws, "show"), []byte("#!/bin/sh\nexec grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Uid):' /proc/self/status\n"), 0o755)
		r := run(t, sandbox.Config{}, sandbox.Command{Dir: ws}, "./show; sh -c ./show; setsid -w sh -c 'sh -c ./show'; exec ./show")
		if r.err != nil {
			t.Fatalf("%v: %s", r.err, r.stderr)
		}
		f := fields(r.stdout)
		for _, c := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
			if len(f[c]) != 4 {
				t.Fatalf("%s: %v in %q", c, f[c], r.stdout)
			}
			for i, v := range f[c] {
				if v != "0000000000000000" {
					t.Errorf("process %d: %s = %s", i, c, v)
				}
			}
		}
		for i, v := range f["NoNewPrivs"] {
			if v != "1" {
				t.Errorf("process %d: NoNewPrivs = %s", i, v)
			}
		}
		wantUID := "0"
		if os.Getuid() == 0 {
			wantUID = "65534"
		}
		for i, v := range f["Uid"] {
			if want := strings.Repeat(wantUID+" ", 4); strings.Join(strings.Fields(v), " ")+" " != want {
				t.Errorf("process %d: Uid = %s, want %s as the real, effective, saved and filesystem user", i, v, wantUID)
			}
		}
		if len(f["NoNewPrivs"]) != 4 || len(f["Uid"]) != 4 {
			t.Errorf("stdout %q", r.stdout)
		}
	})
}

// TestRlimitsInForce reads /proc/self/limits in the command and in a
// grandchild: each limit is soft and hard as Limits says, and the command
// cannot raise one.
func TestRlimitsInForce(t *testing.T) {
	requireAll(t)
	asNobody(t, func(t *testing.T) {
		lim := sandbox.Limits{CPU: 7 * time.Second, AddressSpace: 900 << 20, FileSize: 3 << 20, Processes: 77, OpenFiles: 99}
		r := run(t, sandbox.Config{}, sandbox.Command{Limits: lim},
			`cat /proc/self/limits; sh -c 'sh -c "cat /proc/self/limits"'
			(ulimit -n 100) 2>/dev/null && echo raised-nofile
			(ulimit -p 78) 2>/dev/null && echo raised-nproc
			(ulimit -H -v unlimited) 2>/dev/null && echo raised-as
			(ulimit -H -f unlimited) 2>/dev/null && echo raised-fsize
			(ulimit -H -t 9) 2>/dev/null && echo raised-cpu
			(ulimit -c 1) 2>/dev/null && echo raised-core
			(ulimit -S -n 99 && ulimit -S -n 98) && echo lowered`)
		if r.err != nil {
			t.Fatalf("%v: %s", r.err, r.stderr)
		}
		want := map[string]string{
			"Max cpu time":       "7 8 seconds",
			"Max file size":      fmt.Sprintf("%d %d bytes", 3<<20, 3<<20),
			"Max processes":      "77 77 processes",
			"Max open files":     "99 99 files",
			"Max address space":  fmt.Sprintf("%d %d bytes", 900<<20, 900<<20),
			"Max core file size": "0 0 bytes",
		}
		seen := map[string]int{}
		for _, l := range strings.Split(r.stdout, "\n") {
			for name, w := range want {
				if rest, ok := strings.CutPrefix(l, name+" "); ok {
					seen[name]++
					if got := strings.Join(strings.Fields(rest), " "); got != w {
						t.Errorf("%s = %q, want %q", name, got, w)
					}
				}
			}
		}
		for name := range want {
			if seen[name] != 2 {
				t.Errorf("%s: seen %d times in %q, want 2", name, seen[name], r.stdout)
			}
		}
		if strings.Contains(r.stdout, "raised") || !strings.Contains(r.stdout, "lowered") {
			t.Errorf("the command raised a limit: %q", r.stdout)
		}
	})
}

// TestInitSurvivesTheCommandsLimits exhausts each limit in the command and
// then exits with a status of its own: only a living init reports it.
func TestInitSurvivesTheCommandsLimits(t *testing.T) {
	requireAll(t)
	asNobody(t, func(t *testing.T) {
		for _, tt := range []struct {
			name, script string
			lim          sandbox.Limits
		}{
			{"processes", `(i=0; while [ $i -lt 200 ]; do sleep 31341 & i=$((i+1)); done) 2>/dev/null`, sandbox.Limits{Processes: 40}},
			{"address space", `awk 'BEGIN { s = "x"; while (1) s = s s }' 2>/dev/null`, sandbox.Limits{AddressSpace: 64 << 20}},
			{"open files", `(exec 3</dev/null 4</dev/null 5</dev/null 6</dev/null 7</dev/null 8</dev/null 9</dev/null) 2>/dev/null`, sandbox.Limits{OpenFiles: 8}},
			{"file size", `head -c 2000000 /dev/zero > big 2>/dev/null`, sandbox.Limits{FileSize: 1 << 20}},
			{"CPU time", `sh -c 'while :; do :; done'`, sandbox.Limits{CPU: time.Second}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				ws := t.TempDir()
				r := run(t, sandbox.Config{}, sandbox.Command{Dir: ws, Limits: tt.lim}, tt.script+" || echo hit > hit; exit 7")
				var ee *sandbox.ExitError
				if !errors.As(r.err, &ee) || ee.Code != 7 || ee.Signal != 0 {
					t.Errorf("err = %v, want exit status 7 (stderr %q)", r.err, r.stderr)
				}
				if _, err := os.Stat(filepath.Join(ws, "hit")); err != nil {
					t.Errorf("the command did not reach its limit: %v", err)
				}
			})
		}
		noneLeft(t, "sleep\x0031341")
	})
}

// TestInitCannotBeEnded sends every signal that ends a Go program, and
// SIGKILL and SIGSTOP, to the init and to each of its threads, reads their
// environment and memory, and then exits 5: the init must report that
// status.
func TestInitCannotBeEnded(t *testing.T) {
	requireAll(t)
	asNobody(t, func(t *testing.T) {
		r := run(t, sandbox.Config{}, sandbox.Command{Path: "/bin/bash", Args: []string{"bash", "-c", `
			for s in HUP INT TERM QUIT ILL TRAP ABRT BUS FPE SEGV STKFLT SYS USR1 PIPE KILL STOP; do
				for task in /proc/1/task/*; do
					kill -s $s ${task##*/} 2>/dev/null && echo "sent $s to ${task##*/}"
				done
			done
			sleep 0.2
			for task in /proc/1/task/*; do
				cat $task/environ 2>/dev/null && echo "read environ of ${task##*/}"
				head -c 1 $task/mem 2>/dev/null && echo "read mem of ${task##*/}"
			done
			exit 5`}}, "")
		t.Logf("stdout %q", r.stdout)
		var ee *sandbox.ExitError
		if !errors.As(r.err, &ee) || ee.Code != 5 {
			t.Errorf("err = %v, want exit status 5 (stderr %q)", r.err, r.stderr)
		}
		if strings.Contains(r.stdout, "read") {
			t.Errorf("the init is open to the command: %q", r.stdout)
		}
	})
}

// TestLandlockForGrandchildren runs the filesystem and network escapes
// from children, setsid grandchildren and a program executed in place.
func TestLandlockForGrandchildren(t *testing.T) {
	requireAll(t)
	asNobody(t, func(t *testing.T) {
		secret := filepath.Join(t.TempDir(), "key")
		os.WriteFile(secret, []byte("GRANDCHILD-SECRET"), 0o644)
		outside := t.TempDir()
		os.Chmod(outside, 0o777)
		for _, how := range []struct{ name, wrap string }{
			{"child", "sh -c '%s'"},
			{"setsid grandchild", "setsid sh -c 'sh -c \"%s\"'; sleep 0.1"},
			{"program executed in place", "exec sh -c '%s'"},
		} {
			t.Run(how.name, func(t *testing.T) {
				esc := "cat " + secret + "; echo x > " + outside + "/escaped; ls /root; cat /etc/shadow"
				r := run(t, sandbox.Config{Hide: []string{secret}}, sandbox.Command{}, fmt.Sprintf(how.wrap, esc))
				if strings.Contains(r.stdout, "GRANDCHILD-SECRET") {
					t.Errorf("read the key: %q", r.stdout)
				}
				if _, err := os.Stat(filepath.Join(outside, "escaped")); err == nil {
					t.Error("wrote outside the workspace")
				}
				if !strings.Contains(r.stderr, "ermission denied") && !strings.Contains(r.stderr, "No such file") {
					t.Errorf("stderr %q", r.stderr)
				}
			})
		}
	})
}

// bigImage writes a static amd64 program that exits 42, whose one segment
// is 1 GiB in memory (almost all of it zero-filled, as .bss is).
func bigImage(t *testing.T, dir string) string {
	if runtime.GOARCH != "amd64" {
		t.Skip("the test program is amd64 code")
	}
	const base, hdr = 0x400000, 64 + 56
	code := []byte{0xbf, 42, 0, 0, 0, 0xb8, 60, 0, 0, 0, 0x0f, 0x05} // mov edi,42; mov eax,60; syscall
	b := make([]byte, hdr, hdr+len(code))
	copy(b, "\x7fELF\x02\x01\x01")
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], base+hdr) // entry
	le.PutUint64(b[32:], 64)       // program headers
	le.PutUint16(b[52:], 64)
	le.PutUint16(b[54:], 56)
	le.PutUint16(b[56:], 1)
	ph := b[64:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 7) // RWX
	le.PutUint64(ph[16:], base)
	le.PutUint64(ph[24:], base)
	le.PutUint64(ph[32:], uint64(hdr+len(code)))
	le.PutUint64(ph[40:], 1<<30)
	le.PutUint64(ph[48:], 0x1000)
	b = append(b, code...)
	p := filepath.Join(dir, "big")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestImageLargerThanTheAddressSpace executes a program whose image alone
// is past RLIMIT_AS: it must not run, as execve under the limit refuses
// it; under a larger limit it runs.
func TestImageLargerThanTheAddressSpace(t *testing.T) {
	requireAll(t)
	ws := t.TempDir()
	bigImage(t, ws)
	cmd := sandbox.Command{Path: "./big", Args: []string{"big"}, Dir: ws}
	r := run(t, sandbox.Config{}, cmd, "")
	var ee *sandbox.ExitError
	if !errors.As(r.err, &ee) || ee.Code != 42 {
		t.Fatalf("under the default limit: err = %v, want exit status 42", r.err)
	}
	cmd.Limits.AddressSpace = 512 << 20
	r = run(t, sandbox.Config{}, cmd, "")
	if errors.As(r.err, &ee) && ee.Code == 42 || r.err == nil {
		t.Fatalf("a 1 GiB image ran under a 512 MiB limit: %v", r.err)
	}
	t.Logf("refused: %v", r.err)
}

// TestCommandStartedByInit checks that the init starts the command itself
// (one of its threads, not the main one, carries the command's
// confinement) unless the exec stage is asked for, and that the command is the init's child, leading
// its own session, either way.
func TestCommandStartedByInit(t *testing.T) {
	requireAll(t)
	const script = `echo $PPID $(cut -d' ' -f6 /proc/self/stat) $$; grep -h '^NoNewPrivs' /proc/1/task/*/status | sort | uniq -c | awk '{print $3 "x" $1}' | tr '\n' ' '; echo; grep '^NoNewPrivs' /proc/1/status`
	for _, tt := range []struct {
		name      string
		execStage bool
		want      string
	}{{"init", false, "1x1"}, {"exec stage", true, ""}} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.execStage {
				defer sandbox.UseExecStage()()
			}
			r := run(t, sandbox.Config{}, sandbox.Command{}, script)
			if r.err != nil {
				t.Fatalf("%v: %s", r.err, r.stderr)
			}
			lines := strings.Split(r.stdout, "\n")
			if f := strings.Fields(lines[0]); len(f) != 3 || f[0] != "1" || f[1] != f[2] {
				t.Fatalf("stdout %q, want the command as the child of PID 1, leading its session", r.stdout)
			}
			var confined string
			for _, f := range strings.Fields(lines[1]) {
				if strings.HasPrefix(f, "1x") {
					confined = f
				}
			}
			if confined != tt.want {
				t.Errorf("the init's threads with no_new_privs: %q, want %q", confined, tt.want)
			}
			if len(lines) < 3 || strings.Join(strings.Fields(lines[2]), " ") != "NoNewPrivs: 0" {
				t.Errorf("the init's main thread: %q, want it unconfined", lines[2:])
			}
		})
	}
}

// TestExecStage runs the escape catalogue and this file's tests through the
// exec stage, the path of kernels that refuse to trace the command.
func TestExecStage(t *testing.T) {
	requireAll(t)
	defer sandbox.UseExecStage()()
	for name, test := range map[string]func(*testing.T){
		"TestEnvironmentFromNothing":         TestEnvironmentFromNothing,
		"TestFilesystem":                     TestFilesystem,
		"TestNetwork":                        TestNetwork,
		"TestProcessTreeIsKilled":            TestProcessTreeIsKilled,
		"TestLimits":                         TestLimits,
		"TestExitStatus":                     TestExitStatus,
		"TestImageLargerThanTheAddressSpace": TestImageLargerThanTheAddressSpace,
		"TestInitSurvivesTheCommandsLimits":  TestInitSurvivesTheCommandsLimits,
		"TestRlimitsInForce":                 TestRlimitsInForce,
		"TestCapabilitiesInside":             TestCapabilitiesInside,
		"TestLandlockForGrandchildren":       TestLandlockForGrandchildren,
		"TestInitCannotBeEnded":              TestInitCannotBeEnded,
	} {
		t.Run(name, test)
	}
}

// BenchmarkRunExecStage is BenchmarkRun's sandboxed `true` through the exec
// stage: the cost of the second execution of the helper.
func BenchmarkRunExecStage(b *testing.B) {
	requireAll(b)
	defer sandbox.UseExecStage()()
	dir := b.TempDir()
	for b.Loop() {
		if _, err := (sandbox.Config{}).Run(context.Background(), sandbox.Command{Path: "/bin/true", Args: []string{"true"}, Dir: dir}); err != nil {
			b.Fatal(err)
		}
	}
}
