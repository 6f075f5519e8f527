package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/ledger"
)

// commentForge is a forge whose pull request holds given comments, or
// cannot be read; the rest of forge.Git is the git-native forge's.
type commentForge struct {
	*forge.Git
	comments []forge.Comment
	err      error
	calls    int
}

func (f *commentForge) ReviewComments(context.Context, forge.Proposal) ([]forge.Comment, error) {
	f.calls++
	return f.comments, f.err
}

func commentReconciler(t *testing.T, f *commentForge) (*Reconciler, *bytes.Buffer) {
	var logs bytes.Buffer
	return &Reconciler{cfg: Config{WorkDir: t.TempDir()}, log: slog.New(slog.NewTextHandler(&logs, nil)), forge: f}, &logs
}

// rejectedWith is a proposal.rejected carrying comments, checked as
// Append checks it.
func rejectedWith(t *testing.T, c *ledger.Comments) {
	t.Helper()
	ev := ledger.Event{Type: ledger.ProposalRejected, Agent: "tuner", RunID: "aaaaaaaaaaaa", Summary: "proposal.rejected tuner aaaaaaaaaaaa",
		Subject: strings.Repeat("ab", 20), Proposal: &ledger.Proposal{Branch: "agents/tuner/aaaaaaaaaaaa", Head: strings.Repeat("ab", 20)}, Comments: c}
	if err := ev.Validate(); err != nil {
		t.Fatalf("the bounded comments do not validate: %v", err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > ledger.MaxCommentsBytes {
		t.Errorf("comments are %d bytes of JSON, over %d", len(b), ledger.MaxCommentsBytes)
	}
}

// What a forge reports is cleaned (terminal escapes, control and
// invisible characters), redacted with the reconciler's scrubber,
// bounded per comment (cut and marked) and in number and size (each
// reviewer's verdict kept first, then the newest), recorded oldest
// first; empty logins are dropped.
func TestBoundComments(t *testing.T) {
	at := func(min int) time.Time { return time.Date(2026, 11, 17, 10, min, 0, 0, time.FixedZone("CET", 3600)) }
	const token = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
	t.Run("cleaned and redacted", func(t *testing.T) {
		r, _ := commentReconciler(t, &commentForge{})
		got := r.boundComments([]forge.Comment{
			{Kind: ledger.CommentReview, State: ledger.ReviewRequestChanges, Login: "rita", Time: at(1), Body: "\x1b[31mNo\x1b[0m: the CI token " + token + " leaked\u202e here"},
			{Kind: ledger.CommentConversation, Login: "", Time: at(2), Body: "no login"},
			{Kind: ledger.CommentConversation, Login: "sam\x07", Time: at(3), Body: "  closing  "},
		})
		want := &ledger.Comments{Items: []ledger.Comment{
			{Kind: ledger.CommentReview, State: ledger.ReviewRequestChanges, ForgeLogin: "rita", Time: at(1).UTC(), Body: "No: the CI token [REDACTED] leaked here"},
			{Kind: ledger.CommentConversation, ForgeLogin: "sam", Time: at(3).UTC(), Body: "closing"},
		}}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
		rejectedWith(t, got)
	})
	t.Run("long body", func(t *testing.T) {
		r, _ := commentReconciler(t, &commentForge{})
		got := r.boundComments([]forge.Comment{{Kind: ledger.CommentConversation, Login: "sam", Time: at(1), Body: strings.Repeat("é", 3000)}})
		b := got.Items[0].Body
		if !got.Items[0].Truncated || len(b) > ledger.MaxCommentBytes || !strings.HasSuffix(b, truncatedMark) || !strings.HasPrefix(b, "éé") {
			t.Errorf("truncated %v, %d bytes: %q...", got.Items[0].Truncated, len(b), b[:10])
		}
		rejectedWith(t, got)
	})
	t.Run("too many", func(t *testing.T) {
		r, _ := commentReconciler(t, &commentForge{})
		raw := []forge.Comment{{Kind: ledger.CommentReview, State: ledger.ReviewRequestChanges, Login: "rita", Time: at(0), Body: "keep the 30s TTL"}}
		for i := 1; i <= 30; i++ {
			raw = append(raw, forge.Comment{Kind: ledger.CommentConversation, Login: "sam", Time: at(i), Body: fmt.Sprintf("comment %d", i)})
		}
		got := r.boundComments(raw)
		if len(got.Items) != ledger.MaxComments || got.Omitted != 31-ledger.MaxComments {
			t.Fatalf("%d kept, %d omitted", len(got.Items), got.Omitted)
		}
		// Rita's verdict, the oldest, stays; then the newest 19.
		if got.Items[0].ForgeLogin != "rita" || got.Items[1].Body != "comment 12" || got.Items[19].Body != "comment 30" {
			t.Errorf("kept %q, %q ... %q", got.Items[0].Body, got.Items[1].Body, got.Items[19].Body)
		}
		rejectedWith(t, got)
	})
	t.Run("too large", func(t *testing.T) {
		r, _ := commentReconciler(t, &commentForge{})
		var raw []forge.Comment
		for i := range 20 {
			raw = append(raw, forge.Comment{Kind: ledger.CommentConversation, Login: "sam", Time: at(i), Body: fmt.Sprintf("%02d", i) + strings.Repeat("\"", 990)})
		}
		got := r.boundComments(raw)
		if len(got.Items) >= 20 || got.Omitted != 20-len(got.Items) || !strings.HasPrefix(got.Items[len(got.Items)-1].Body, "19") {
			t.Errorf("%d kept, %d omitted, last %q", len(got.Items), got.Omitted, got.Items[len(got.Items)-1].Body[:2])
		}
		rejectedWith(t, got)
	})
	t.Run("none", func(t *testing.T) {
		r, _ := commentReconciler(t, &commentForge{})
		if got := r.boundComments(nil); got != nil {
			t.Errorf("no comments recorded as %+v", got)
		}
	})
}

// A forge that cannot be read costs the entry its comments, never the
// outcome: nil, and one warning whose error is scrubbed. A forge without
// comments (the git-native one) is never asked.
func TestReviewCommentsForgeError(t *testing.T) {
	f := &commentForge{err: errors.New("gitea o/r: list reviews of #3: 502 Bad Gateway (token ghp_abcdefghijklmnopqrstuvwxyz0123456789)")}
	r, logs := commentReconciler(t, f)
	rn := &ledger.Run{ID: "aaaaaaaaaaaa", Agent: "tuner"}
	if got := r.reviewComments(context.Background(), rn, forge.Proposal{}); got != nil {
		t.Errorf("comments %+v from a failing forge", got)
	}
	if f.calls != 1 || strings.Count(logs.String(), "review comments not recorded") != 1 || strings.Contains(logs.String(), "ghp_abc") || !strings.Contains(logs.String(), "502 Bad Gateway") {
		t.Errorf("%d calls; logs:\n%s", f.calls, logs.String())
	}
	r.forge = forge.NewGit(nil)
	if got := r.reviewComments(context.Background(), rn, forge.Proposal{}); got != nil {
		t.Errorf("the git-native forge gave comments %+v", got)
	}
}
