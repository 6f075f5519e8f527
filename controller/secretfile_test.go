package controller

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSecretFile: the webhook secret follows its file: refused while it is
// missing, open to other users or empty, and the new value once it changes.
func TestSecretFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	f := &SecretFile{Path: path}
	if !f.Get().IsZero() {
		t.Fatal("a missing file gave a secret")
	}
	write := func(s string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		// A later modification time than the last write, whatever the
		// file system's resolution.
		later := time.Now().Add(time.Duration(len(s)) * time.Second)
		if err := os.Chtimes(path, later, later); err != nil {
			t.Fatal(err)
		}
	}
	write("first\n", 0o600)
	if s := f.Get(); !s.Equal("first") {
		t.Fatal("the written secret is not in force")
	}
	write("second-value\n", 0o600)
	if s := f.Get(); !s.Equal("second-value") || s.Equal("first") {
		t.Fatal("the changed secret is not in force")
	}
	write("second-value-x\n", 0o644)
	if !f.Get().IsZero() {
		t.Fatal("a secret readable by other users is in force")
	}
	write("\n", 0o600)
	if !f.Get().IsZero() {
		t.Fatal("an empty secret is in force")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if !f.Get().IsZero() {
		t.Fatal("a removed secret is still in force")
	}
}
