package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
)

// mergeProposal merges agent's first proposal branch into main as Rita
// (the example's reviewers accept her unsigned merge) and returns its run.
func mergeProposal(t *testing.T, bare, agent string) string {
	t.Helper()
	var opened *ledger.Entry
	for _, en := range ledgerEntries(t, bare) {
		if en.Type == ledger.ProposalOpened && en.Agent == agent {
			opened = &en
			break
		}
	}
	if opened == nil {
		t.Fatalf("no proposal of %s", agent)
	}
	work := gittest.Clone(t, bare)
	cmd := exec.Command("git", "merge", "-q", "--no-ff", "-m", "Merge "+opened.Proposal.Branch, "origin/"+opened.Proposal.Branch)
	cmd.Dir, cmd.Env = work, gittest.Env("Rita Reviewer", "rita@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("merge: %v\n%s", err, out)
	}
	gittest.Git(t, work, "push", "-q", "origin", "main")
	return opened.RunID
}

func revertRuns(t *testing.T, bare, run string) []ledger.Entry {
	var out []ledger.Entry
	for _, en := range ledgerEntries(t, bare) {
		if en.Reverts == run {
			out = append(out, en)
		}
	}
	return out
}

// reconciler revert --repo runs a pass here: the merge is observed, then
// the revert proposal opened; a second revert, an unknown run and an open
// proposal are refused with one line and exit 1.
func TestRevertLocalPass(t *testing.T) {
	bare := daemonRepo(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "ledger.key")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"keygen", "--out", key}, &out, &errb); code != exitOK {
		t.Fatal(errb.String())
	}
	args := []string{"--repo", bare, "--key", key, "--cache-dir", filepath.Join(dir, "cache")}
	if code := run(context.Background(), append([]string{"once"}, args...), &out, &errb); code != exitOK {
		t.Fatalf("once: %s", errb.String())
	}
	orig := mergeProposal(t, bare, "image-pinner")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"merged run", []string{"revert", orig, "--id", "rb-1", "--by", "sam", "--reason", "bad digest"}, exitOK, "revert of run " + orig + ": agent image-pinner, run "},
		{"again, same id", []string{"revert", "--id", "rb-1", orig}, exitOK, "agent image-pinner, run "},
		{"again, another id", []string{"revert", "--id", "rb-2", orig}, exitFail, "already reverted: run "},
		{"unknown run", []string{"revert", "0123456789ab"}, exitFail, `no such run in the ledger "0123456789ab"`},
		{"no run id", []string{"revert"}, exitUsage, "one run id"},
		{"repo and addr", []string{"revert", orig, "--addr", "http://127.0.0.1:1"}, exitUsage, "--repo runs the pass here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), append(tc.args, args...), &out, &errb)
			if code != tc.code || !strings.Contains(errb.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errb.String(), tc.code, tc.want)
			}
		})
	}
	es := revertRuns(t, bare, orig)
	var types []string
	for _, en := range es {
		types = append(types, en.Type)
	}
	if strings.Join(types, " ") != "run.started run.finished policy.decision proposal.opened" {
		t.Fatalf("revert entries %v", types)
	}
	if q := es[0].Request; q == nil || q.By != "sam" || q.Reason != "bad digest" || es[0].Trigger != "revert:"+orig+":rb-1" {
		t.Errorf("revert run.started = %+v", es[0].Predicate)
	}
}

// reconciler revert --addr asks the running daemon: refused with a wrong
// secret (401) and while the daemon has not seen the merge (409), queued
// once it has, and run by the daemon's next pass.
func TestRevertCommand(t *testing.T) {
	bare := daemonRepo(t)
	secret := secretFile(t)
	d := startHookDaemon(t, "--repo", bare, "--interval", "1h", "--webhook-secret-file", secret)
	waitUntil(t, 60*time.Second, "/readyz 200", func() bool { c, _ := d.get("/readyz"); return c == http.StatusOK })
	orig := mergeProposal(t, bare, "image-pinner")
	revert := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"revert", "--addr", d.base}, args...), &out, &errb)
		if strings.Contains(errb.String(), daemonSecret) {
			t.Errorf("stderr shows the secret")
		}
		return code, out.String(), errb.String()
	}
	if code, _, errb := revert(orig, "--webhook-secret-file", secret); code != exitFail || !strings.Contains(errb, "409 Conflict") || !strings.Contains(errb, "still open") {
		t.Errorf("before the daemon saw the merge: exit %d, %q", code, errb)
	}
	// A manual run wakes the daemon, whose pass records the merge.
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"trigger", "on-demand", "--addr", d.base, "--webhook-secret-file", secret}, &out, &errb); code != exitOK {
		t.Fatalf("trigger: %s", errb.String())
	}
	waitUntil(t, 60*time.Second, "the merge recorded", func() bool {
		for _, en := range ledgerEntries(t, bare) {
			if en.Type == ledger.ProposalMerged && en.RunID == orig {
				return true
			}
		}
		return false
	})
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("not-the-secret"), 0o600)
	if code, _, errb := revert(orig, "--webhook-secret-file", wrong); code != exitFail || !strings.Contains(errb, "401 Unauthorized") {
		t.Errorf("wrong secret: exit %d, %q", code, errb)
	}
	var stdout string
	waitUntil(t, 60*time.Second, "the revert accepted", func() bool {
		code, o, _ := revert(orig, "--webhook-secret-file", secret, "--id", "rb-1", "--by", "rita")
		stdout = o
		return code == exitOK
	})
	if strings.TrimSpace(stdout) != "rb-1" {
		t.Errorf("stdout %q, want the request id", stdout)
	}
	waitUntil(t, 60*time.Second, "the revert proposal", func() bool {
		for _, en := range revertRuns(t, bare, orig) {
			if en.Type == ledger.ProposalOpened {
				return true
			}
		}
		return false
	})
}
