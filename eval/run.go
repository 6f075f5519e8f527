package eval

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/secrets"
)

// RecordingsDir is where a repository keeps its recordings, relative to
// its root: evals/recordings/<agent>/<slug>.json.
const RecordingsDir = "evals/recordings"

// SpecCommit is what a scenario's run is told its spec commit is: evals
// run on a directory, and the same text keeps the model's requests, and
// so the recordings, independent of the commit they run at.
const SpecCommit = "eval"

// Mode says where a model agent's responses come from.
type Mode int

const (
	// Auto replays a scenario's recording when there is one for this
	// version of the agent and scenario, and asks the provider otherwise.
	Auto Mode = iota
	// Replay only replays: a scenario without a current recording fails.
	// Nothing is sent to a provider.
	Replay
	// Record asks the provider and writes each scenario's recording.
	Record
)

// Sources of a result's run.
const (
	SourceLive      = "live"      // the provider answered
	SourceRecording = "recording" // replayed from a recording
	SourceExec      = "exec"      // an exec agent's command ran
)

// ErrNoRecording is wrapped when Replay mode finds no current recording
// for a scenario.
var ErrNoRecording = errors.New("no recording")

// Runner runs scenarios.
type Runner struct {
	// Spec is the spec the scenarios were loaded against; FS is the
	// repository it was loaded from, whose files the workspaces hold.
	Spec *hclspec.Spec
	FS   fs.FS
	// Runners run agents, by provider kind, as reconcile.Config.Runners.
	Runners map[string]agent.Runner
	Mode    Mode
	// Recordings is the directory of recordings, read in Auto and Replay
	// modes and written in Record mode; "" reads none (Auto then always
	// asks the provider) and is refused in the other modes.
	Recordings string
	// LookupEnv finds the providers' API keys, which the secret scan of a
	// change looks for. Nil means none.
	LookupEnv func(string) (string, bool)
	// WorkDir holds the temporary workspaces; "" means os.TempDir().
	WorkDir string
}

// Result is the outcome of one scenario.
type Result struct {
	Scenario *Scenario
	Pass     bool
	Failures []Failure
	// RunID is the scenario's key, the run id its run was given.
	RunID  string
	Source string
	// Error is why the run failed, "" when it finished.
	Error string
	// Changed are the paths the run changed, sorted.
	Changed  []string
	Decision *policy.Decision
	Usage    agent.Usage
	// CostUSD is what the model exchanges cost at the provider's prices,
	// recorded ones too; SpentUSD is what this run spent (0 when replayed).
	CostUSD  float64
	SpentUSD float64
	Steps    int
	// Recording is the file the run was replayed from or recorded to.
	Recording string
}

// Failure is an expectation the run did not meet, at the expectation.
type Failure struct {
	Range   hcl.Range
	Message string
}

func (f Failure) String() string { return Pos(f.Range) + ": " + f.Message }

// Pos formats a range's start as file:line:col.
func Pos(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// Key identifies what a scenario's model exchanges depend on: the agent's
// block, prompt and provider block, and the scenario's trigger, input and
// files. The expectations and the policies are not part of it, so editing
// them keeps the recordings. Its first 12 hex digits are the run id.
func Key(sc *Scenario) string {
	h := sha256.New()
	part := func(kind string, b []byte) {
		fmt.Fprintf(h, "%s %d\n", kind, len(b))
		h.Write(b)
	}
	part("eval-key", []byte("1"))
	a := sc.Agent
	part("agent", a.Source)
	part("prompt", []byte(a.Prompt))
	if a.Provider != nil {
		part("provider", a.Provider.Source)
	}
	part("trigger", []byte(sc.Trigger))
	part("input", sc.Input)
	for _, o := range sc.Files {
		if o.Delete {
			part("delete", []byte(o.Path))
			continue
		}
		part("file", []byte(o.Path))
		part("content", []byte(o.Content))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// RunID is the run id of a scenario's run.
func RunID(sc *Scenario) string { return Key(sc)[:12] }

// RecordingPath is where a scenario's recording lives under dir.
func RecordingPath(dir string, sc *Scenario) string {
	return filepath.Join(dir, sc.Agent.Name, Slug(sc.Name)+".json")
}

// Run runs the scenarios in order and returns one result each. It fails
// only when ctx ends; a scenario that cannot run is a failed result saying
// why.
func (r *Runner) Run(ctx context.Context, scenarios []*Scenario) ([]Result, error) {
	out := make([]Result, 0, len(scenarios))
	for _, sc := range scenarios {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		out = append(out, r.run(ctx, sc))
	}
	return out, nil
}

func (r *Runner) run(ctx context.Context, sc *Scenario) Result {
	a := sc.Agent
	res := Result{Scenario: sc, RunID: RunID(sc)}
	fail := func(format string, args ...any) Result {
		res.Failures = append(res.Failures, Failure{Range: sc.DeclRange, Message: fmt.Sprintf(format, args...)})
		return res
	}
	tmp, err := os.MkdirTemp(r.WorkDir, "reconciler-eval-")
	if err != nil {
		return fail("workspace: %v", err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "repo")
	before, err := materialize(r.FS, a, sc.Files, dir)
	if err != nil {
		return fail("%v", err)
	}
	task := agent.Task{Agent: a, RunID: res.RunID, SpecCommit: SpecCommit, Trigger: sc.Trigger, Input: sc.Input,
		Dir: dir, MaxTokens: policy.TokenLimit(r.Spec, a)}

	ar, runErr := r.execute(ctx, sc, task, &res)
	res.Usage = ar.Usage
	res.CostUSD = ar.Cost(a) // each model tier's attempt at its own price
	if res.Source == SourceLive {
		res.SpentUSD = res.CostUSD
	}
	if tr, err := agent.ParseTranscript(ar.Transcript); err == nil {
		res.Steps = len(tr.Steps)
	}
	if runErr != nil {
		res.Error = agent.Redact(runErr.Error(), r.secrets()...)
		return fail("the run failed: %s", res.Error)
	}
	after, err := readSnapshot(dir)
	if err != nil {
		return fail("%v", err)
	}
	cs := changes(before, after)
	for _, c := range cs {
		res.Changed = append(res.Changed, c.Path)
	}
	if err := agent.Confine(a, cs); err != nil {
		res.Error = err.Error()
		return fail("%v", err)
	}
	if err := agent.CheckChange(r.Spec, a, cs); err != nil {
		res.Error = err.Error()
		return fail("%v", err)
	}
	if len(cs) > 0 {
		d := policy.Decide(r.Spec, hclspec.ConditionInput{
			Agent:  a,
			Run:    hclspec.RunInfo{ID: res.RunID, Trigger: sc.Trigger, Model: a.Model, SpecCommit: SpecCommit},
			Change: conditionChanges(cs),
		})
		found, err := secrets.Scan(cs, r.secrets())
		if err != nil {
			return fail("scan the change for secrets: %v", err)
		}
		sf := make([]policy.SecretFinding, 0, len(found))
		for _, f := range found {
			sf = append(sf, policy.SecretFinding{Path: f.Path, Line: f.Line, Rule: f.Rule})
		}
		d = policy.DenySecrets(d, sf)
		res.Decision = &d
	}
	res.Failures = append(res.Failures, check(sc, &res, cs)...)
	res.Pass = len(res.Failures) == 0
	return res
}

func (r *Runner) secrets() []string {
	if r.LookupEnv == nil || r.Spec == nil {
		return nil
	}
	return agent.ProviderSecrets(r.LookupEnv, r.Spec.Providers...)
}

// execute runs the scenario's agent: an exec agent's command, or a model
// agent replayed from its recording or live, recording it in Record mode.
func (r *Runner) execute(ctx context.Context, sc *Scenario, task agent.Task, res *Result) (agent.Result, error) {
	a := sc.Agent
	if a.Provider == nil {
		return agent.Result{}, errors.New("the agent has no provider")
	}
	runner, ok := r.Runners[a.Provider.Kind]
	if a.Provider.Kind != hclspec.ProviderOpenAI {
		res.Source = SourceExec
		if !ok {
			return agent.Result{}, fmt.Errorf("no runner for %s providers", a.Provider.Kind)
		}
		return runner.Run(ctx, task)
	}
	if r.Mode != Auto && r.Recordings == "" {
		return agent.Result{}, errors.New("no recordings directory given")
	}
	if r.Mode != Record && r.Recordings != "" {
		file := RecordingPath(r.Recordings, sc)
		transcript, err := os.ReadFile(file)
		switch {
		case err == nil:
			tr, perr := agent.ParseTranscript(transcript)
			if perr == nil && tr.RunID == task.RunID && tr.Agent == a.Name {
				res.Source, res.Recording = SourceRecording, file
				return agent.Replay(ctx, task, transcript)
			}
			if r.Mode == Replay {
				if perr != nil {
					return agent.Result{}, fmt.Errorf("%w for this scenario: %s: %v", ErrNoRecording, file, perr)
				}
				return agent.Result{}, fmt.Errorf("%w for this scenario: %s records run %s, made for another version of the agent or scenario (this one is run %s); record it again with reconciler eval --record %s", ErrNoRecording, file, tr.RunID, task.RunID, r.Recordings)
			}
		case r.Mode == Replay:
			return agent.Result{}, fmt.Errorf("%w for this scenario at %s; record it with reconciler eval --record %s", ErrNoRecording, file, r.Recordings)
		}
	}
	res.Source = SourceLive
	if !ok {
		return agent.Result{}, fmt.Errorf("no runner for %s providers", a.Provider.Kind)
	}
	ar, err := runner.Run(ctx, task)
	if r.Mode == Record && len(ar.Transcript) > 0 {
		file := RecordingPath(r.Recordings, sc)
		if werr := writeAtomic(file, ar.Transcript); werr != nil {
			return ar, errors.Join(err, fmt.Errorf("record %s: %w", file, werr))
		}
		res.Recording = file
	}
	return ar, err
}

// writeAtomic writes b to file through a temporary file, fsync and rename.
func writeAtomic(file string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), file)
}

// check compares the run with the scenario's expectations.
func check(sc *Scenario, res *Result, cs []gitstore.FileChange) []Failure {
	e := &sc.Expect
	var out []Failure
	failf := func(rng hcl.Range, format string, args ...any) {
		out = append(out, Failure{Range: rng, Message: fmt.Sprintf(format, args...)})
	}
	changedList := "nothing"
	if len(res.Changed) > 0 {
		changedList = strings.Join(res.Changed, ", ")
	}
	for _, it := range e.Changed {
		if !slices.ContainsFunc(res.Changed, func(p string) bool { return hclspec.MatchAny([]string{it.Value}, p) }) {
			failf(it.Range, "no changed file matches %q; the run changed %s", it.Value, changedList)
		}
	}
	for _, it := range e.Unchanged {
		var hit []string
		for _, p := range res.Changed {
			if hclspec.MatchAny([]string{it.Value}, p) {
				hit = append(hit, p)
			}
		}
		if len(hit) > 0 {
			failf(it.Range, "%q must not change, but the run changed %s", it.Value, strings.Join(hit, ", "))
		}
	}
	var written []gitstore.FileChange
	for _, c := range cs {
		if c.Status != gitstore.StatusDeleted {
			written = append(written, c)
		}
	}
	find := func(match func(string) bool) []string {
		var in []string
		for _, c := range written {
			if match(string(c.Content)) {
				in = append(in, c.Path)
			}
		}
		return in
	}
	for _, it := range e.Contains {
		if len(find(func(s string) bool { return strings.Contains(s, it.Value) })) == 0 {
			failf(it.Range, "no changed file contains %q (changed: %s)", it.Value, changedList)
		}
	}
	for _, it := range e.NotContains {
		if in := find(func(s string) bool { return strings.Contains(s, it.Value) }); len(in) > 0 {
			failf(it.Range, "%q appears in %s", it.Value, strings.Join(in, ", "))
		}
	}
	for _, it := range e.Matches {
		if len(find(it.re.MatchString)) == 0 {
			failf(it.Range, "no changed file matches /%s/ (changed: %s)", it.Value, changedList)
		}
	}
	for _, it := range e.NotMatches {
		if in := find(it.re.MatchString); len(in) > 0 {
			failf(it.Range, "/%s/ matches %s", it.Value, strings.Join(in, ", "))
		}
	}
	if e.Decision != "" {
		switch {
		case res.Decision == nil:
			failf(e.DecisionRange, "decision %q expected, but the run changed nothing, so nothing was decided", e.Decision)
		case res.Decision.Outcome != e.Decision:
			failf(e.DecisionRange, "decision is %q, expected %q: %s", res.Decision.Outcome, e.Decision, res.Decision.Summary)
		}
	}
	if e.MaxCostUSD >= 0 && res.CostUSD > e.MaxCostUSD {
		failf(e.MaxCostUSDRange, "the run cost $%.6f (%d input, %d output tokens), over max_cost_usd = %g", res.CostUSD, res.Usage.InputTokens, res.Usage.OutputTokens, e.MaxCostUSD)
	}
	if e.MaxSteps > 0 && res.Steps > e.MaxSteps {
		failf(e.MaxStepsRange, "the run took %d steps, over max_steps = %d", res.Steps, e.MaxSteps)
	}
	return out
}
