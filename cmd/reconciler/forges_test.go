package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/internal/giteatest"
	"github.com/agentgitops/reconciler/signing"
)

// once on the example hosted on a real Gitea, its providers.hcl naming the
// forge: with --forge-allow for that server and the token in the variable
// the block names, the proposals become pull requests; without the
// allowance the pass stalls, names the flag, and no pull request is
// opened (nor the token sent).
func TestOnceOpensPullRequestsOnTheSpecsForge(t *testing.T) {
	s := giteatest.Start(t)
	r := s.CreateRepo(s.Bot, "desired")
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../../examples/repo-layout")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tools/pin-images.sh", "tools/normalise-env.sh"} {
		if err := os.Chmod(filepath.Join(dir, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	keyFile := filepath.Join(t.TempDir(), "ledger.key")
	signer, err := signing.GenerateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".reconciler/keys/ledger.pub"), signer.PublicKeyPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	block := "\nforge \"gitea\" {\n  base_url   = \"" + s.URL + "\"\n  repository = \"" + r.Owner + "/" + r.Name + "\"\n  token_env  = \"TEST_GITEA_TOKEN\"\n}\n"
	f, err := os.OpenFile(filepath.Join(dir, "providers.hcl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(block)
	f.Close()
	r.Git(dir, "init", "--quiet", "--initial-branch=main")
	r.Git(dir, "add", "-A")
	r.Git(dir, "commit", "--quiet", "-m", "Initial commit")
	r.Push(s.Bot, dir, "main")
	t.Setenv("TEST_GITEA_TOKEN", s.Bot.Token)

	base := []string{"once", "--repo", r.CloneURL(s.Bot), "--key", keyFile, "--identity", "Reconciler <reconciler@example.com>",
		"--cache-dir", t.TempDir(), "--instance", "cli-test", "--concurrency", "1"}
	var out, errb bytes.Buffer
	if code := run(context.Background(), base, &out, &errb); code != exitFail {
		t.Fatalf("once without --forge-allow: exit %d, want 1\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "--forge-allow") || strings.Contains(errb.String(), s.Bot.Token) {
		t.Errorf("the refusal does not name --forge-allow, or shows the token:\n%s", errb.String())
	}
	if prs := r.PullRequests(); len(prs) != 0 {
		t.Fatalf("%d pull requests opened without the operator's allowance", len(prs))
	}

	out.Reset()
	errb.Reset()
	if code := run(context.Background(), append(base, "--forge-allow", s.URL), &out, &errb); code != exitOK {
		t.Fatalf("once: exit %d\n%s%s", code, out.String(), errb.String())
	}
	prs := r.PullRequests()
	if len(prs) != 2 {
		t.Fatalf("%d pull requests, want one per proposal (2)", len(prs))
	}
	for _, pr := range prs {
		if st := r.CombinedStatus(pr.Head.Sha); st["reconciler/cli-test"] == "" {
			t.Errorf("pull request %d: no status of this instance: %v", pr.Number, st)
		}
	}
	if strings.Contains(out.String()+errb.String(), s.Bot.Token) {
		t.Errorf("the token was printed")
	}
}

func TestForgeTokenNamesTheSourceNeverTheValue(t *testing.T) {
	env := func(string) (string, bool) { return "", false }
	_, err := forgeToken(&hclspec.Forge{TokenEnv: "GITEA_TOKEN"}, env)
	if err == nil || !strings.Contains(err.Error(), "GITEA_TOKEN") {
		t.Errorf("unset variable: %v", err)
	}
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("  s3cr3t-token\n"), 0o600)
	got, err := forgeToken(&hclspec.Forge{TokenFile: file}, env)
	if err != nil || got != "s3cr3t-token" {
		t.Errorf("token file: %q, %v", got, err)
	}
	os.WriteFile(file, []byte("\n"), 0o600)
	if _, err := forgeToken(&hclspec.Forge{TokenFile: file}, env); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty token file: %v", err)
	}
}
