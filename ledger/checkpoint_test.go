package ledger

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

func TestCheckpointSignAndOpen(t *testing.T) {
	dir := t.TempDir()
	s, v, err := LoadOrCreateNoteKey(filepath.Join(dir, "cp.key"), "test-witness")
	if err != nil {
		t.Fatal(err)
	}
	f := newVerifyFixture(t, 2)
	repo := f.open(t)
	rep, err := Verify(t.Context(), repo, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cp := NewCheckpoint(rep, Origin(repo))
	msg, err := cp.Sign(s)
	if err != nil {
		t.Fatal(err)
	}
	want := Branch + " " + repo.URL() + "\n3\n" + rep.Head.String() + "\n\n— test-witness "
	if !strings.HasPrefix(string(msg), want) {
		t.Errorf("signed checkpoint = %q, want it to start with %q", msg, want)
	}
	got, err := OpenCheckpoint(msg, v)
	if err != nil || got != cp {
		t.Fatalf("OpenCheckpoint = %+v, %v; want %+v", got, err, cp)
	}
	// Another key, or an edited text, does not open.
	_, other, err := LoadOrCreateNoteKey(filepath.Join(dir, "other.key"), "test-witness")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCheckpoint(msg, other); err == nil {
		t.Error("a checkpoint opened with another key")
	}
	edited := []byte(strings.Replace(string(msg), "\n3\n", "\n2\n", 1))
	var invalid *note.InvalidSignatureError
	if _, err := OpenCheckpoint(edited, v); !errors.As(err, &invalid) {
		t.Errorf("an edited checkpoint: %v, want an invalid signature", err)
	}
	if _, err := (Checkpoint{Origin: "two\nlines"}).Sign(s); err == nil {
		t.Error("a two-line origin was signed")
	}
}

// Check accepts the ledger the checkpoint saw and any extension of it, and
// names the cut or the rewrite otherwise.
func TestCheckpointCheck(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, f *verifyFixture)
		err    string
	}{
		{"unchanged", func(*testing.T, *verifyFixture) {}, ""},
		{"extended", func(t *testing.T, f *verifyFixture) { f.append(t, 2) }, ""},
		{"truncated by one", func(t *testing.T, f *verifyFixture) { resetTo(t, f, Branch+"~1") },
			"the ledger has 5 entries but checkpoint \"agent-evidence " + "%s\" recorded 6: entry 6 was cut off"},
		{"truncated by two", func(t *testing.T, f *verifyFixture) { resetTo(t, f, Branch+"~2") },
			"the ledger has 4 entries but checkpoint \"agent-evidence %s\" recorded 6: entries 5-6 were cut off"},
		{"rewritten", func(t *testing.T, f *verifyFixture) {
			f.commit(t, true, func(string) {})
		}, "entry 6 is commit "},
		{"rewritten and extended", func(t *testing.T, f *verifyFixture) {
			f.commit(t, true, func(string) {})
			f.append(t, 1)
		}, "the branch was rewritten"},
		{"deleted", func(t *testing.T, f *verifyFixture) {
			gittest.Git(t, "", "--git-dir", f.bare, "update-ref", "-d", "refs/heads/"+Branch)
		}, "branch agent-evidence is gone but checkpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newVerifyFixture(t, 5)
			repo := f.open(t)
			rep, err := Verify(t.Context(), repo, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cp := NewCheckpoint(rep, Origin(repo))
			tt.change(t, f)
			err = cp.Check(f.open(t))
			if tt.err == "" {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				return
			}
			want := strings.Replace(tt.err, "%s", repo.URL(), 1)
			if !errors.Is(err, ErrRewritten) || !strings.Contains(err.Error(), want) {
				t.Fatalf("Check = %v, want ErrRewritten saying %q", err, want)
			}
		})
	}
	// The checkpoint of an empty ledger holds for any ledger.
	f := newVerifyFixture(t, 0)
	if err := (Checkpoint{Origin: "x"}).Check(f.open(t)); err != nil {
		t.Errorf("empty checkpoint: %v", err)
	}
}

func resetTo(t *testing.T, f *verifyFixture, rev string) {
	t.Helper()
	h := gittest.Git(t, "", "--git-dir", f.bare, "rev-parse", rev)
	gittest.Git(t, "", "--git-dir", f.bare, "update-ref", "refs/heads/"+Branch, h)
}

func TestLoadOrCreateNoteKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cp.key")
	s, v, err := LoadOrCreateNoteKey(path, "witness")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	fromPub, err := note.NewVerifier(strings.TrimSpace(string(pub)))
	if err != nil {
		t.Fatal(err)
	}
	// Loading again gives the same key, and the .pub verifies its notes.
	s2, v2, err := LoadOrCreateNoteKey(path, "ignored")
	if err != nil || s2.KeyHash() != s.KeyHash() || v2.KeyHash() != v.KeyHash() || s2.Name() != "witness" {
		t.Fatalf("reloaded key differs: %v", err)
	}
	msg, err := Checkpoint{Origin: "o", Size: 0}.Sign(s2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCheckpoint(msg, fromPub); err != nil {
		t.Errorf("the .pub does not verify the key's checkpoints: %v", err)
	}
	// A missing .pub is written again.
	os.Remove(path + ".pub")
	if _, _, err := LoadOrCreateNoteKey(path, "witness"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".pub"); err != nil {
		t.Errorf("the .pub was not rewritten: %v", err)
	}
	// A file that is not a note key is refused, and left alone.
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("hello\n"), 0o600)
	if _, _, err := LoadOrCreateNoteKey(bad, "witness"); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad key: %v", err)
	}
	if b, _ := os.ReadFile(bad); string(b) != "hello\n" {
		t.Errorf("the bad key file was replaced")
	}
}
