package reconcile_test

import (
	"context"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// The daemon's check before it queues a revert (RevertTarget) reads the
// facts each pass brings up to date with only the runs its entries
// changed: after every pass it says what the pass itself would, as the
// revert of a merged run starts, and then is merged.
func TestRevertTargetFollowsEachPass(t *testing.T) {
	rv := newRevertEnv(t, nil)
	orig := rv.merged.RunID
	ctx := context.Background()
	if a, err := rv.r.RevertTarget(ctx, orig); err != nil || a != "image-pinner" {
		t.Fatalf("RevertTarget of the merged run = %q, %v; want image-pinner", a, err)
	}
	o := rv.revert(rv.r, "rollback-1", orig)
	if o.State != reconcile.RequestStarted {
		t.Fatalf("revert outcome %+v", o)
	}
	branch := "agents/image-pinner/" + o.RunID
	if _, err := rv.r.RevertTarget(ctx, orig); err == nil || !strings.Contains(err.Error(), "already reverted") || !strings.Contains(err.Error(), branch) {
		t.Errorf("RevertTarget with the revert open = %v, want already reverted, naming %s", err, branch)
	}
	rv.mergeSigned("Rita Reviewer", "rita@example.com", branch, rv.ritaKey)
	rv.pass(rv.r)
	if _, ok := find(rv.entries(), ledger.ProposalMerged, "image-pinner"); !ok {
		t.Fatal("no merge recorded")
	}
	if _, err := rv.r.RevertTarget(ctx, orig); err == nil || !strings.Contains(err.Error(), "already reverted: by run "+o.RunID+", merged") {
		t.Errorf("RevertTarget after the revert merged = %v, want already reverted by run %s, merged", err, o.RunID)
	}
	// The revert run itself was merged: it can be reverted in turn.
	if a, err := rv.r.RevertTarget(ctx, o.RunID); err != nil || a != "image-pinner" {
		t.Errorf("RevertTarget of the merged revert = %q, %v; want image-pinner", a, err)
	}
}
