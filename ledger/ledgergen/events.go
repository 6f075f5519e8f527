package ledgergen

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/agentgitops/reconciler/ledger"
)

// holds are the filler run.held reasons, as policy.Gate words them.
var holds = []struct{ kind, policy, rule, reason string }{
	{"freeze", "protect-prod", "release-week", "freeze protect-prod/release-week is in force until %s (policies/protect-prod.hcl:14,3-28)"},
	{"runs_per_hour", "team-budget", "max_runs_per_hour", "agent %[2]s started 6 runs in the last hour, the most budget team-budget allows (max_runs_per_hour = 6); the next may start at %[1]s (policies/budget.hcl:3,3-9)"},
	{"concurrency", "team-budget", "max_concurrent_runs", "agent %[2]s has 2 runs in progress, the most budget team-budget allows (max_concurrent_runs = 2) (policies/budget.hcl:3,3-9)"},
	{"suspended", "", "", "agent %[2]s is suspended (suspend = true at agents/%[2]s.hcl:7,3-17)"},
}

// event returns the event of entry seq: the genesis entry, then
// alternately a run.held of a filler agent and a policy.violation that
// belongs to no agent.
func (g *gen) event(seq uint64) ledger.Event {
	main := g.opts.Protected
	if seq == 1 {
		ids := ""
		for i, k := range g.keys {
			if i > 0 {
				ids += ", "
			}
			ids += k.ID
		}
		return ledger.Event{
			Type: ledger.Genesis, Subject: g.subject, SubjectName: main, Keys: g.keys,
			Summary: fmt.Sprintf("ledger.genesis: %d trusted key(s): %s", len(g.keys), ids),
		}
	}
	when := g.opts.Start.Add(time.Duration(seq-1) * g.opts.Interval)
	agent := fmt.Sprintf("gen-%03d", seq%uint64(g.opts.Agents))
	if seq%2 == 0 {
		h := holds[(seq/2)%uint64(len(holds))]
		var until time.Time
		if h.kind == "freeze" || h.kind == "runs_per_hour" {
			until = when.Add(47 * time.Minute).Truncate(time.Minute)
		}
		reason := fmt.Sprintf(h.reason, until.Format(time.RFC3339), agent)
		untilText := ""
		if !until.IsZero() {
			untilText = " until " + until.Format(time.RFC3339)
		}
		slot := when.Truncate(time.Hour).Format(time.RFC3339)
		return ledger.Event{
			Type: ledger.RunHeld, Subject: g.subject, SubjectName: main,
			Agent: agent, Trigger: "schedule:" + slot,
			SpecCommit: g.subject, SpecDigest: specDigest(agent),
			Hold:    &ledger.Hold{Kind: h.kind, Policy: h.policy, Rule: h.rule, Until: until, Reason: reason},
			Summary: fmt.Sprintf("%s %s: %s%s", ledger.RunHeld, agent, h.kind, untilText),
		}
	}
	pushed := fmt.Sprintf("%040x", sha256.Sum256([]byte(agent+when.String())))[:12]
	msg := fmt.Sprintf(".reconciler/keys changed at %s by mallory@example.com without an approved merge (a direct push, not a merge); the keys are not trusted", pushed)
	return ledger.Event{
		Type: ledger.PolicyViolation, Subject: g.subject, SubjectName: main, SpecCommit: g.subject,
		Error: msg, Summary: "policy.violation: " + msg,
	}
}

// specDigest is a stable stand-in for an agent's spec digest.
func specDigest(agent string) string {
	sum := sha256.Sum256([]byte("ledgergen agent " + agent))
	return hex.EncodeToString(sum[:])
}
