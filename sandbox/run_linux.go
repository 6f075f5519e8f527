package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// SystemPaths are the host paths every command may read: the system's
// programs and libraries, and the files of /etc that programs such as sh,
// sed, awk and git need. /etc as a whole is not exposed: it holds host
// keys, shadow passwords and credentials of package managers. Paths that
// do not exist are skipped.
var SystemPaths = []string{
	"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
	"/etc/alternatives", "/etc/ca-certificates", "/etc/ssl/certs", "/etc/terminfo",
	"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
	"/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/host.conf",
	"/etc/resolv.conf", "/etc/gai.conf", "/etc/services", "/etc/protocols", "/etc/networks",
	"/etc/localtime", "/etc/timezone", "/etc/mime.types", "/etc/magic", "/etc/magic.mime",
	"/etc/os-release", "/etc/debian_version", "/etc/shells", "/etc/inputrc", "/etc/locale.alias",
	// Where /etc/resolv.conf points with systemd-resolved.
	"/run/systemd/resolve",
}

// devices are the device nodes of the view; the first three are writable.
var devices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}

// childArg, as argv[1], makes a program that calls Init the sandbox's
// helper. It looks like a flag so that a test binary that forgot to call
// Init stops at once on an unknown flag instead of running its tests.
const childArg = "-reconciler-sandbox-helper"

// helperEnv is the helper's whole environment. Its heap is what this
// program's package initialization leaves: the garbage collector would
// only slow its start (by a quarter of its CPU time for the reconciler),
// so it runs only should the heap reach 64 MiB.
var helperEnv = []string{"GOGC=off", "GOMEMLIMIT=64MiB"}

// Helper stages, argv[2].
const (
	stageInit  = "init"
	stageExec  = "exec"
	stageProbe = "probe"
	stageSpawn = "spawn"
)

// spec is what the helper is told, as JSON on file descriptor 3.
type spec struct {
	Mechanisms []string `json:"mechanisms"`
	// Root is the host directory the view is built on (with a mount
	// namespace); the helper mounts a tmpfs there.
	Root string `json:"root,omitempty"`
	// Dir is the workspace (read-write), Home and Tmp private
	// directories: in the view /tmp/home and /tmp, else on the host.
	Dir      string   `json:"dir"`
	Home     string   `json:"home"`
	Tmp      string   `json:"tmp"`
	ReadOnly []string `json:"read_only"`
	Devices  []string `json:"devices"`
	// Hide are paths inside exposed directories to cover up.
	Hide []string `json:"hide,omitempty"`
	// UID and GID are the ids the command runs as, in its user namespace
	// when it has one; the helper runs as 0.
	UID     int      `json:"uid"`
	GID     int      `json:"gid"`
	Limits  Limits   `json:"limits"`
	Network bool     `json:"network"`
	Path    string   `json:"path"`
	Args    []string `json:"args"`
	Env     []string `json:"env"`
	// ExecStage makes the init start the command through the exec stage
	// even when it could start it itself (tests of that path).
	ExecStage bool `json:"exec_stage,omitempty"`
	// Protocol and Revision are the starting program's (see checkPeer).
	Protocol string `json:"protocol"`
	Revision string `json:"revision,omitempty"`
}

// message is what the helper reports, as JSON on file descriptor 4.
type message struct {
	Stage  string `json:"stage,omitempty"`
	Error  string `json:"error,omitempty"`
	OK     bool   `json:"ok,omitempty"`
	Exited bool   `json:"exited,omitempty"`
	Code   int    `json:"code,omitempty"`
	Signal int    `json:"signal,omitempty"`
	// Refused: the helper does not speak with the program that started
	// it (see checkPeer).
	Refused bool `json:"refused,omitempty"`
}

// forceExecStage makes every run start its command through the exec
// stage; tests set it to cover that path.
var forceExecStage bool

// nobody is the default user of commands started by root.
const nobody = 65534

// Run runs cmd confined and returns the mechanisms that were in force. An
// error is an *UnavailableError (Strict mode, a mechanism is missing), an
// *ExitError (the command failed), the context's error (it ended first: the
// command and everything it started were killed) or a failure to set up
// the sandbox. The mechanisms are returned whenever the command ran.
func (c Config) Run(ctx context.Context, cmd Command) ([]string, error) {
	if cmd.Path == "" || len(cmd.Args) == 0 {
		return nil, errors.New("sandbox: no command")
	}
	hp := helper()
	sup := probeFor(hp)
	mechs, err := plan(c.Mode, sup, cmd.Network)
	if err != nil {
		return nil, err
	}
	if !sup.helper {
		// Permissive, and this program cannot confine anything.
		return []string{}, runUnconfined(ctx, cmd)
	}
	if !has(mechs, PIDNS) {
		// The view needs a /proc of the command's own.
		mechs = remove(mechs, MountNS)
	}
	lim := cmd.Limits.withDefaults()
	dir, err := filepath.Abs(cmd.Dir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox: workspace: %w", err)
	}
	view := has(mechs, MountNS)

	// With a view, priv is where it is built; else it holds HOME and
	// TMPDIR, in the system's temporary directory so that another user
	// can reach them.
	priv, err := os.MkdirTemp("", "reconciler-sandbox-")
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	defer os.RemoveAll(priv)

	sp := spec{
		Mechanisms: mechs, Dir: dir, Devices: devices, Limits: lim, Network: cmd.Network,
		Path: cmd.Path, Args: cmd.Args, UID: 0, GID: 0, ExecStage: forceExecStage,
	}
	ro := append(append([]string{}, SystemPaths...), c.ReadOnly...)
	for _, p := range ro {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("sandbox: read-only path %q is not absolute", p)
		}
		if _, err := os.Lstat(p); err == nil {
			sp.ReadOnly = append(sp.ReadOnly, filepath.Clean(p))
		}
	}
	if sp.Hide, err = hidden(c.Hide, sp.ReadOnly, dir, view); err != nil {
		return nil, err
	}
	if view {
		sp.Root, sp.Home, sp.Tmp = priv, "/tmp/home", "/tmp"
	} else {
		sp.Home, sp.Tmp = filepath.Join(priv, "home"), filepath.Join(priv, "tmp")
		for _, d := range []string{sp.Home, sp.Tmp} {
			if err := os.Mkdir(d, 0o700); err != nil {
				return nil, fmt.Errorf("sandbox: %w", err)
			}
		}
	}
	sp.Env = append(withoutVars(cmd.Env, "HOME", "TMPDIR"), "HOME="+sp.Home, "TMPDIR="+sp.Tmp)

	// Root's commands run as another user, whose workspace it is for the
	// run: the kernel does not hold root to RLIMIT_NPROC, and file
	// permissions then protect what root alone may read.
	uid, gid := os.Getuid(), os.Getgid()
	if uid != 0 && !has(mechs, UserNS) {
		sp.UID, sp.GID = uid, gid
	}
	if uid == 0 {
		sp.UID, sp.GID = nobody, nobody
		if c.UID > 0 {
			sp.UID = c.UID
		}
		if c.GID > 0 {
			sp.GID = c.GID
		}
		give := []string{dir}
		if !view {
			give = append(give, priv)
		}
		for _, d := range give {
			if err := chownTree(d, -1, sp.UID, sp.GID); err != nil {
				return nil, fmt.Errorf("sandbox: give the workspace to uid %d: %w", sp.UID, err)
			}
		}
		defer chownTree(dir, sp.UID, uid, gid)
	}

	// A separate helper is started without namespaces and starts the
	// init in them itself (the spawn stage). Go cannot vfork a child that
	// gets a new user namespace, so starting the init from here would
	// copy this process's page tables, whose cost grows with its memory:
	// 2.4 ms a start with a 10 MB heap, 24 ms with 300 MB, 74 ms with
	// 1 GB, against about 1 ms for a vfork at any size.
	stage, attr := stageInit, sysProcAttr(mechs, uid, gid, sp.UID, sp.GID)
	if hp != self {
		stage, attr = stageSpawn, &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	h := exec.CommandContext(ctx, hp.path, childArg, stage)
	h.Args[0] = "reconciler-sandbox"
	h.Env = helperEnv
	h.Dir = "/"
	h.Stdin, h.Stdout, h.Stderr = cmd.Stdin, cmd.Stdout, cmd.Stderr
	h.WaitDelay = 2 * time.Second
	h.SysProcAttr = attr
	msgs, err := runHelper(h, &sp)
	if err != nil {
		return nil, fmt.Errorf("sandbox: start: %w", err)
	}
	var exited *message
	for i := range msgs {
		m := &msgs[i]
		if m.Error != "" {
			return nil, fmt.Errorf("sandbox: set up (%s): %s", m.Stage, m.Error)
		}
		if m.Exited {
			exited = m
		}
	}
	if err := ctx.Err(); err != nil {
		return mechs, err
	}
	if exited == nil {
		return mechs, fmt.Errorf("sandbox: the helper ended without reporting the command's status (%v)", h.ProcessState)
	}
	if exited.Code != 0 || exited.Signal != 0 {
		return mechs, exitError(exited.Code, syscall.Signal(exited.Signal), lim)
	}
	return mechs, nil
}

// runHelper starts the helper, hands it sp and returns its messages once it
// has ended. The helper is started and waited for on one locked OS thread:
// its parent-death signal fires when the thread that started it ends.
func runHelper(h *exec.Cmd, sp *spec) ([]message, error) {
	sp.Protocol, sp.Revision = protocol, buildRevision()
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		specR.Close()
		specW.Close()
		return nil, err
	}
	h.ExtraFiles = []*os.File{specR, statusW}
	var msgs []message
	read := make(chan struct{})
	go func() {
		defer close(read)
		dec := json.NewDecoder(statusR)
		for {
			var m message
			if err := dec.Decode(&m); err != nil {
				io.Copy(io.Discard, statusR)
				return
			}
			msgs = append(msgs, m)
		}
	}()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := h.Start()
		specR.Close()
		statusW.Close()
		if err != nil {
			specW.Close()
			errc <- err
			return
		}
		go func() {
			json.NewEncoder(specW).Encode(sp)
			specW.Close()
		}()
		h.Wait()
		errc <- nil
	}()
	err = <-errc
	<-read
	statusR.Close()
	return msgs, err
}

// sysProcAttr returns the helper's namespaces and id mappings: the caller
// is root in the new user namespace, and the command's user (when it is
// another) is mapped to itself.
func sysProcAttr(mechs []string, uid, gid, cuid, cgid int) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	for _, f := range []struct {
		name string
		flag uintptr
	}{{UserNS, syscall.CLONE_NEWUSER}, {PIDNS, syscall.CLONE_NEWPID}, {NetNS, syscall.CLONE_NEWNET}, {IPCNS, syscall.CLONE_NEWIPC}, {MountNS, syscall.CLONE_NEWNS}} {
		if has(mechs, f.name) {
			a.Cloneflags |= f.flag
		}
	}
	if has(mechs, UserNS) {
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
		if uid == 0 && cuid != 0 {
			a.UidMappings = append(a.UidMappings, syscall.SysProcIDMap{ContainerID: cuid, HostID: cuid, Size: 1})
			a.GidMappings = append(a.GidMappings, syscall.SysProcIDMap{ContainerID: cgid, HostID: cgid, Size: 1})
			a.GidMappingsEnableSetgroups = true
		}
	}
	return a
}

// hidden returns the paths of hide that lie inside what the command sees
// (ro or dir), to be covered up in the view. Without a view they cannot be
// and the run fails.
func hidden(hide, ro []string, dir string, view bool) ([]string, error) {
	var exposed []string
	for _, p := range append(append([]string{}, ro...), dir) {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			exposed = append(exposed, r)
		}
	}
	var out []string
	for _, h := range hide {
		if h == "" {
			continue
		}
		abs, err := filepath.Abs(h)
		if err != nil {
			return nil, fmt.Errorf("sandbox: hide %q: %w", h, err)
		}
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			abs = r
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("sandbox: hide %q: %w", h, err)
		} else {
			continue // nothing to see
		}
		for _, e := range exposed {
			if within(abs, e) {
				if !view {
					return nil, fmt.Errorf("sandbox: %q must be hidden from agents but is inside %q, which they read, and there is no mount namespace to cover it", h, e)
				}
				if abs == dir || within(dir, abs) {
					return nil, fmt.Errorf("sandbox: %q must be hidden from agents but holds their workspace %q", h, dir)
				}
				out = append(out, abs)
				break
			}
		}
	}
	return out, nil
}

// within reports whether p is base or inside it.
func within(p, base string) bool {
	return p == base || strings.HasPrefix(p, strings.TrimSuffix(base, "/")+"/")
}

// chownTree gives every file under dir owned by from (-1: any) to uid:gid.
func chownTree(dir string, from, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if from >= 0 {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != from {
				return nil
			}
		}
		return os.Lchown(p, uid, gid)
	})
}

func withoutVars(env []string, names ...string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || k == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

func remove(ms []string, name string) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		if m != name {
			out = append(out, m)
		}
	}
	return out
}

// runUnconfined runs cmd as a plain child in its own process group, which
// is killed at the end: what Permissive mode does when nothing else is
// available.
func runUnconfined(ctx context.Context, cmd Command) error {
	priv, err := os.MkdirTemp("", "reconciler-home-")
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	defer os.RemoveAll(priv)
	h := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	h.Args = cmd.Args
	h.Dir = cmd.Dir
	h.Env = append(withoutVars(cmd.Env, "HOME", "TMPDIR"), "HOME="+priv, "TMPDIR="+priv)
	h.Stdin, h.Stdout, h.Stderr = cmd.Stdin, cmd.Stdout, cmd.Stderr
	h.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	h.Cancel = func() error { return syscall.Kill(-h.Process.Pid, syscall.SIGKILL) }
	h.WaitDelay = 2 * time.Second
	err = h.Run()
	if h.Process != nil {
		syscall.Kill(-h.Process.Pid, syscall.SIGKILL)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return exitError(0, ws.Signal(), cmd.Limits.withDefaults())
		}
		return exitError(ws.ExitStatus(), 0, cmd.Limits.withDefaults())
	}
	return err
}
