package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentgitops/reconciler/eval"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/internal/atomicfile"
	"github.com/agentgitops/reconciler/sandbox"
)

const evalSynopsis = "eval [DIR] [--agent NAME] [--format text|json] [--record DIR | --replay DIR] [--metrics-file FILE]"

const evalHelp = `Runs the prompt regression evals in evals/<agent>/*.hcl of DIR (default .):
each scenario's agent runs in a temporary workspace holding what its runs
see (its scope and command files) with the scenario's files laid over it,
through the reconciler's own runners (exec agents in the sandbox, model
agents in the tool loop), and its change is decided by the policies of DIR
as a reconcile pass would decide it. The run is compared with the
scenario's expect block.

Model agents' exchanges come from recordings, one per scenario at
<recordings>/<agent>/<scenario>.json (the agent's transcript):
  default        replay evals/recordings/ of DIR when a recording is current
                 for this version of the agent and scenario, else ask the
                 provider (OPENAI_API_KEY etc. as for reconcile)
  --record DIR   ask the provider and write the recordings under DIR
  --replay DIR   replay only, never ask a provider: a scenario without a
                 current recording fails (for CI)

Prints PASS or FAIL with the scenario's file:line:col, one line per
scenario, each failed expectation indented below at its file:line:col, and
last "N passed, M failed". --metrics-file writes reconciler_eval_pass_ratio
{agent} and friends for the node exporter's textfile collector. Exits 0 when
every scenario passes (also when there are none), 1 when one fails or the
spec or an eval file does not load, 2 on usage errors.`

func cmdEval(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("eval", evalSynopsis, stderr)
	agentName := fs.String("agent", "", "run only the evals of agent `NAME`")
	format := fs.String("format", "text", "output format: text or json")
	record := fs.String("record", "", "ask the providers and write the recordings under `DIR`")
	replay := fs.String("replay", "", "replay the recordings under `DIR` only, never asking a provider")
	metricsFile := fs.String("metrics-file", "", "write the pass ratio per agent to `FILE` in the Prometheus text format (node exporter textfile collector)")
	var sb sandboxFlags
	sb.register(fs)
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", evalHelp) }
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 1 {
		return usageError(stderr, "eval takes one directory, got %d arguments", fs.NArg())
	}
	dir := "."
	if fs.NArg() == 1 {
		dir = fs.Arg(0)
	}
	if *format != "text" && *format != "json" {
		return usageError(stderr, "--format %q: use text or json", *format)
	}
	if *record != "" && *replay != "" {
		return usageError(stderr, "--record and --replay exclude each other: record once with a provider, then replay in CI")
	}
	mode, err := sb.parse()
	if err != nil {
		return flagFailure(stderr, err)
	}
	if err := checkSpecDir(dir); err != nil {
		return fail(stderr, fmt.Errorf("eval: %w", err))
	}

	fsys := os.DirFS(dir)
	spec, diags := hclspec.Load(fsys, hclspec.Options{LookupEnv: os.LookupEnv})
	var scenarios []*eval.Scenario
	if !diags.HasErrors() {
		diags = nil // warnings about the spec are validate's business
		if *agentName != "" && spec.Agent(*agentName) == nil {
			return usageError(stderr, "--agent %q: no such agent in %s", *agentName, hclspec.AgentsGlob)
		}
		scenarios, diags = eval.Load(fsys, spec, *agentName)
	}
	var results []eval.Result
	if !diags.HasErrors() {
		r := &eval.Runner{Spec: spec, FS: fsys, Runners: runners(sandbox.Config{Mode: mode}), LookupEnv: os.LookupEnv,
			Recordings: filepath.Join(dir, filepath.FromSlash(eval.RecordingsDir))}
		switch {
		case *record != "":
			r.Mode, r.Recordings = eval.Record, *record
		case *replay != "":
			r.Mode, r.Recordings = eval.Replay, *replay
		}
		if results, err = r.Run(ctx, scenarios); err != nil {
			return fail(stderr, fmt.Errorf("eval: %w", err))
		}
	}
	if *metricsFile != "" && !diags.HasErrors() {
		var buf bytes.Buffer
		if err := eval.WriteMetrics(&buf, results, float64(time.Now().Unix())); err != nil {
			return fail(stderr, err)
		}
		if err := atomicfile.Write(*metricsFile, buf.Bytes()); err != nil {
			return fail(stderr, fmt.Errorf("eval: write --metrics-file: %w", err))
		}
	}

	if *format == "json" {
		out := struct {
			eval.Report
			Diagnostics []jsonDiag `json:"diagnostics"`
		}{Report: eval.NewReport(results, dir), Diagnostics: toJSONDiags(diags)}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	} else {
		if len(diags) > 0 {
			wr := hcl.NewDiagnosticTextWriter(stdout, parsedFiles(dir, diags), 100, false)
			_ = wr.WriteDiagnostics(diags)
		}
		if !diags.HasErrors() {
			if len(scenarios) == 0 {
				fmt.Fprintf(stdout, "no scenarios found in %s\n", eval.Glob)
			}
			eval.WriteText(stdout, results)
		}
	}
	if diags.HasErrors() || eval.Summarize(results).Failed > 0 {
		return exitFail
	}
	return exitOK
}
