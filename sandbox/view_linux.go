package sandbox

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// buildView makes the command's filesystem in the init stage's mount
// namespace and makes it the root: a read-only tmpfs holding read-only
// bind mounts of sp.ReadOnly, the device nodes of sp.Devices, a /proc of
// the command's PID namespace, a private /tmp (with HOME in it) and a
// read-write bind mount of the workspace at its own path. Nothing else of
// the host is reachable: not the reconciler's key, cache or origin, nor
// any other process.
func buildView(sp *spec) error {
	root := sp.Root
	if err := mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return err
	}
	if err := mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		return err
	}
	if err := os.Mkdir(root+"/tmp", 0o1777); err != nil {
		return err
	}
	opts := fmt.Sprintf("mode=1777,size=%d,uid=%d,gid=%d", sp.Limits.TmpSize, sp.UID, sp.GID)
	if err := mount("tmpfs", root+"/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return err
	}
	if err := os.Mkdir(root+sp.Home, 0o700); err != nil {
		return err
	}
	if err := os.Chown(root+sp.Home, sp.UID, sp.GID); err != nil {
		return err
	}
	if err := os.Mkdir(root+"/dev", 0o755); err != nil {
		return err
	}
	for _, d := range sp.Devices {
		if _, err := os.Stat(d); err != nil {
			continue
		}
		if err := bindFile(d, root+d); err != nil {
			return err
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, root+"/dev/"+name); err != nil {
			return err
		}
	}
	if err := os.Mkdir(root+"/proc", 0o555); err != nil {
		return err
	}
	if err := mount("proc", root+"/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	for _, p := range sp.ReadOnly {
		if err := expose(root, p); err != nil {
			return err
		}
	}
	// Exposed paths and the workspace after /tmp, where they may lie.
	if err := os.MkdirAll(root+sp.Dir, 0o755); err != nil {
		return err
	}
	if err := mount(sp.Dir, root+sp.Dir, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	if err := remount(root+sp.Dir, unix.MS_NOSUID|unix.MS_NODEV); err != nil {
		return err
	}
	if len(sp.Hide) > 0 {
		empty := root + "/.hidden"
		if err := os.WriteFile(empty, nil, 0); err != nil {
			return err
		}
		for _, h := range sp.Hide {
			if err := cover(root+h, empty); err != nil {
				return fmt.Errorf("hide %s: %w", h, err)
			}
		}
	}
	if err := remount(root, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV); err != nil {
		return err
	}
	if err := unix.Chdir(root); err != nil {
		return err
	}
	// The old root ends up on top of the new one, and is detached.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's root: %w", err)
	}
	return unix.Chdir("/")
}

// expose puts host path p into the view under root, read-only: a symbolic
// link as itself, a directory or file as a bind mount.
func expose(root, p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil
	}
	target := root + p
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		link, err := os.Readlink(p)
		if err != nil {
			return err
		}
		return os.Symlink(link, target)
	case fi.IsDir():
		if err := os.Mkdir(target, 0o755); err != nil && !os.IsExist(err) {
			return err
		}
		if err := mount(p, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return err
		}
	default:
		if err := bindFile(p, target); err != nil {
			return err
		}
	}
	return remount(target, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV)
}

// bindFile bind-mounts the file src on target, which it creates.
func bindFile(src, target string) error {
	fd, err := unix.Open(target, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return &os.PathError{Op: "create", Path: target, Err: err}
	}
	unix.Close(fd)
	return mount(src, target, "", unix.MS_BIND, "")
}

// cover mounts an empty read-only directory or file over target.
func cover(target, emptyFile string) error {
	fi, err := os.Lstat(target)
	if err != nil {
		return nil
	}
	if fi.IsDir() {
		if err := mount("tmpfs", target, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,mode=0"); err != nil {
			return err
		}
		return nil
	}
	if err := mount(emptyFile, target, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	return remount(target, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC)
}

// remount changes a bind mount's flags to flags, keeping those the kernel
// locks in a user namespace (a mount inherited from the host keeps its
// nosuid, nodev, noexec and atime flags).
func remount(target string, flags uintptr) error {
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", target, err)
	}
	// ST_* and MS_* have the same values.
	keep := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME)
	return mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|flags|keep, "")
}

func mount(src, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(src, target, fstype, flags, data); err != nil {
		what := src
		if what == "" {
			what = "remount"
		}
		return fmt.Errorf("mount %s on %s: %w", what, target, err)
	}
	return nil
}
