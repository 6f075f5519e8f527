package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The helper is a program of its own when one is installed: the
// reconciler is a large program (client-go, sigstore, gitleaks) whose start
// costs about 20 ms of CPU, paid once per sandboxed command, while
// reconciler-sandbox (cmd/reconciler-sandbox) links only this package and
// starts in about 2 ms. With 100 agents in a pass on two cores that is the
// difference between 2.7 and 1.9 s. Without one, this program is its own
// helper (it calls Init first in main), as before.
//
// The helper is trusted as this program is: it runs outside the command's
// confinement and builds it. So it is only ever taken from where this
// program's executable is, or from a path the operator names, and only
// when no one but its owner (root or this process's user) can write it or
// its directory. It is opened once and executed through that descriptor,
// so that replacing the file afterwards changes nothing.

// HelperName is the helper program's file name, looked for in the
// directory of this program's executable.
const HelperName = "reconciler-sandbox"

// protocol names the spec and message formats the helper and Run share:
// a helper speaking another refuses to run. Change it with either format.
// (A string so that a test can build a helper speaking another one.)
var protocol = "1"

// helperProgram is the program Run starts as the helper.
type helperProgram struct {
	// path is what is executed: /proc/self/exe or /proc/self/fd/N.
	path string
	// name is what status and errors call it.
	name string
	file *os.File
}

var (
	helperMu     sync.Mutex
	helperChosen *helperProgram
)

// UseHelper makes Run start the program at path as the sandbox's helper
// (--sandbox-helper); "" goes back to the default: HelperName next to this
// program's executable when it is there and answers, else this program
// itself. The program must be a regular executable file that only its
// owner, root or this process's user, can change, and must answer as the
// helper of this build: UseHelper starts it once to make sure. The file
// replaced stays open, since a run may be starting it.
func UseHelper(path string) error {
	if path == "" {
		helperMu.Lock()
		helperChosen = nil
		helperMu.Unlock()
		return nil
	}
	h, err := openHelper(path)
	if err != nil {
		return err
	}
	if sup := probeFor(h); !sup.helper {
		h.file.Close()
		return fmt.Errorf("sandbox helper %s: %s", h.name, sup.Reasons[UserNS])
	}
	helperMu.Lock()
	helperChosen = h
	helperMu.Unlock()
	return nil
}

// helper returns the program Run starts, choosing the default the first
// time.
func helper() *helperProgram {
	helperMu.Lock()
	defer helperMu.Unlock()
	if helperChosen == nil {
		helperChosen = defaultHelper()
	}
	return helperChosen
}

var self = &helperProgram{path: "/proc/self/exe", name: "this program"}

func defaultHelper() *helperProgram {
	exe, err := os.Executable()
	if err != nil {
		return self
	}
	p := filepath.Join(filepath.Dir(exe), HelperName)
	if _, err := os.Lstat(p); err != nil {
		return self
	}
	h, err := openHelper(p)
	if err == nil {
		if sup := probeFor(h); !sup.helper {
			h.file.Close()
			err = errors.New(sup.Reasons[UserNS])
		}
	}
	if err != nil {
		// Installed but unsafe, unreadable or of another build: this
		// program is its own helper; say so once.
		fmt.Fprintf(os.Stderr, "sandbox: not using %s, this program is its own helper: %v\n", p, err)
		return self
	}
	return h
}

// openHelper opens path for execution after checking who can change it.
func openHelper(path string) (*helperProgram, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sandbox helper %s: %w", path, err)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, fmt.Errorf("sandbox helper %s: %w", path, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("sandbox helper: %w", err)
	}
	fail := func(format string, args ...any) (*helperProgram, error) {
		f.Close()
		return nil, fmt.Errorf("sandbox helper %s: "+format, append([]any{abs}, args...)...)
	}
	fi, err := f.Stat()
	if err != nil {
		return fail("%v", err)
	}
	if !fi.Mode().IsRegular() {
		return fail("not a regular file")
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fail("not executable")
	}
	if err := onlyOwnerWrites(fi); err != nil {
		return fail("%v", err)
	}
	di, err := os.Stat(filepath.Dir(abs))
	if err != nil {
		return fail("%v", err)
	}
	if err := onlyOwnerWrites(di); err != nil && di.Mode()&os.ModeSticky == 0 {
		return fail("its directory: %v", err)
	}
	// The kernel resolves /proc/self/fd/N in the child after it has set
	// up the helper's descriptors 0 to 4: N must lie above them.
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, minHelperFD)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("sandbox helper %s: %w", abs, err)
	}
	return &helperProgram{path: fmt.Sprintf("/proc/self/fd/%d", fd), name: abs, file: os.NewFile(uintptr(fd), abs)}, nil
}

// minHelperFD is the lowest descriptor the helper is kept open on: above
// those a child is given (stdio, the spec and the status).
const minHelperFD = 10

// onlyOwnerWrites refuses a file others may write, or owned by someone
// other than root and this process's user.
func onlyOwnerWrites(fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("cannot read its owner")
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("owned by uid %d, neither root nor this process's user", st.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("writable by its group or others (mode %s)", fi.Mode().Perm())
	}
	return nil
}

// buildRevision is the VCS revision this program was built from, with
// "+modified" for a dirty tree; "" when the build did not record it (go
// test, -buildvcs=false).
var buildRevision = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+modified"
			}
		}
	}
	if rev == "" {
		return ""
	}
	return rev + modified
})

// checkPeer is the helper's check that it was started by a program it
// speaks with: the same protocol, and the same revision when both builds
// recorded one (so that an old helper left next to a new reconciler is
// refused rather than trusted).
func checkPeer(sp *spec) error {
	if sp.Protocol != protocol {
		return fmt.Errorf("the sandbox helper speaks protocol %q, the reconciler %q: install the reconciler-sandbox of the same release", protocol, sp.Protocol)
	}
	if mine := buildRevision(); mine != "" && sp.Revision != "" && mine != sp.Revision {
		return fmt.Errorf("the sandbox helper was built from revision %s, the reconciler from %s: install the reconciler-sandbox of the same build", mine, sp.Revision)
	}
	return nil
}
