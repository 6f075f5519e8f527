package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	llsyscall "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// maxLandlockABI is the newest Landlock ABI go-landlock has a
// configuration for; a newer kernel is used at this version.
const maxLandlockABI = 11

var (
	probeMu sync.Mutex
	probes  = map[*helperProgram]Support{}
)

// Probe reports which mechanisms the kernel offers this process. It starts
// the helper in each kind of namespace once per process and remembers the
// answer.
func Probe() Support { return probeFor(helper()) }

// probeFor is Probe with helper h.
func probeFor(h *helperProgram) Support {
	probeMu.Lock()
	defer probeMu.Unlock()
	s, ok := probes[h]
	if !ok {
		s = probe(h)
		probes[h] = s
	}
	return s
}

func probe(h *helperProgram) Support {
	s := Support{Reasons: map[string]string{}, Helper: h.name}
	if abi, err := llsyscall.LandlockGetABIVersion(); err != nil || abi < 1 {
		if err == nil {
			err = errors.New("ABI version 0")
		}
		s.Reasons["landlock"] = fmt.Sprintf("Landlock is not enabled: %v", err)
	} else {
		s.LandlockABI = min(abi, maxLandlockABI)
	}

	all := []string{UserNS, PIDNS, NetNS, IPCNS, MountNS}
	if err := probeHelper(h, all); err == nil {
		s.helper = true
		s.Mechanisms = append(s.Mechanisms, all...)
	} else if errors.Is(err, errNoHelper) {
		// Nothing can be applied without the helper.
		for _, m := range append(all, "landlock", Rlimits) {
			s.Reasons[m] = err.Error()
		}
		return s.sorted()
	} else {
		s.helper = true
		user := probeHelper(h, []string{UserNS})
		if user == nil {
			s.Mechanisms = append(s.Mechanisms, UserNS)
		} else {
			s.Reasons[UserNS] = user.Error()
		}
		for _, m := range []string{PIDNS, NetNS, IPCNS, MountNS} {
			try := []string{m}
			if user == nil {
				try = append(try, UserNS)
			}
			if m == MountNS && s.Has(PIDNS) {
				try = append(try, PIDNS)
			}
			if err := probeHelper(h, try); err != nil {
				s.Reasons[m] = err.Error()
			} else {
				s.Mechanisms = append(s.Mechanisms, m)
			}
		}
	}
	if s.LandlockABI > 0 {
		s.Mechanisms = append(s.Mechanisms, LandlockName(s.LandlockABI))
	}
	s.Mechanisms = append(s.Mechanisms, Rlimits)
	return s.sorted()
}

// sorted puts the mechanisms in the order wanted lists them.
func (s Support) sorted() Support {
	var out []string
	for _, m := range wanted(false, s.LandlockABI) {
		if has(s.Mechanisms, m) {
			out = append(out, m)
		}
	}
	s.Mechanisms = out
	return s
}

// errNoHelper means the program does not answer as the sandbox's helper.
var errNoHelper = errors.New("no sandbox helper answers")

// probeHelper starts the helper in the namespaces of mechs; with a mount
// namespace it mounts a tmpfs, and a proc with a PID namespace too.
func probeHelper(hp *helperProgram, mechs []string) error {
	dir, err := os.MkdirTemp("", "reconciler-sandbox-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	h := exec.Command(hp.path, childArg, stageProbe)
	h.Args[0] = "reconciler-sandbox"
	h.Env = helperEnv
	h.Dir = "/"
	var stderr bytes.Buffer
	h.Stderr = &stderr
	h.WaitDelay = time.Second
	h.SysProcAttr = sysProcAttr(mechs, os.Getuid(), os.Getgid(), 0, 0)
	done := make(chan struct{})
	timer := time.AfterFunc(10*time.Second, func() {
		select {
		case <-done:
		default:
			if h.Process != nil {
				h.Process.Kill()
			}
		}
	})
	defer timer.Stop()
	msgs, err := runHelper(h, &spec{Mechanisms: mechs, Root: dir})
	close(done)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return fmt.Errorf("clone: %v", errno)
		}
		return err
	}
	for _, m := range msgs {
		if m.Refused {
			return fmt.Errorf("%w: %s refused: %s", errNoHelper, hp.name, m.Error)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
		if m.OK {
			return nil
		}
	}
	hint := ""
	if hp == self {
		hint = ": this program must call sandbox.Init first in main (and in TestMain)"
	}
	if s := strings.TrimSpace(stderr.String()); s != "" && len(msgs) == 0 {
		return fmt.Errorf("%w%s (%s said: %s)", errNoHelper, hint, hp.name, firstLine(s))
	}
	return fmt.Errorf("%w%s", errNoHelper, hint)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// probeMain is the helper's probe stage.
func probeMain(sp *spec, status *os.File) error {
	if has(sp.Mechanisms, MountNS) {
		if err := mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
			return err
		}
		if err := mount("tmpfs", sp.Root, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=4k,mode=0755"); err != nil {
			return err
		}
		if has(sp.Mechanisms, PIDNS) {
			if err := os.Mkdir(sp.Root+"/proc", 0o555); err != nil {
				return err
			}
			if err := mount("proc", sp.Root+"/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
				return err
			}
		}
	}
	return json.NewEncoder(status).Encode(message{Stage: stageProbe, OK: true})
}
