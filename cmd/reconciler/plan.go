package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/reconcile"
)

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("plan", "plan --repo URL [--branch main] [--change-from REF --agent NAME] [--format text|json]", stderr)
	repo := fs.String("repo", "", "desired-state repository (required)")
	branch := fs.String("branch", "main", "protected branch holding the desired state")
	changeFrom := fs.String("change-from", "", "a branch or commit: show the decision on its change against the protected branch")
	agentName := fs.String("agent", "", "with --change-from: the agent the change is attributed to")
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
	case *format != "text" && *format != "json":
		return usageError(stderr, "--format %q: use text or json", *format)
	}
	r, err := reconcile.New(ctx, reconcile.Config{Repo: *repo, Branch: *branch,
		Identity: object.Signature{Name: "Reconciler plan", Email: "plan@localhost"}})
	if err != nil {
		return fail(stderr, err)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if *changeFrom != "" {
		d, err := r.DecideChange(ctx, *agentName, *changeFrom)
		if err != nil {
			return fail(stderr, err)
		}
		if *format == "json" {
			_ = enc.Encode(d)
			return exitOK
		}
		fmt.Fprintf(stdout, "%s\n", d.Summary)
		for _, rule := range d.Rules {
			state := "blocking"
			if !rule.Blocking {
				state = "advisory"
			}
			line := fmt.Sprintf("  %-9s %-34s %s", rule.Kind, rule.Name(), state)
			if rule.Pos != "" {
				line += "  " + rule.Pos
			}
			if rule.Message != "" {
				line += "  " + rule.Message
			}
			fmt.Fprintln(stdout, strings.TrimRight(line, " "))
		}
		fmt.Fprintf(stdout, "policy digest %s\n", d.PolicyDigest)
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

const planHelp = `Plan shows, for each agent, whether a pass would run it now and why not
(suspend, freeze, budget, schedule), or with --change-from the policy
decision on a branch's change. It writes nothing.

Exit status is 0 when the spec on the branch loads, 1 when it does not
(its diagnostics are printed with file:line:col, and the agents are
planned on the last good spec, if any) or on any other failure, 2 on
usage errors.`
