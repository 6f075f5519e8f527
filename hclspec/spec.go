package hclspec

import (
	"slices"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Spec is a loaded, validated desired state.
type Spec struct {
	Providers []*Provider
	// Forge is where proposals are reviewed as pull requests; nil for the
	// git-native flow.
	Forge    *Forge
	Agents   []*Agent
	Policies []*Policy
	Groups   []*Group

	// What the perception tools read (perception.go): the prometheus and
	// kubernetes blocks of providers.hcl.
	Prometheus []*Prometheus
	Kubernetes []*Kubernetes

	// PolicyDigest is the sha256 of the policy files (policies/*.hcl in
	// name order), computed at load.
	PolicyDigest string
	// Protected are the files, besides ControlPaths, that define what the
	// agents do: every file file() or templatefile() read and every command
	// file an agent runs (what the agents' digests cover), sorted.
	Protected []string

	// Files holds the source of every HCL file that was parsed, by path,
	// for rendering diagnostics and computing digests.
	Files map[string]*hcl.File
}

// Provider kinds.
const (
	ProviderOpenAI = "openai"
	ProviderExec   = "exec"
)

// Provider is a `provider "<kind>" "<name>"` block.
type Provider struct {
	Kind string
	Name string

	// OpenAI-compatible providers.
	BaseURL   string
	APIKeyEnv string
	Prices    map[string]Price

	// Exec providers.
	Timeout        time.Duration
	MaxOutputBytes int64

	DeclRange hcl.Range
	// Source is the block's exact text, part of the spec digest of the
	// agents that use it.
	Source []byte
}

// Ref returns the provider's reference as written in agents:
// provider.<kind>.<name>.
func (p *Provider) Ref() string { return "provider." + p.Kind + "." + p.Name }

// Price is the cost of a model in US dollars per million tokens.
type Price struct {
	InputPerMTok  float64
	OutputPerMTok float64
}

// Agent is an `agent "<name>"` block.
type Agent struct {
	Name        string
	Description string
	Provider    *Provider
	Model       string
	Prompt      string
	Command     []string
	Network     bool // an exec agent's command may use the host's network; by default its sandbox has none
	// Env are variables an exec agent's command gets besides the
	// sandbox's own (env = { NAME = "value" }): values from git, never
	// the reconciler's environment.
	Env      map[string]string
	Tools    []string
	Triggers []Trigger
	Scope    []string
	Limits   Limits
	WorkUnit WorkUnit
	Suspend  bool

	// Perception is what its perception tools may read (perception.go).
	Perception Perception

	// Model tiers and the response cache (llmops.go). Models are the
	// models a run may use, in order (Model is the first); Escalate says
	// when the next takes over, nil for never; Cache answers identical
	// model requests from the reconciler's response cache.
	Models      []string
	ModelsRange hcl.Range
	Escalate    *Escalate
	Cache       bool

	// Digest is the hex sha256 of what defines the agent's runs: its block,
	// prompt, provider block, command files and the policies that apply to
	// it. Unrelated edits to the repository leave it unchanged.
	Digest string

	DeclRange     hcl.Range
	nameRange     hcl.Range
	ProviderRange hcl.Range
	ScopeRange    hcl.Range
	Source        []byte
}

// Trigger is one `trigger` block of an agent. Exactly one of its fields is
// set.
type Trigger struct {
	// Schedule is a cron expression (five fields, or a descriptor such as
	// @hourly) or @every <duration>.
	Schedule string
	Timezone *time.Location
	// OnSpecChange runs the agent once for every change of its spec digest.
	OnSpecChange bool
	// Manual runs the agent when a person asks for it.
	Manual bool
	// Alert runs the agent for Alertmanager alerts whose labels match.
	Alert *AlertMatch

	schedule schedule
	Range    hcl.Range
}

// Limits bound one run of an agent.
type Limits struct {
	MaxSteps  int
	MaxTokens int
	Timeout   time.Duration
	// Retries is how many times a run whose failure can pass on retry (a
	// provider's 5xx or timeout, a lost push) is attempted again, with
	// backoff: 0 to MaxRetries, default DefaultRetries.
	Retries int

	// The work one run of a model agent may do; a run that reaches one of
	// them fails, naming it, and proposes nothing. Each is at least 1;
	// the loader sets the Default* values, and a runner given zero uses
	// them too.

	// MaxToolCallsPerStep bounds the tool calls of one model reply.
	MaxToolCallsPerStep int
	// MaxToolCalls bounds the tool calls over the run.
	MaxToolCalls int
	// MaxFilesWritten bounds the files the run writes, edits or deletes,
	// each counted once.
	MaxFilesWritten int
	// MaxBytesWritten bounds the total size of the files the run writes
	// or edits, each counted once at its last size: what change.bytes of
	// its proposal can be at most.
	MaxBytesWritten int64
	// MaxBytesRead bounds the file content read_file, search and
	// edit_file read over the run.
	MaxBytesRead int64
	// MaxTranscriptBytes bounds the size of the run's transcript, which
	// is kept on the evidence branch.
	MaxTranscriptBytes int64
}

// Bounds of limits { retries }.
const (
	DefaultRetries = 2
	MaxRetries     = 10
)

// Defaults of the limits on a run's work: far above what a task that
// makes a reviewable change needs, far below what a runaway or hostile
// model asks for.
const (
	DefaultMaxToolCallsPerStep       = 64
	DefaultMaxToolCalls              = 512
	DefaultMaxFilesWritten           = 100
	DefaultMaxBytesWritten     int64 = 8 << 20
	DefaultMaxBytesRead        int64 = 256 << 20
	DefaultMaxTranscriptBytes  int64 = 32 << 20
)

// WithWorkDefaults returns the limits with the Default* values in place
// of zero (or negative) limits on work.
func (l Limits) WithWorkDefaults() Limits {
	or := func(v, def int64) int64 {
		if v <= 0 {
			return def
		}
		return v
	}
	l.MaxToolCallsPerStep = int(or(int64(l.MaxToolCallsPerStep), DefaultMaxToolCallsPerStep))
	l.MaxToolCalls = int(or(int64(l.MaxToolCalls), DefaultMaxToolCalls))
	l.MaxFilesWritten = int(or(int64(l.MaxFilesWritten), DefaultMaxFilesWritten))
	l.MaxBytesWritten = or(l.MaxBytesWritten, DefaultMaxBytesWritten)
	l.MaxBytesRead = or(l.MaxBytesRead, DefaultMaxBytesRead)
	l.MaxTranscriptBytes = or(l.MaxTranscriptBytes, DefaultMaxTranscriptBytes)
	return l
}

// WorkUnit is what a merged proposal of the agent is worth.
type WorkUnit struct {
	Kind         string
	HumanMinutes float64
}

// Enforcement levels, as Sentinel has them.
const (
	Advisory = "advisory"
	Soft     = "soft"
	Hard     = "hard"
)

// Policy is a `policy "<name>"` block.
type Policy struct {
	Name        string
	AppliesTo   []string
	Enforcement string
	Denies      []*DenyRule
	Approvals   []*ApprovalRule
	Budget      *Budget
	Freezes     []*Freeze

	// Second-model review (review.go): the require_review rules.
	Reviews []*ReviewRule

	DeclRange hcl.Range
	Source    []byte
}

// AppliesToAgent reports whether the policy's applies_to globs match the
// agent name.
func (p *Policy) AppliesToAgent(name string) bool {
	for _, g := range p.AppliesTo {
		if globMatch(g, name) {
			return true
		}
	}
	return false
}

// DenyRule is a `deny "<name>"` block: when Condition is true the change is
// refused.
type DenyRule struct {
	Name      string
	Condition hcl.Expression
	Message   string
	DeclRange hcl.Range

	fast compiled
}

// Eval evaluates the rule's condition in c.
func (r *DenyRule) Eval(c *ConditionContext) (bool, hcl.Diagnostics) {
	return c.evalCompiled(r.fast, r.Condition)
}

// ApprovalRule is a `require_approval "<name>"` block: when Condition is true
// Min reviewers from the Reviewers groups must approve.
type ApprovalRule struct {
	Name      string
	Condition hcl.Expression
	Reviewers []string
	Min       int
	DeclRange hcl.Range
	// ReviewersRange is where the reviewers attribute's value is written.
	ReviewersRange hcl.Range
	// AllowControlChanges lets changes to control files through, with
	// this rule's approval; only in hard policies.
	AllowControlChanges bool

	fast compiled
}

// Eval evaluates the rule's condition in c; no condition is true.
func (r *ApprovalRule) Eval(c *ConditionContext) (bool, hcl.Diagnostics) {
	return c.evalCompiled(r.fast, r.Condition)
}

// Group is a `group "<name>"` block of reviewers.hcl.
type Group struct {
	Name    string
	Members []*Member
	// AcceptUnsigned lets an unsigned merge by a member's email count as
	// the member's approval (recorded as unsigned); otherwise only a merge
	// signed by the member's signing_key counts.
	AcceptUnsigned bool
	DeclRange      hcl.Range
}

// Member is a reviewer.
type Member struct {
	Name       string
	Email      string
	SigningKey string
	ForgeLogin string
	DeclRange  hcl.Range
}

// Cost returns what a run of the agent that used the given tokens costs in
// US dollars at its provider's price for its model; 0 without a price.
func (a *Agent) Cost(inputTokens, outputTokens int64) float64 {
	if a.Provider == nil {
		return 0
	}
	p, ok := a.Provider.Prices[a.Model]
	if !ok {
		return 0
	}
	return (float64(inputTokens)*p.InputPerMTok + float64(outputTokens)*p.OutputPerMTok) / 1e6
}

// Agent returns the agent with the given name, or nil.
func (s *Spec) Agent(name string) *Agent {
	for _, a := range s.Agents {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// Group returns the reviewer group with the given name, or nil.
func (s *Spec) Group(name string) *Group {
	for _, g := range s.Groups {
		if g.Name == name {
			return g
		}
	}
	return nil
}

// PoliciesFor returns the policies that apply to the agent, in file order.
func (s *Spec) PoliciesFor(agent string) []*Policy {
	var out []*Policy
	for _, p := range s.Policies {
		if p.AppliesToAgent(agent) {
			out = append(out, p)
		}
	}
	return out
}

// IsProtected reports whether an agent's change to repository path p is
// guarded: a control file (ControlPaths), a file the spec's digests cover
// (Protected), or a file that steers CI and the forge (ForgePaths).
func (s *Spec) IsProtected(p string) bool {
	if IsControlPath(p) || MatchAny(ForgePaths, p) {
		return true
	}
	_, found := slices.BinarySearch(s.Protected, p)
	return found
}
