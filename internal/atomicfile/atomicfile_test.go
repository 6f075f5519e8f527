package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state")
	for _, data := range []string{"one", "two, longer"} {
		if err := Write(path, []byte(data)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != data {
			t.Fatalf("read %q, %v; want %q", got, err, data)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode(), err)
	}
	if es, _ := os.ReadDir(filepath.Dir(path)); len(es) != 1 {
		t.Fatalf("left behind: %v", es)
	}
	// A directory in the way: the write fails and the temporary file is
	// removed.
	bad := filepath.Join(t.TempDir(), "dir")
	os.MkdirAll(filepath.Join(bad, "x"), 0o700)
	if err := Write(bad, []byte("x")); err == nil {
		t.Fatal("replacing a non-empty directory succeeded")
	}
	if es, _ := os.ReadDir(filepath.Dir(bad)); len(es) != 1 {
		t.Fatalf("left behind after a failure: %v", es)
	}
}
