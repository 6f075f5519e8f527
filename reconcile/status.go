package reconcile

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/sandbox"
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
	LedgerHead  string      `json:"ledger_head,omitempty"`
	// Agents is each agent's state, by name.
	Agents map[string]AgentStatus `json:"agents,omitempty"`
	// Sandbox is how exec agents are confined: the mode, the mechanisms
	// in force, and why any the kernel lacks is missing.
	Sandbox *SandboxStatus `json:"sandbox,omitempty"`
}

// SandboxStatus is the exec runner's sandbox as this process runs it.
type SandboxStatus struct {
	Mode       string            `json:"mode"`
	Mechanisms []string          `json:"mechanisms"`
	Missing    map[string]string `json:"missing,omitempty"`
}

// sandboxStatus reports the sandbox of the exec runner, when it is the
// built-in one.
func (r *Reconciler) sandboxStatus() *SandboxStatus {
	ex, ok := r.cfg.Runners[hclspec.ProviderExec].(agent.Exec)
	if !ok {
		return nil
	}
	mode := ex.Sandbox.Mode
	if mode == "" {
		mode = sandbox.Strict
	}
	sup := sandbox.Probe()
	return &SandboxStatus{Mode: string(mode), Mechanisms: sup.Mechanisms, Missing: sup.Reasons}
}

// AgentStatus is one agent's observed state.
type AgentStatus struct {
	Conditions    []Condition  `json:"conditions"`
	OpenProposals []string     `json:"open_proposals,omitempty"`
	LastRun       string       `json:"last_run,omitempty"`
	Held          *ledger.Hold `json:"held,omitempty"`
	Violations    int          `json:"policy_violations,omitempty"`
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
	s.Agents = maps.Clone(s.Agents)
	return s
}

// agentStatus derives an agent's status from the ledger's view.
func agentStatus(st *ledger.State, name string) AgentStatus {
	as := AgentStatus{Held: nil}
	runs := st.AgentRuns(name)
	for _, rn := range st.OpenRuns(name) {
		as.OpenProposals = append(as.OpenProposals, rn.Opened.Proposal.Branch)
	}
	squatted := 0
	for _, rn := range runs {
		if rn.Violation {
			as.Violations++
			if rn.Opened == nil {
				squatted++
			}
		}
	}
	ready := Condition{Type: "Ready", Status: "True", Reason: "Succeeded", Message: "nothing to do"}
	if len(runs) > 0 {
		last := runs[len(runs)-1]
		as.LastRun = last.ID
		switch {
		case last.Failed != nil && !last.Failed.RetryAfter.IsZero():
			ready = Condition{Type: "Ready", Status: "False", Reason: "RetryScheduled",
				Message: fmt.Sprintf("attempt %d failed, retried after %s: %s", last.Attempt, last.Failed.RetryAfter.UTC().Format(time.RFC3339), last.Failed.Error)}
		case last.Failed != nil:
			ready = Condition{Type: "Ready", Status: "False", Reason: "RunFailed", Message: last.Failed.Error}
		case len(as.OpenProposals) > 0:
			ready.Reason, ready.Message = "ProposalOpen", "waiting for review of "+strings.Join(as.OpenProposals, ", ")
		default:
			ready.Message = "last run " + last.ID
		}
	}
	if h := st.Held[name]; h != nil && h.Hold != nil {
		as.Held = h.Hold
		ready = Condition{Type: "Ready", Status: "False", Reason: "Held", Message: h.Hold.Reason}
	}
	as.Conditions = []Condition{ready}
	if merged := as.Violations - squatted; merged > 0 {
		as.Conditions = append(as.Conditions, Condition{Type: "PolicyViolation", Status: "True", Reason: "MergedWithoutApproval",
			Message: fmt.Sprintf("%d merge(s) did not satisfy their policy decision; see policy.violation entries", merged)})
	}
	if squatted > 0 {
		as.Conditions = append(as.Conditions, Condition{Type: "PolicyViolation", Status: "True", Reason: "BranchSquatting",
			Message: fmt.Sprintf("%d run(s) found their proposal branch taken by a commit the reconciler did not make; see policy.violation entries", squatted)})
	}
	return as
}

func (r *Reconciler) summarize(p *pass, err error) {
	s := Status{LastPass: r.cfg.Now()}
	if !p.head.IsZero() {
		s.HeadCommit = p.head.String()
	}
	if !r.specCommit.IsZero() {
		s.SpecCommit = r.specCommit.String()
	}
	if p.state != nil && r.spec != nil {
		s.Agents = map[string]AgentStatus{}
		for _, a := range r.spec.Agents {
			s.Agents[a.Name] = agentStatus(p.state, a.Name)
		}
	}
	s.Sandbox = r.sandboxStatus()
	st := r.ledger.State()
	s.LedgerSeq = st.Seq
	if !st.Head.IsZero() {
		s.LedgerHead = st.Head.String()
	}
	var stalled *StalledError
	switch {
	case errors.As(err, &stalled):
		s.Conditions = []Condition{
			{Type: "Ready", Status: "False", Reason: stalled.Reason, Message: stalled.Error()},
			{Type: "Stalled", Status: "True", Reason: stalled.Reason, Message: stalled.Error()},
		}
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
