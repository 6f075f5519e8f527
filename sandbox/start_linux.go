package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The init stage starts the command as its own child, without executing
// this program a second time, when the command has a PID namespace and a
// view (everything is in force). Capabilities, securebits, no_new_privs
// and Landlock are per thread and inherited by a child from the thread
// that forks it, so one thread of the init, never its main thread, takes
// them on as the exec stage would and forks the command with
// SysProcAttr.Credential for its user. rlimits are per process, and the
// init must not carry the command's: RLIMIT_NPROC counts the init's own
// threads when they share a user, and RLIMIT_AS on a Go process kills it
// at the next mapping it cannot make. So the command is started traced and
// stops at its first instruction after execve; the init sets its rlimits
// with prlimit(2), refuses an image already larger than RLIMIT_AS allows
// (execve would have failed under the limit), and lets it go with
// PTRACE_DETACH. The forking thread lives until the command is reaped: its
// end is the command's parent-death signal.
//
// The thread shares the command's Landlock domain and, for an unprivileged
// caller, its user, so Landlock no longer stands between the command and
// that one thread of the init. The init makes up for it: it is not
// dumpable (ptrace and /proc/1/{environ,mem} need a capability the command
// lacks, besides the capabilities check that already refuses them), and it
// catches every signal that would make a Go program exit; the PID
// namespace drops the rest, SIGKILL included, as it does for any init.

// errNotTraced is returned by startTraced when the kernel refuses to let
// the command be traced (Yama's ptrace_scope 3, a seccomp filter, or this
// program being traced itself, by strace for one): the init falls back to
// the exec stage, which needs no tracing.
var errNotTraced = errors.New("the command cannot be traced")

// direct reports whether the init stage starts the command itself.
func direct(sp *spec) bool {
	return !sp.ExecStage && has(sp.Mechanisms, PIDNS) && has(sp.Mechanisms, MountNS)
}

// traced reports whether the command starts traced: it does to be given
// its rlimits before it runs.
func traced(sp *spec) bool { return has(sp.Mechanisms, Rlimits) }

// exitStatus is how the command ended, or why it did not start.
type exitStatus struct {
	code, sig int
	err       error
}

// runDirect starts the command from a confined thread of its own, and
// returns its status once it has ended (every other process is reaped on
// the way). errNotTraced means nothing was started.
func runDirect(sp *spec) exitStatus {
	started := make(chan error, 1)
	pids := make(chan int, 1)
	verdict := make(chan error, 1)
	done := make(chan exitStatus, 1)
	onOwnThread(func() {
		pid, err := startTraced(sp)
		if err != nil {
			started <- err
			return
		}
		pids <- pid
		if err := <-verdict; err != nil {
			unix.Kill(pid, unix.SIGKILL)
			reap(pid)
			done <- exitStatus{err: err}
			return
		}
		if !traced(sp) {
			code, sig := reap(pid)
			done <- exitStatus{code: code, sig: sig}
			return
		}
		if err := unix.PtraceDetach(pid); err != nil {
			unix.Kill(pid, unix.SIGKILL)
			reap(pid)
			done <- exitStatus{err: fmt.Errorf("let the command run: %w", err)}
			return
		}
		code, sig := reap(pid)
		done <- exitStatus{code: code, sig: sig}
	})
	select {
	case err := <-started:
		return exitStatus{err: err}
	case pid := <-pids:
		// This thread, which Landlock does not restrict, reads /proc.
		verdict <- limitCommand(pid, sp)
	}
	return <-done
}

// onOwnThread runs f in a goroutine locked to an OS thread that is not the
// process's main thread; the thread ends with f.
func onOwnThread(f func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// Hold the main thread: f's goroutine cannot get it.
			end := make(chan struct{})
			onOwnThread(func() { defer close(end); f() })
			<-end
			runtime.UnlockOSThread()
			return
		}
		// Never unlocked: the thread is confined.
		f()
	}()
}

// startTraced confines this thread as the command must be and starts the
// command from it, traced; it returns once the command has stopped after
// execve.
func startTraced(sp *spec) (int, error) {
	if err := confine(sp); err != nil {
		return 0, err
	}
	// The command's capabilities after execve are the inheritable ones
	// its file allows, its permitted ones within the bounding set (empty)
	// and its ambient ones: nothing, once the first are gone too.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return 0, fmt.Errorf("clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	caps[0].Inheritable, caps[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		return 0, fmt.Errorf("clear inheritable capabilities: %w", err)
	}
	attr := &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL, Ptrace: traced(sp)}
	if sp.UID != os.Getuid() || sp.GID != os.Getgid() {
		// setuid from 0 clears the permitted and effective sets (the
		// secure bits lock that in).
		attr.Credential = &syscall.Credential{Uid: uint32(sp.UID), Gid: uint32(sp.GID), NoSetGroups: sp.GID == os.Getgid()}
	}
	pid, err := syscall.ForkExec(sp.Path, sp.Args, &syscall.ProcAttr{Dir: sp.Dir, Env: sp.Env, Files: []uintptr{0, 1, 2}, Sys: attr})
	if errors.Is(err, syscall.EPERM) && attr.Ptrace {
		return 0, errNotTraced
	}
	if err != nil {
		return 0, fmt.Errorf("exec %s: %w", sp.Path, err)
	}
	if !attr.Ptrace {
		return pid, nil
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Kill(pid, unix.SIGKILL)
			return 0, fmt.Errorf("wait for the command to start: %w", err)
		}
		if ws.Stopped() && ws.StopSignal() == unix.SIGTRAP {
			return pid, nil
		}
		if ws.Exited() || ws.Signaled() {
			return 0, fmt.Errorf("the command ended before it started (%v)", ws)
		}
	}
}

// limitCommand sets the command's rlimits, as the exec stage sets its own
// before execve; pid has stopped after execve. An image that already
// takes more address space than RLIMIT_AS allows is refused, as execve
// refuses it under the limit.
func limitCommand(pid int, sp *spec) error {
	if !has(sp.Mechanisms, Rlimits) {
		return nil
	}
	for _, r := range append(rlimits(sp.Limits, false), rlimits(sp.Limits, true)...) {
		var old unix.Rlimit
		if err := unix.Prlimit(pid, r.res, nil, &old); err != nil {
			return fmt.Errorf("get the command's %s: %w", r.name, err)
		}
		lim := unix.Rlimit{Cur: min(r.cur, old.Max), Max: min(r.max, old.Max)}
		if err := unix.Prlimit(pid, r.res, &lim, nil); err != nil {
			return fmt.Errorf("set the command's %s: %w", r.name, err)
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return fmt.Errorf("read the command's size: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return fmt.Errorf("read the command's size: %q", b)
	}
	pages, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return fmt.Errorf("read the command's size: %w", err)
	}
	if size := pages * int64(os.Getpagesize()); size > sp.Limits.AddressSpace {
		return fmt.Errorf("exec %s: its image takes %s of address space, more than the limit of %s: %w", sp.Path, bytesString(size), bytesString(sp.Limits.AddressSpace), syscall.ENOMEM)
	}
	return nil
}

// guardSignals keeps signals from ending the init: it catches those that
// make a Go program exit when a process sends them (see os/signal), so
// that only SIGKILL from outside the PID namespace ends it. Faults of the
// init's own are not caught (the kernel sends them, not a process), and a
// caught signal means nothing to the command, whose execve resets every
// handler.
func guardSignals() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGILL,
		syscall.SIGTRAP, syscall.SIGABRT, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGSEGV,
		syscall.SIGSTKFLT, syscall.SIGSYS)
	go func() {
		for range c {
		}
	}()
}
