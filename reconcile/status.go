package reconcile

import (
	"context"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Status is the reconciler's observed state, Flux style.
type Status struct {
	// SpecCommit is the commit of the spec in force; HeadCommit the head
	// of the protected branch at the last pass.
	SpecCommit string    `json:"spec_commit"`
	HeadCommit string    `json:"head_commit"`
	LastPass   time.Time `json:"last_pass"`
	// Ready, Stalled and Reconciling follow Flux's kstatus conditions.
	Conditions  []Condition `json:"conditions"`
	Diagnostics []string    `json:"diagnostics,omitempty"`
	LedgerSeq   uint64      `json:"ledger_seq"`
}

// Condition is a status condition.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// Status returns a copy of the last status.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	s.Conditions = append([]Condition(nil), s.Conditions...)
	return s
}

func (r *Reconciler) summarize(p *pass, err error) {
	s := Status{LastPass: r.cfg.Now()}
	if !p.head.IsZero() {
		s.HeadCommit = p.head.String()
	}
	if !r.specCommit.IsZero() {
		s.SpecCommit = r.specCommit.String()
	}
	if e, ok, _ := r.ledger.Head(context.Background()); ok {
		s.LedgerSeq = e.Seq
	}
	switch {
	case len(p.diags) > 0 && p.diags.HasErrors():
		for _, d := range p.diags {
			if d.Severity == hcl.DiagError {
				s.Diagnostics = append(s.Diagnostics, formatDiag(d)+": "+d.Detail)
			}
		}
		s.Conditions = []Condition{
			{Type: "Ready", Status: "False", Reason: "SpecInvalid", Message: "the spec at the head of the protected branch does not load; running on the last good spec"},
			{Type: "Stalled", Status: "True", Reason: "SpecInvalid", Message: formatDiag(firstError(p.diags))},
		}
	case err != nil:
		s.Conditions = []Condition{{Type: "Ready", Status: "False", Reason: "ReconciliationFailed", Message: err.Error()}}
	default:
		s.Conditions = []Condition{{Type: "Ready", Status: "True", Reason: "Succeeded", Message: "reconciled " + short(s.HeadCommit)}}
	}
	r.mu.Lock()
	r.status = s
	r.mu.Unlock()
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
