package ledgergen

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/signing"
)

// bareWithMain makes a bare repository whose main branch has one commit.
func bareWithMain(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	bare := filepath.Join(t.TempDir(), "origin.git")
	g := &gen{bare: bare, opts: Options{Git: "git"}}
	ctx := context.Background()
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", bare).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v: %s", err, out)
	}
	if _, err := g.git(ctx, nil, "hash-object", "-w", "--stdin"); err != nil { // the empty blob
		t.Fatal(err)
	}
	tree, err := g.git(ctx, []byte("100644 blob e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\tREADME\n"), "mktree")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("git", "--git-dir", bare, "commit-tree", tree, "-m", "desired state")
	cmd.Env = append(gitEnv(), "GIT_AUTHOR_NAME=T", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=T", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.git(ctx, nil, "update-ref", "refs/heads/main", strings.TrimSpace(string(out))); err != nil {
		t.Fatal(err)
	}
	return bare
}

func TestGenerate(t *testing.T) {
	const n = 50
	bare := bareWithMain(t)
	signer, err := signing.GenerateKey(filepath.Join(t.TempDir(), "ledger.key"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	head, err := Generate(ctx, bare, signer, n, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("git", "--git-dir", bare, "fsck", "--strict").CombinedOutput(); err != nil {
		t.Fatalf("git fsck --strict: %v\n%s", err, out)
	}
	if out, err := exec.Command("git", "--git-dir", bare, "rev-list", "--count", ledger.Branch).Output(); err != nil || strings.TrimSpace(string(out)) != "50" {
		t.Fatalf("rev-list --count %s = %q, %v; want 50", ledger.Branch, out, err)
	}

	repo, err := gitstore.Open(ctx, bare, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	rep, err := ledger.Verify(ctx, repo, ledger.VerifyOptions{Protected: "main", TrustedKeys: []signing.PublicKey{signer.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != n || rep.Head != head {
		t.Fatalf("Verify: %d entries at %s, want %d at %s", rep.Entries, rep.Head, n, head)
	}

	l := ledger.New(repo, ledger.Options{
		Signer: signer, Identity: object.Signature{Name: "Reconciler", Email: "reconciler@localhost"},
		TrustedKeys: []signing.PublicKey{signer.PublicKey()},
	})
	entries, err := l.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n || l.State().Seq != n || l.State().Head != head {
		t.Fatalf("Sync read %d entries, state at %d; want %d", len(entries), l.State().Seq, n)
	}
	types := map[string]int{}
	for i, e := range entries {
		types[e.Type]++
		if i > 0 && !e.Time.After(entries[i-1].Time) {
			t.Errorf("entry %d at %s is not after entry %d at %s", e.Seq, e.Time, e.Seq-1, entries[i-1].Time)
		}
		if i > 0 && (len(e.Bundle) < 1000 || len(e.Bundle) > 2500) {
			t.Errorf("entry %d's bundle has %d bytes, want the size of a real one (1-2.5 kB)", e.Seq, len(e.Bundle))
		}
	}
	if types[ledger.Genesis] != 1 || types[ledger.RunHeld] != 25 || types[ledger.PolicyViolation] != 24 {
		t.Errorf("event types %v", types)
	}
	if len(l.State().Runs) != 0 {
		t.Errorf("filler entries started %d runs", len(l.State().Runs))
	}

	// A real append continues the ledger.
	stored, err := l.Append(ctx, ledger.Event{
		Type: ledger.PolicyViolation, Subject: entries[0].Subject, SubjectName: "main",
		Error: "appended after generation", Summary: "policy.violation: appended after generation",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 1 || stored[0].Seq != n+1 {
		t.Fatalf("Append stored %v", stored)
	}
	if err := repo.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err = ledger.Verify(ctx, repo, ledger.VerifyOptions{Protected: "main", TrustedKeys: []signing.PublicKey{signer.PublicKey()}})
	if err != nil || rep.Entries != n+1 {
		t.Fatalf("Verify after Append: %v, %v", rep, err)
	}
}

func TestGenerateRefusesExistingLedger(t *testing.T) {
	bare := bareWithMain(t)
	signer, err := signing.GenerateKey(filepath.Join(t.TempDir(), "ledger.key"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Generate(ctx, bare, signer, 3, Options{Start: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(ctx, bare, signer, 3, Options{}); err == nil || !strings.Contains(err.Error(), "already has") {
		t.Fatalf("second Generate: %v, want a refusal", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("git", "--git-dir", bare, "fsck", "--strict")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("fsck: %v: %s", err, stderr.String())
	}
}
