package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/eval"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/sandbox"
)

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("plan", "plan --repo URL [--branch main] [--change-from REF --agent NAME [--no-evals] [--no-review] [--cache-dir DIR]] [--format text|json]", stderr)
	repo := fs.String("repo", "", "desired-state repository (required)")
	branch := fs.String("branch", "main", "protected branch holding the desired state")
	changeFrom := fs.String("change-from", "", "a branch or commit: show the decision a pass would record on its change against the protected branch")
	agentName := fs.String("agent", "", "with --change-from: the agent the change is attributed to")
	noEvals := fs.Bool("no-evals", false, "with --change-from: do not run the evals the change triggers (no model calls); the decision is provisional")
	noReview := fs.Bool("no-review", false, "with --change-from: do not ask the require_review reviewer models (no model calls); the decision is provisional")
	cacheDir := fs.String("cache-dir", "", "with --change-from: the cache directory of once and run, whose response cache (DIR/responses) model agents with cache = true read and add to (\"\" caches nothing; the repository mirror stays in memory)")
	var sb sandboxFlags // with --change-from: the exec agents' eval runs
	sb.register(fs)
	format := fs.String("format", "text", "output format: text or json")
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", planHelp) }
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	switch {
	case *repo == "":
		return usageError(stderr, "--repo is required")
	case *changeFrom != "" && *agentName == "":
		return usageError(stderr, "--change-from needs --agent: the policies that apply depend on the agent")
	case *changeFrom == "" && (*noEvals || *noReview || *agentName != ""):
		return usageError(stderr, "--agent, --no-evals and --no-review go with --change-from")
	case *format != "text" && *format != "json":
		return usageError(stderr, "--format %q: use text or json", *format)
	}
	mode, err := sb.parse()
	if err != nil {
		return flagFailure(stderr, err)
	}
	hide := []string{*cacheDir}
	if !strings.Contains(*repo, "://") || strings.HasPrefix(*repo, "file://") {
		hide = append(hide, strings.TrimPrefix(*repo, "file://"))
	}
	r, err := reconcile.New(ctx, reconcile.Config{Repo: *repo, Branch: *branch, LookupEnv: os.LookupEnv,
		Runners:  cachedRunners(sandbox.Config{Mode: mode, Hide: hide}, *cacheDir),
		Identity: object.Signature{Name: "Reconciler plan", Email: "plan@localhost"}})
	if err != nil {
		return fail(stderr, err)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if *changeFrom != "" {
		cp, err := r.DecideChange(ctx, *agentName, *changeFrom, reconcile.ChangeOptions{NoEvals: *noEvals, NoReview: *noReview})
		if err != nil {
			return fail(stderr, err)
		}
		if *format == "json" {
			_ = enc.Encode(cp)
		} else {
			writeChangePlan(stdout, cp)
		}
		return exitOK
	}
	plan, err := r.Plan(ctx)
	if err != nil {
		return fail(stderr, err)
	}
	if *format == "json" {
		_ = enc.Encode(plan)
	} else {
		for _, d := range plan.Diagnostics {
			fmt.Fprintf(stdout, "spec error: %s\n", d)
		}
		if plan.SpecCommit == "" {
			fmt.Fprintln(stdout, "no spec has ever loaded: nothing would run")
		} else {
			fmt.Fprintf(stdout, "spec %s\n", plan.SpecCommit[:12])
			for _, a := range plan.Agents {
				verdict := "wait"
				if a.Run {
					verdict = "RUN "
				}
				fmt.Fprintf(stdout, "%s %-20s %s\n", verdict, a.Agent, a.Reason)
			}
		}
	}
	switch {
	case len(plan.Diagnostics) > 0 && plan.SpecCommit != "":
		return fail(stderr, fmt.Errorf("plan: the spec on %s does not load (%d diagnostic(s)); planned on the last good spec %s", *branch, len(plan.Diagnostics), plan.SpecCommit[:12]))
	case len(plan.Diagnostics) > 0:
		return fail(stderr, fmt.Errorf("plan: the spec on %s does not load (%d diagnostic(s)) and no spec ever did: nothing would run", *branch, len(plan.Diagnostics)))
	case plan.SpecCommit == "":
		return fail(stderr, fmt.Errorf("plan: no spec has ever loaded: nothing would run"))
	}
	return exitOK
}

// writeChangePlan prints a change's plan: the decision, whether it is
// provisional, each eval scenario and review, the rules, and the cost.
func writeChangePlan(w io.Writer, cp *reconcile.ChangePlan) {
	fmt.Fprintf(w, "%s\n", cp.Summary)
	if cp.Provisional {
		var skipped []string
		for _, g := range cp.NotEvaluated {
			switch g {
			case reconcile.GateEvals:
				skipped = append(skipped, "evals (--no-evals)")
			case reconcile.GateReview:
				skipped = append(skipped, "review (--no-review: "+strings.Join(cp.SkippedReviews, ", ")+")")
			}
		}
		fmt.Fprintf(w, "PROVISIONAL: not evaluated: %s; a pass runs them and may decide otherwise\n", strings.Join(skipped, ", "))
	}
	if ev := cp.Evals; ev != nil {
		fmt.Fprintf(w, "evals of %s: %d passed, %d failed\n", strings.Join(ev.Agents, ", "), ev.Passed, ev.Failed)
		for _, sc := range cp.Scenarios {
			status := "PASS"
			if !sc.Pass {
				status = "FAIL"
			}
			how := sc.Source
			switch sc.Source {
			case "":
				how = "not run"
			case eval.SourceLive, eval.SourceRecording:
				how = fmt.Sprintf("%s, %d steps, %d in / %d out tokens, $%.6f", sc.Source, sc.Steps, sc.Usage.InputTokens, sc.Usage.OutputTokens, sc.CostUSD)
			}
			fmt.Fprintf(w, "  %s %s %s/%s (%s)\n", status, sc.Pos, sc.Agent, sc.Name, how)
			for _, f := range sc.Failures {
				fmt.Fprintf(w, "      %s: %s\n", f.Pos, f.Message)
			}
		}
		for _, f := range cp.EvalsNotRun {
			fmt.Fprintf(w, "  FAIL %s\n", f)
		}
	}
	if len(cp.Reviews) > 0 {
		fmt.Fprintln(w, "reviews:")
		for _, rv := range cp.Reviews {
			verdict := rv.Verdict
			if rv.Risk != "" {
				verdict += " (" + rv.Risk + " risk)"
			}
			line := fmt.Sprintf("  %s/%s %s/%s: %s", rv.Policy, rv.Rule, strings.TrimPrefix(rv.Provider, "provider.openai."), rv.Model, verdict)
			if rv.Error != "" {
				line += ": " + rv.Error
			}
			if rv.InputTokens+rv.OutputTokens > 0 || rv.CostUSD > 0 {
				line += fmt.Sprintf(" (%d in / %d out tokens, $%.6f)", rv.InputTokens, rv.OutputTokens, rv.CostUSD)
			}
			fmt.Fprintln(w, line)
			for _, reason := range rv.Reasons {
				fmt.Fprintf(w, "      %s\n", reason)
			}
		}
	}
	fmt.Fprintln(w, "rules:")
	for _, rule := range cp.Rules {
		state := "blocking"
		if !rule.Blocking {
			state = "advisory"
		}
		line := fmt.Sprintf("  %-16s %-34s %s", rule.Kind, rule.Name(), state)
		if rule.Pos != "" {
			line += "  " + rule.Pos
		}
		if rule.Message != "" {
			line += "  " + rule.Message
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	if cp.Evals != nil || len(cp.Reviews) > 0 {
		var in, out int64
		if cp.Usage != nil {
			in, out = cp.Usage.InputTokens, cp.Usage.OutputTokens
		}
		fmt.Fprintf(w, "cost $%.6f (evals %d in / %d out tokens, reviews %d in / %d out tokens): the decision entry would count it against the agent's budget\n",
			cp.CostUSD, cp.EvalUsage.InputTokens, cp.EvalUsage.OutputTokens, in, out)
	}
	fmt.Fprintf(w, "policy digest %s\n", cp.PolicyDigest)
}

const planHelp = `Plan shows, for each agent, whether a pass would run it now and why not
(suspend, freeze, budget, schedule). It writes nothing.

With --change-from REF --agent NAME it shows the decision a pass would
record on REF's change (against its merge base with the protected branch)
made by agent NAME, computed as the pass computes it: the evals of every
agent the change redefines (its block, prompt, provider or policies), the
policies, the secret scan, and the second-model reviews of the
require_review rules that fire, asked within the agent's money budgets as
the pass asks them. It prints each eval scenario PASS or FAIL at its
file:line:col, each reviewer's verdict and reasons, the rules, and what the
evals and reviews cost (tokens, and the dollars the decision entry would
count against the agent's budget). The policies, reviewer prompts, evals
and recordings are the protected branch's, never REF's. By default the
evals and reviews run, as in a pass, and cost model calls; --no-evals and
--no-review skip them for a free preview, and the output then says which
gates were not evaluated and that the decision is provisional (json:
"not_evaluated", "provisional"). Nothing is recorded or pushed; model
agents with cache = true use the response cache under --cache-dir.

Exit status is 0 when the spec on the branch loads (with --change-from:
whatever the decision), 1 when it does not (its diagnostics are printed
with file:line:col, and the agents are planned on the last good spec, if
any) or on any other failure, 2 on usage errors.`
