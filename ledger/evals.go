package ledger

// Evals is set on policy.decision when the change alters the definition
// of agents (their spec digest) and the reconciler ran their prompt
// regression evals before deciding (docs/evals.md): what policies saw as
// change.evals, and what the evals cost.
type Evals struct {
	Passed int `json:"passed"`
	Failed int `json:"failed"`
	// Agents are the agents whose evals ran, sorted.
	Agents []string `json:"agents"`
	// CostUSD is what the scenarios' model exchanges cost at the
	// providers' prices, replayed ones included; SpentUSD what the
	// decision spent on live exchanges (also in the entry's cost_usd).
	CostUSD  float64 `json:"cost_usd,omitempty"`
	SpentUSD float64 `json:"spent_usd,omitempty"`
	// Failures say what failed, one line each ("agent/scenario:
	// file:line:col: message"), at most MaxEvalFailures.
	Failures []string `json:"failures,omitempty"`
}

// MaxEvalFailures bounds Evals.Failures.
const MaxEvalFailures = 20
