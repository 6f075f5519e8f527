// Package sandbox runs an untrusted command confined by the operating
// system: in new user, PID, IPC, mount and (unless it may use the network)
// network namespaces, on a filesystem view holding only its workspace
// (read-write), a private /tmp and HOME, and the system's read-only
// directories, restricted again by Landlock, with rlimits on CPU time,
// address space, file size and process count. Its environment is exactly
// the one given. When the command exits, or the context ends, every
// process it started is killed with it.
//
// The confinement is applied by the program itself, re-executed: Run
// starts /proc/self/exe with a hidden argument in the new namespaces, and
// that child (see Init) builds the view and starts the command confined
// by Landlock, rlimits and its own user, without capabilities. Programs
// that call Run must therefore call Init first thing in main and in
// TestMain.
//
// Run fails closed: in Strict mode a mechanism the kernel lacks fails the
// run with an *UnavailableError naming it; in Permissive mode the command
// runs with what the kernel offers. Either way Run reports the mechanisms
// that were in force.
package sandbox

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"
)

// Mode says what Run does when the kernel lacks a mechanism.
type Mode string

// Modes.
const (
	// Strict refuses to run a command without every mechanism.
	Strict Mode = "strict"
	// Permissive runs it with the mechanisms the kernel offers.
	Permissive Mode = "permissive"
)

// ParseMode parses "strict" or "permissive"; "" is Strict.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", Strict:
		return Strict, nil
	case Permissive:
		return Permissive, nil
	}
	return "", fmt.Errorf("sandbox mode %q: use %q or %q", s, Strict, Permissive)
}

// Mechanism names, as recorded in the ledger and status. Landlock is
// recorded with the ABI version in force, as LandlockName returns it.
const (
	UserNS  = "userns"
	PIDNS   = "pidns"
	NetNS   = "netns"
	IPCNS   = "ipcns"
	MountNS = "mountns"
	Rlimits = "rlimits"
)

// landlockPrefix starts the name of the Landlock mechanism.
const landlockPrefix = "landlock-abi-"

// LandlockName is the mechanism name of Landlock at ABI version abi.
func LandlockName(abi int) string { return fmt.Sprintf("%s%d", landlockPrefix, abi) }

// Limits bound each process of a sandboxed command. A zero field takes
// its value from DefaultLimits.
type Limits struct {
	// CPU is each process's CPU time (RLIMIT_CPU): SIGXCPU at the limit,
	// SIGKILL a second later.
	CPU time.Duration
	// AddressSpace is each process's virtual memory in bytes (RLIMIT_AS).
	AddressSpace int64
	// FileSize is the largest file a process may write, in bytes
	// (RLIMIT_FSIZE): SIGXFSZ beyond it.
	FileSize int64
	// Processes is how many processes and threads the command may have at
	// once (RLIMIT_NPROC, counted in its own user namespace).
	Processes int
	// OpenFiles is each process's open file limit (RLIMIT_NOFILE).
	OpenFiles int
	// TmpSize is the size of the private /tmp (and HOME, inside it), in
	// bytes.
	TmpSize int64
}

// DefaultLimits are the limits of a command whose Limits leave them zero.
var DefaultLimits = Limits{
	CPU:          5 * time.Minute,
	AddressSpace: 4 << 30,
	FileSize:     128 << 20,
	Processes:    256,
	OpenFiles:    1024,
	TmpSize:      64 << 20,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.CPU > 0 {
		d.CPU = l.CPU
	}
	if l.AddressSpace > 0 {
		d.AddressSpace = l.AddressSpace
	}
	if l.FileSize > 0 {
		d.FileSize = l.FileSize
	}
	if l.Processes > 0 {
		d.Processes = l.Processes
	}
	if l.OpenFiles > 0 {
		d.OpenFiles = l.OpenFiles
	}
	if l.TmpSize > 0 {
		d.TmpSize = l.TmpSize
	}
	return d
}

// Config is how commands are confined. The zero value is Strict with
// DefaultLimits.
type Config struct {
	Mode Mode
	// Hide are paths the command must never see, such as the
	// reconciler's signing key, its cache directory and a local origin.
	// They are not part of the view in the first place; one that lies
	// inside an exposed directory is covered with an empty file or
	// directory, and Run fails when it cannot be.
	Hide []string
	// ReadOnly are paths exposed read-only besides the system's (see
	// SystemPaths).
	ReadOnly []string
	// UID and GID are the host user and group a command runs as when the
	// caller is root, so that the kernel's per-user process limit and
	// file permissions hold for it (0: 65534, nobody). Its workspace is
	// given to that user for the run and back after it. An unprivileged
	// caller's commands run as the caller.
	UID, GID int
}

// Command is a command to run in the sandbox.
type Command struct {
	// Path is the program, absolute or relative to Dir; Args its
	// arguments, Args[0] included.
	Path string
	Args []string
	// Dir is the workspace: the only host directory the command may
	// write, and its working directory.
	Dir string
	// Env is the command's whole environment, besides HOME and TMPDIR,
	// which Run sets to private directories outside Dir.
	Env []string
	// Network lets the command use the host's network; otherwise it has
	// none (a network namespace with only a down loopback, and Landlock
	// refusing TCP bind and connect).
	Network bool
	Limits  Limits
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
}

// ErrUnavailable is wrapped by an *UnavailableError.
var ErrUnavailable = errors.New("sandbox unavailable")

// UnavailableError is returned in Strict mode when the kernel lacks
// mechanisms the run needs.
type UnavailableError struct {
	// Missing are the mechanisms' names, Reasons why each is missing.
	Missing []string
	Reasons []string
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	b.WriteString("sandbox unavailable: this kernel or process lacks ")
	for i, m := range e.Missing {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(m)
		if i < len(e.Reasons) && e.Reasons[i] != "" {
			b.WriteString(" (" + e.Reasons[i] + ")")
		}
	}
	b.WriteString("; enable them, or pass --sandbox=permissive to run agents with what is available")
	return b.String()
}

func (e *UnavailableError) Unwrap() error { return ErrUnavailable }

// ExitError is returned when the command exited with a non-zero status
// or was killed by a signal.
type ExitError struct {
	Code   int
	Signal syscall.Signal
	// Reason explains a limit that was reached, when the status shows
	// one (SIGXCPU, SIGXFSZ, directly or as a shell's 128+n).
	Reason string
}

func (e *ExitError) Error() string {
	s := fmt.Sprintf("exit status %d", e.Code)
	if e.Signal != 0 {
		s = "killed by signal " + signalName(e.Signal)
	}
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

// exitError describes how the command ended.
func exitError(code int, sig syscall.Signal, l Limits) *ExitError {
	e := &ExitError{Code: code, Signal: sig}
	s := sig
	if s == 0 && code > 128 && code < 128+65 {
		s = syscall.Signal(code - 128)
	}
	switch s {
	case syscall.SIGXCPU:
		e.Reason = fmt.Sprintf("a process used up its CPU time limit of %s", l.CPU)
	case syscall.SIGXFSZ:
		e.Reason = fmt.Sprintf("a process wrote past the file size limit of %s", bytesString(l.FileSize))
	}
	if e.Reason != "" && sig == 0 {
		e.Reason = fmt.Sprintf("128+%s: %s", signalName(s), e.Reason)
	}
	return e
}

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGXCPU:
		return "SIGXCPU"
	case syscall.SIGXFSZ:
		return "SIGXFSZ"
	case syscall.SIGSEGV:
		return "SIGSEGV"
	case syscall.SIGABRT:
		return "SIGABRT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return fmt.Sprintf("%d (%s)", int(s), s)
}

func bytesString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Support is what the kernel and this process offer.
type Support struct {
	// Mechanisms are the names of the mechanisms available, in the order
	// of Wanted.
	Mechanisms []string
	// LandlockABI is the Landlock ABI version (0: none).
	LandlockABI int
	// Reasons says why each unavailable mechanism is unavailable, by
	// name ("landlock" for Landlock).
	Reasons map[string]string
	// Helper is the program that answered as the sandbox's helper: "this
	// program", or the path of a reconciler-sandbox (see UseHelper).
	Helper string

	// helper is set when this program answers as the sandbox's helper.
	helper bool
}

// Has reports whether a mechanism is available.
func (s Support) Has(name string) bool {
	for _, m := range s.Mechanisms {
		if m == name {
			return true
		}
	}
	return false
}

// wanted lists the mechanisms a command needs: every one, but no network
// namespace for a command that may use the network.
func wanted(network bool, abi int) []string {
	out := []string{UserNS, PIDNS}
	if !network {
		out = append(out, NetNS)
	}
	out = append(out, IPCNS, MountNS)
	if abi > 0 {
		out = append(out, LandlockName(abi))
	} else {
		out = append(out, "landlock")
	}
	return append(out, Rlimits)
}

// plan returns the mechanisms to apply for a command, or an
// *UnavailableError in Strict mode when some are missing.
func plan(mode Mode, s Support, network bool) ([]string, error) {
	var use []string
	var missing UnavailableError
	for _, m := range wanted(network, s.LandlockABI) {
		if s.Has(m) {
			use = append(use, m)
			continue
		}
		reason := s.Reasons[m]
		if strings.HasPrefix(m, "landlock") {
			reason = s.Reasons["landlock"]
		}
		missing.Missing = append(missing.Missing, m)
		missing.Reasons = append(missing.Reasons, reason)
	}
	if len(missing.Missing) > 0 && mode != Permissive {
		return nil, &missing
	}
	return use, nil
}

func has(ms []string, name string) bool {
	for _, m := range ms {
		if m == name {
			return true
		}
	}
	return false
}

func landlockABI(ms []string) int {
	for _, m := range ms {
		if n, ok := strings.CutPrefix(m, landlockPrefix); ok {
			var abi int
			fmt.Sscan(n, &abi)
			return abi
		}
	}
	return 0
}
