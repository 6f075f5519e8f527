package signing

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// GenerateKey writes a new ECDSA P-256 private key to path (PKCS#8 "PRIVATE
// KEY" PEM, mode 0600) and its public key to path+".pub" (PKIX "PUBLIC KEY"
// PEM, mode 0644), and returns a Signer for it whose public key has path as
// its Source, as LoadSigner would.
//
// Each file is written atomically: to a temporary file in the same directory,
// fsynced, then linked into place, which fails rather than replace a file
// that appeared meanwhile (on file systems without hard links it is renamed
// into place instead, after checking again that the target does not exist).
// GenerateKey refuses to overwrite: if either file exists it writes nothing
// and returns an error wrapping fs.ErrExist. If writing the public key fails,
// the private key it wrote is removed, so a retry starts clean.
func GenerateKey(path string) (*Signer, error) {
	pubPath := path + ".pub"
	for _, p := range []string{path, pubPath} {
		if err := checkAbsent(p); err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	s, err := newSigner(priv)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("generate key: marshal private key: %w", err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der})
	if err := writeFileExclusive(path, privPEM, 0o600); err != nil {
		return nil, fmt.Errorf("generate key: write private key: %w", err)
	}
	if err := writeFileExclusive(pubPath, s.pubPEM, 0o644); err != nil {
		if rmErr := os.Remove(path); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove private key written without its public key: %w", rmErr))
		}
		return nil, fmt.Errorf("generate key: write public key: %w", err)
	}
	s.pub.Source = path
	return s, nil
}

// checkAbsent returns an error wrapping fs.ErrExist if path exists, and any
// error other than "does not exist" from looking it up.
func checkAbsent(path string) error {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return fmt.Errorf("%q: %w; refusing to overwrite it: remove it or choose another path", path, fs.ErrExist)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	default:
		return err
	}
}

// writeFileExclusive atomically creates path with data and mode perm. It
// fails, leaving any existing file alone, if path exists.
func writeFileExclusive(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		// After a successful link the temporary name is still there; after
		// a rename it is gone and this fails harmlessly with ErrNotExist.
		if rmErr := os.Remove(tmp); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) && err == nil {
			err = fmt.Errorf("remove temporary file: %w", rmErr)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		_ = f.Close() // the chmod error is the one to report
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close() // the write error is the one to report
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close() // the sync error is the one to report
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%q: %w; refusing to overwrite it", path, fs.ErrExist)
		}
		// No hard links on this file system: check again, then rename.
		if err := checkAbsent(path); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	if err := syncDir(dir); err != nil {
		if rmErr := os.Remove(path); rmErr != nil {
			return errors.Join(err, rmErr)
		}
		return err
	}
	return nil
}

// syncDir fsyncs directory dir, so that a new entry in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close() // the sync error is the one to report
		return fmt.Errorf("sync directory %q: %w", dir, err)
	}
	return d.Close()
}
