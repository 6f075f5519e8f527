package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsyscall "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// Init runs the sandbox's helper when Run started this process as one, and
// then never returns; otherwise it returns at once. Call it first thing in
// main, and in TestMain of every package whose tests run sandboxed
// commands.
func Init() {
	if len(os.Args) != 3 || os.Args[1] != childArg {
		return
	}
	os.Exit(helperMain(os.Args[2]))
}

// The helper's init stage is started by Run in the new namespaces, as root
// in its user namespace: it builds the view, starts the command and reaps
// every process until that one ends, then reports its status; being PID 1
// of the namespace, its exit kills every process left. With a PID
// namespace and a view it starts the command itself (see start_linux.go).
// Otherwise, or when the kernel refuses to trace the command, it starts
// the exec stage, this program once more, which applies rlimits, Landlock
// and the command's user to itself, gives up every capability and
// executes the command, so that the command is the exec stage's process.
func helperMain(stage string) int {
	// Neither the spec nor the status may reach the command.
	syscall.CloseOnExec(3)
	syscall.CloseOnExec(4)
	status := os.NewFile(4, "status")
	specFile := os.NewFile(3, "spec")
	var sp spec
	err := json.NewDecoder(specFile).Decode(&sp)
	specFile.Close()
	if err == nil {
		if err := checkPeer(&sp); err != nil {
			json.NewEncoder(status).Encode(message{Stage: stage, Error: err.Error(), Refused: true})
			return 125
		}
	}
	if err == nil {
		switch stage {
		case stageInit:
			return initMain(&sp, status)
		case stageSpawn:
			return spawnMain(&sp, status)
		case stageProbe:
			err = probeMain(&sp, status)
		case stageExec:
			err = execMain(&sp)
		default:
			err = fmt.Errorf("unknown stage %q", stage)
		}
	} else {
		err = fmt.Errorf("read the spec: %w", err)
	}
	if err != nil {
		json.NewEncoder(status).Encode(message{Stage: stage, Error: err.Error()})
		return 125
	}
	return 0
}

// spawnMain is the spawn stage: it starts the init stage in the new
// namespaces, handing it its own standard streams and status file, and
// ends as the init does. Its parent-death signal, and the init's from
// this process, end the run when the reconciler's thread ends or kills it.
func spawnMain(sp *spec, status *os.File) int {
	h := exec.Command("/proc/self/exe", childArg, stageInit)
	h.Args[0] = "reconciler-sandbox"
	h.Env = helperEnv
	h.Dir = "/"
	h.Stdin, h.Stdout, h.Stderr = os.Stdin, os.Stdout, os.Stderr
	h.SysProcAttr = sysProcAttr(sp.Mechanisms, os.Getuid(), os.Getgid(), sp.UID, sp.GID)
	specR, specW, err := os.Pipe()
	if err != nil {
		json.NewEncoder(status).Encode(message{Stage: stageSpawn, Error: err.Error()})
		return 125
	}
	h.ExtraFiles = []*os.File{specR, status}
	started := make(chan error, 1)
	ended := make(chan error, 1)
	go func() {
		// The init's parent-death signal follows this thread.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := h.Start()
		specR.Close()
		started <- err
		if err != nil {
			specW.Close()
			return
		}
		json.NewEncoder(specW).Encode(sp)
		specW.Close()
		ended <- h.Wait()
	}()
	if err := <-started; err != nil {
		json.NewEncoder(status).Encode(message{Stage: stageSpawn, Error: fmt.Sprintf("start the init: %v", err)})
		return 125
	}
	status.Close()
	var exit *exec.ExitError
	if err := <-ended; errors.As(err, &exit) {
		return exit.ExitCode()
	} else if err != nil {
		return 125
	}
	return 0
}

// initMain is the init stage.
func initMain(sp *spec, status *os.File) int {
	fail := func(err error) int {
		json.NewEncoder(status).Encode(message{Stage: stageInit, Error: err.Error()})
		return 125
	}
	if has(sp.Mechanisms, MountNS) {
		if err := buildView(sp); err != nil {
			return fail(err)
		}
	}
	pidns := has(sp.Mechanisms, PIDNS)
	if !pidns {
		// Orphans come to this process, which kills them at the end.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return fail(fmt.Errorf("become a subreaper: %w", err))
		}
	}
	// Neither ptrace nor /proc opens this process's memory or environment
	// to the command, which has no capabilities; nor may a signal end it.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fail(fmt.Errorf("make the init undumpable: %w", err))
	}
	guardSignals()
	if direct(sp) {
		st := runDirect(sp)
		if !errors.Is(st.err, errNotTraced) {
			if st.err != nil {
				return fail(st.err)
			}
			json.NewEncoder(status).Encode(message{Stage: stageInit, Exited: true, Code: st.code, Signal: st.sig})
			return 0
		}
	}
	raw, err := json.Marshal(sp)
	if err != nil {
		return fail(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	p, err := os.StartProcess("/proc/self/exe", []string{"reconciler-sandbox", childArg, stageExec}, &os.ProcAttr{
		Dir: sp.Dir, Env: helperEnv,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr, pr, status},
		Sys:   &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL},
	})
	pr.Close()
	if err != nil {
		pw.Close()
		return fail(fmt.Errorf("start the command: %w", err))
	}
	pw.Write(raw)
	pw.Close()
	code, sig := reap(p.Pid)
	if !pidns {
		killOrphans(p.Pid)
	}
	json.NewEncoder(status).Encode(message{Stage: stageInit, Exited: true, Code: code, Signal: sig})
	return 0
}

// reap waits for every child until pid ends and returns its status.
func reap(pid int) (code, sig int) {
	for {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 125, 0
		}
		if wpid == pid {
			if ws.Signaled() {
				return 0, int(ws.Signal())
			}
			return ws.ExitStatus(), 0
		}
	}
}

// killOrphans kills the command's process group and every process that
// came to this subreaper, until none is left (without a PID namespace).
func killOrphans(pgid int) {
	syscall.Kill(-pgid, syscall.SIGKILL)
	for range 1000 {
		kids := children()
		if len(kids) == 0 {
			return
		}
		for _, k := range kids {
			syscall.Kill(k, syscall.SIGKILL)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// children lists this process's children.
func children() []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	var out []int
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// Secure bits (linux/securebits.h): after exec, uid 0 gains no
// capabilities, a change of uid clears them, none can be made ambient, and
// none of this can be undone.
const (
	secNoRoot                  = 1 << 0
	secNoRootLocked            = 1 << 1
	secNoSetuidFixupLocked     = 1 << 3
	secKeepCapsLocked          = 1 << 5
	secNoCapAmbientRaise       = 1 << 6
	secNoCapAmbientRaiseLocked = 1 << 7
)

// execMain is the exec stage. It returns only on failure.
func execMain(sp *spec) error {
	// Capabilities, securebits, no_new_privs and Landlock are per thread:
	// all are set on this one, which executes the command.
	runtime.LockOSThread()
	if err := confine(sp); err != nil {
		return err
	}
	if has(sp.Mechanisms, Rlimits) {
		if err := setRlimits(sp.Limits, false); err != nil {
			return err
		}
	}
	if sp.GID != os.Getgid() {
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setresgid(sp.GID, sp.GID, sp.GID); err != nil {
			return fmt.Errorf("setresgid %d: %w", sp.GID, err)
		}
	}
	if sp.UID != os.Getuid() {
		if err := syscall.Setresuid(sp.UID, sp.UID, sp.UID); err != nil {
			return fmt.Errorf("setresuid %d: %w", sp.UID, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	var none [2]unix.CapUserData
	if err := unix.Capset(&unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}, &none[0]); err != nil {
		return fmt.Errorf("drop capabilities: %w", err)
	}
	if has(sp.Mechanisms, Rlimits) {
		// Last: the Go runtime may need address space until exec.
		if err := setRlimits(sp.Limits, true); err != nil {
			return err
		}
	}
	err := syscall.Exec(sp.Path, sp.Args, sp.Env)
	return fmt.Errorf("exec %s: %w", sp.Path, err)
}

// confine sets on this thread what the command inherits from it through
// fork and execve: secure bits that give uid 0 no capabilities after
// execve and keep none across a change of uid, an empty bounding set,
// no_new_privs and Landlock.
func confine(sp *spec) error {
	if err := unix.Prctl(unix.PR_SET_SECUREBITS, secNoRoot|secNoRootLocked|secNoSetuidFixupLocked|secKeepCapsLocked|secNoCapAmbientRaise|secNoCapAmbientRaiseLocked, 0, 0, 0); err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("set securebits: %w", err)
	}
	for c := 0; c < 64; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); errors.Is(err, unix.EINVAL) {
			break
		} else if err != nil && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if abi := landlockABI(sp.Mechanisms); abi > 0 {
		return restrict(sp, abi)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}

// rlimit is a resource limit to set.
type rlimit struct {
	name     string
	res      int
	cur, max uint64
}

// rlimits are the resource limits of l: RLIMIT_AS alone with addressSpace,
// else the others.
func rlimits(l Limits, addressSpace bool) []rlimit {
	if addressSpace {
		return []rlimit{{"RLIMIT_AS", unix.RLIMIT_AS, uint64(l.AddressSpace), uint64(l.AddressSpace)}}
	}
	cpu := uint64(math.Ceil(l.CPU.Seconds()))
	return []rlimit{
		{"RLIMIT_CPU", unix.RLIMIT_CPU, cpu, cpu + 1},
		{"RLIMIT_FSIZE", unix.RLIMIT_FSIZE, uint64(l.FileSize), uint64(l.FileSize)},
		{"RLIMIT_NPROC", unix.RLIMIT_NPROC, uint64(l.Processes), uint64(l.Processes)},
		{"RLIMIT_NOFILE", unix.RLIMIT_NOFILE, uint64(l.OpenFiles), uint64(l.OpenFiles)},
		{"RLIMIT_CORE", unix.RLIMIT_CORE, 0, 0},
	}
}

// setRlimits lowers the limits of this process to l (never raising one).
// addressSpace sets RLIMIT_AS alone, the others without it.
func setRlimits(l Limits, addressSpace bool) error {
	for _, r := range rlimits(l, addressSpace) {
		var old syscall.Rlimit
		if err := syscall.Getrlimit(r.res, &old); err != nil {
			return fmt.Errorf("get %s: %w", r.name, err)
		}
		lim := syscall.Rlimit{Cur: min(r.cur, old.Max), Max: min(r.max, old.Max)}
		if err := syscall.Setrlimit(r.res, &lim); err != nil {
			return fmt.Errorf("set %s: %w", r.name, err)
		}
	}
	return nil
}

// landlockConfigs are go-landlock's configurations by ABI version.
var landlockConfigs = []landlock.Config{1: landlock.V1, 2: landlock.V2, 3: landlock.V3, 4: landlock.V4, 5: landlock.V5, 6: landlock.V6, 7: landlock.V7, 8: landlock.V8, 9: landlock.V9, 10: landlock.V10, 11: landlock.V11}

// restrict applies Landlock at ABI version abi to this thread: read-only
// access to the system's paths (and the view's /proc), read-write access
// to the workspace and the private directories, and no TCP bind or
// connect unless the command may use the network. It is the strict
// configuration of that version: every access right the version knows is
// handled, and a rule the kernel cannot enforce is an error.
func restrict(sp *spec, abi int) error {
	if abi >= len(landlockConfigs) {
		abi = len(landlockConfigs) - 1
	}
	cfg := landlockConfigs[abi]
	if sp.Network {
		cfg.HandledAccessNet = 0
	}
	var roDirs, roFiles, rwFiles []string
	for _, p := range sp.ReadOnly {
		fi, err := os.Stat(p)
		if err != nil {
			continue // a dangling symbolic link
		}
		if fi.IsDir() {
			roDirs = append(roDirs, p)
		} else {
			roFiles = append(roFiles, p)
		}
	}
	if has(sp.Mechanisms, MountNS) {
		roDirs = append(roDirs, "/proc")
	}
	rwDirs := []string{sp.Dir, sp.Tmp}
	if !within(sp.Home, sp.Tmp) {
		rwDirs = append(rwDirs, sp.Home)
	}
	for i, d := range sp.Devices {
		if _, err := os.Stat(d); err != nil {
			continue
		}
		if i < 3 {
			rwFiles = append(rwFiles, d)
		} else {
			roFiles = append(roFiles, d)
		}
	}
	var rules []landlock.Rule
	if has(sp.Mechanisms, MountNS) {
		// Listing directories of the view reveals nothing it does not
		// hold for the command anyway.
		rules = append(rules, landlock.PathAccess(llsyscall.AccessFSReadDir, "/"))
	}
	for _, r := range []struct {
		paths []string
		rule  func(...string) landlock.FSRule
	}{{roDirs, landlock.RODirs}, {roFiles, landlock.ROFiles}, {rwDirs, landlock.RWDirs}, {rwFiles, landlock.RWFiles}} {
		if len(r.paths) > 0 {
			rules = append(rules, r.rule(r.paths...))
		}
	}
	fd, flags, err := cfg.NewRulesetFD(rules...)
	if err != nil {
		return fmt.Errorf("landlock: %w", err)
	}
	if fd < 0 {
		return errors.New("landlock: nothing to enforce")
	}
	defer unix.Close(fd)
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	if err := llsyscall.LandlockRestrictSelf(fd, flags); err != nil {
		return fmt.Errorf("landlock_restrict_self: %w", err)
	}
	return nil
}
