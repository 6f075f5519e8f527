// Package atomicfile writes a file so that a crash at any point leaves
// either the old content or the new one, never a mix: a temporary file in
// the same directory, fsync, rename over the target, fsync of the
// directory. The ledger's saved state, the daemon's trigger queue and the
// notifier's dedup state are written this way.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, creating its directory (0700) if needed.
// The file is readable by its owner only (os.CreateTemp's 0600).
func Write(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
