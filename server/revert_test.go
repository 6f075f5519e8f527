package server_test

import (
	"context"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/server"
)

// mergeAs merges a branch into main as a person, with the git CLI.
func (e *env) mergeAs(name, email, branch string) {
	e.t.Helper()
	work := gittest.Clone(e.t, e.bare)
	cmd := exec.Command("git", "merge", "-q", "--no-ff", "-m", "Merge "+branch, "origin/"+branch)
	cmd.Dir, cmd.Env = work, gittest.Env(name, email)
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("git merge: %v\n%s", err, out)
	}
	gittest.Git(e.t, work, "push", "-q", "origin", "main")
}

// find returns the first entry of typ for run, if any.
func (e *env) find(typ, run string, reverts bool) (ledger.Entry, bool) {
	for _, en := range e.entries() {
		if en.Type == typ && (!reverts && en.RunID == run || reverts && en.Reverts == run) {
			return en, true
		}
	}
	return ledger.Entry{}, false
}

// POST /api/v1/runs/{run_id}/revert on a running daemon: refused without
// the secret or with a wrong one, 404 for a run the ledger does not have,
// 409 for one not merged; a merged run's revert is queued (202), persisted
// with what it reverts, and run by the next pass as a proposal of the same
// agent linked to the original; asking again is answered 409.
func TestRevertAPI(t *testing.T) {
	e := newEnv(t)
	r := e.reconciler(t.TempDir(), nil)
	s := start(t, server.Config{Reconciler: r, Interval: time.Hour, RetryMin: time.Hour, Secret: server.NewSecret(testSecret)})
	var opened ledger.Entry
	eventually(t, 20*time.Second, "steady's proposal", func() bool {
		var ok bool
		for _, en := range e.entries() {
			if en.Type == ledger.ProposalOpened && en.Agent == "steady" {
				opened, ok = en, true
			}
		}
		return ok
	})
	orig := opened.RunID
	revert := s.url + "/api/v1/runs/" + orig + "/revert"

	// Not merged yet. (The API checks against the ledger as the last pass
	// left it, which the pass that opened the proposal sets as it ends.)
	var res response
	eventually(t, 20*time.Second, "the API's view of the pass", func() bool {
		res = post(t, revert, []byte(`{"id":"early"}`), bearer...)
		return res.code != http.StatusNotFound
	})
	if res.code != http.StatusConflict || !strings.Contains(res.jsonError(t), "still open") {
		t.Errorf("revert of an open proposal: %d %s, want 409 saying it is open", res.code, res.body)
	}

	e.mergeAs("Rita", "rita@example.com", opened.Proposal.Branch)
	s.Wake()
	eventually(t, 20*time.Second, "the merge recorded", func() bool { _, ok := e.find(ledger.ProposalMerged, orig, false); return ok })

	for _, tc := range []struct {
		name    string
		url     string
		headers []string
		code    int
	}{
		{"no secret", revert, nil, http.StatusUnauthorized},
		{"wrong secret", revert, []string{"Authorization", "Bearer not-the-secret"}, http.StatusUnauthorized},
		{"unknown run", s.url + "/api/v1/runs/0123456789ab/revert", bearer, http.StatusNotFound},
		{"bad body", revert, append([]string{}, bearer...), http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(`{"id":"rb-1","by":"oncall"}`)
			if tc.name == "bad body" {
				body = []byte(`{"run":"other"}`)
			}
			res := post(t, tc.url, body, tc.headers...)
			if res.code != tc.code {
				t.Errorf("%d %s, want %d", res.code, res.body, tc.code)
			}
			if strings.Contains(res.body, testSecret) {
				t.Errorf("the answer holds the secret: %s", res.body)
			}
		})
	}
	if _, ok := e.find(ledger.RunStarted, orig, true); ok {
		t.Fatal("a refused request started a revert")
	}

	eventually(t, 20*time.Second, "the API's view of the merge", func() bool {
		res = post(t, revert, []byte(`{"id":"rb-1","by":"oncall","reason":"notes regressed"}`), bearer...)
		return res.code != http.StatusConflict
	})
	var acc server.RevertAccepted
	res.decode(t, &acc)
	if res.code != http.StatusAccepted || acc.Request != "rb-1" || acc.Agent != "steady" || acc.Reverts != orig {
		t.Fatalf("revert: %d %s", res.code, res.body)
	}
	var started, proposal ledger.Entry
	eventually(t, 20*time.Second, "the revert proposal", func() bool {
		var ok bool
		proposal, ok = e.find(ledger.ProposalOpened, orig, true)
		return ok
	})
	started, _ = e.find(ledger.RunStarted, proposal.RunID, false)
	if started.Reverts != orig || started.Trigger != "revert:"+orig+":rb-1" || started.Request == nil || started.Request.By != "oncall" || started.Request.Reason != "notes regressed" {
		t.Errorf("revert run.started = %+v", started.Predicate)
	}
	if proposal.Agent != "steady" || proposal.Proposal.Branch != "agents/steady/"+proposal.RunID {
		t.Errorf("revert proposal = %+v", proposal.Predicate)
	}
	eventually(t, 10*time.Second, "the queue emptied", func() bool { return len(s.Queued()) == 0 })

	res = post(t, revert, []byte(`{"id":"rb-2"}`), bearer...)
	if res.code != http.StatusConflict || !strings.Contains(res.jsonError(t), "already reverted") {
		t.Errorf("second revert: %d %s, want 409 already reverted", res.code, res.body)
	}
}

// A queued revert request survives a restart as a revert: the persisted
// queue keeps the run it reverts (a crash before the pass that takes it
// must not turn it into a manual run, or lose it).
func TestRevertRequestPersisted(t *testing.T) {
	e := newEnv(t)
	r := e.reconciler("", nil)
	pass := func() {
		t.Helper()
		if _, err := r.Pass(context.Background(), nil); err != nil {
			t.Fatalf("pass: %v", err)
		}
	}
	pass()
	opened, ok := e.find(ledger.ProposalOpened, "", false)
	for _, en := range e.entries() {
		if en.Type == ledger.ProposalOpened && en.Agent == "steady" {
			opened, ok = en, true
		}
	}
	if !ok {
		t.Fatal("no steady proposal")
	}
	e.mergeAs("Rita", "rita@example.com", opened.Proposal.Branch)
	pass()
	dir := t.TempDir()
	cfg := server.Config{Reconciler: r, Interval: time.Hour, Secret: server.NewSecret(testSecret), QueueDir: dir}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, s.Handler())
	if res := post(t, url+"/api/v1/runs/"+opened.RunID+"/revert", []byte(`{"id":"rb"}`), bearer...); res.code != http.StatusAccepted {
		t.Fatalf("revert: %d %s", res.code, res.body)
	}
	// The same id for another run is another request: refused.
	if res := post(t, url+"/api/v1/agents/on-demand/runs", []byte(`{"id":"rb"}`), bearer...); res.code != http.StatusConflict {
		t.Errorf("manual run with the revert's id: %d %s, want 409", res.code, res.body)
	}
	again, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	q := again.Queued()
	if len(q) != 1 || q[0].ID != "rb" || q[0].Revert != opened.RunID || q[0].Agent != "steady" {
		t.Errorf("queue after a restart = %+v, want the revert of %s", q, opened.RunID)
	}
}
