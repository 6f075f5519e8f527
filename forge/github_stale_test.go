package forge_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/forge"
)

// TestGitHubRecordedMarkStale: a stale pull request (the pull request as
// octokit.rb recorded it, the token's user as PyGithub recorded it) gets
// the stale label once and one comment per head, also from a fresh
// process: the comment list (documented schema; there is no recording of
// one) is read back for the reconciler's own marker.
func TestGitHubRecordedMarkStale(t *testing.T) {
	s := newReplay(t)
	f := newFakePulls(t, s)
	w, repo, head := mirror(t, "branch-for-pr")
	w.checkout("branch-for-pr")
	head2 := w.commit("a person's commit")
	f.serveStatuses(head, head2)
	s.on("GET", "/user", pyg(t, "SpecificExceptions.testUnknownObject", 0))
	s.handle("GET", orbRepo+"/issues/94/comments", func(request) recorded {
		var list []map[string]any
		for i, r := range s.requests("POST " + orbRepo + "/issues/94/comments") {
			var c map[string]any
			json.Unmarshal(r.Body, &c)
			list = append(list, map[string]any{"id": 5001 + i, "body": c["body"], "user": map[string]any{"login": "jacquev6", "id": 327146, "type": "User"}})
		}
		b, _ := json.Marshal(list)
		return documented(200, string(b))
	})
	ctx := context.Background()
	p := forge.Proposal{Agent: "deps", RunID: "3f2a9c0d41be", Branch: "branch-for-pr", Head: head, Decision: decision(), Summary: "Bump lodash"}
	if err := newGitHub(t, s, repo, "api-playground", "api-sandbox", "master").Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	labelsBefore := len(s.requests("POST " + orbRepo + "/issues/94/labels"))
	for range 2 {
		if err := newGitHub(t, s, repo, "api-playground", "api-sandbox", "master").MarkStale(ctx, p, "main changed deploy/app.yaml, which the proposal changes too"); err != nil {
			t.Fatal(err)
		}
	}
	labels := s.requests("POST " + orbRepo + "/issues/94/labels")[labelsBefore:]
	if len(labels) != 1 || !strings.Contains(string(labels[0].Body), `"stale"`) {
		t.Errorf("stale label requests %v", labels)
	}
	staleComments := func() int {
		n := 0
		for _, r := range s.requests("POST " + orbRepo + "/issues/94/comments") {
			if strings.Contains(string(r.Body), "reconciler:stale head="+p.Head.String()) {
				n++
			}
		}
		return n
	}
	if n := staleComments(); n != 1 {
		t.Fatalf("%d stale comments for the head, want 1", n)
	}
	p.Head = head2
	if err := newGitHub(t, s, repo, "api-playground", "api-sandbox", "master").MarkStale(ctx, p, "a person pushed to the branch"); err != nil {
		t.Fatal(err)
	}
	if n := staleComments(); n != 1 {
		t.Fatalf("%d stale comments for the new head, want 1", n)
	}
}
