package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/agentgitops/reconciler/metrics"
)

const roiHelp = `Roi reports, from the ledger alone, what the agents' work is worth
against what it cost, per agent and work-unit kind: the runs and their
outcomes, the proposals merged, rejected and superseded, the value of the
merged work units (their declared human_minutes at --human-hourly-usd), the
settled model cost of every attempt of every run (failed, rejected and
unchanged runs included) and the ratio value / cost, which is 0 (shown as -)
when nothing was spent. A run counts in full in the window it started in.
reconciler_agent_roi_ratio exports the same ratio over the whole ledger;
docs/metrics.md defines every figure and the JSON output.

TIME is an RFC 3339 time (2025-01-02T15:04:05Z) or a duration back from
now (90m, 24h, 7d). It reads the repository only: it needs no --key or
--identity.

Exit status is 0 on success, 1 when the ledger cannot be read or an entry
does not verify, 2 on usage errors.`

func cmdROI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("roi", "roi --repo URL [--since TIME] [--format text|json] [--human-hourly-usd N]", stderr)
	var lf ledgerFlags
	lf.register(fs)
	since := fs.String("since", "", "only runs that started at or after `TIME` (default: every run)")
	format := fs.String("format", "text", "output format: text or json")
	hourly := fs.Float64("human-hourly-usd", 100, "value of one hour of human work in US dollars, as 'run --human-hourly-usd' exports it")
	fs.Float64Var(hourly, "hourly-usd", 100, "the same as --human-hourly-usd")
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", roiHelp) }
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	switch {
	case lf.repo == "":
		return usageError(stderr, "--repo is required")
	case *format != "text" && *format != "json":
		return usageError(stderr, "--format %q: use text or json", *format)
	case !(*hourly >= 0) || math.IsInf(*hourly, 0):
		return usageError(stderr, "--human-hourly-usd %g: use a number of US dollars, 0 or more", *hourly)
	}
	from, err := parseTime("since", *since, time.Now())
	if err != nil {
		return usageError(stderr, "%s", err)
	}

	l, closeRepo, err := lf.open(ctx)
	if err != nil {
		return ledgerFail(stderr, "roi", err)
	}
	defer closeRepo()
	if _, err := l.Update(ctx); err != nil {
		return fail(stderr, fmt.Errorf("roi: %w", err))
	}
	rep := metrics.ROI(l.State(), from, *hourly)

	w := bufio.NewWriter(stdout)
	if *format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = writeROI(w, rep)
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return fail(stderr, fmt.Errorf("roi: %w", err))
	}
	return exitOK
}

// writeROI prints the report as a table: a row per agent and kind, a
// subtotal per agent with more than one kind, and the total.
func writeROI(w io.Writer, rep metrics.Report) error {
	window := "every run"
	if !rep.Since.IsZero() {
		window = "runs started since " + rep.Since.UTC().Format(time.RFC3339)
	}
	head := "(empty)"
	if rep.LedgerHead != "" {
		head = rep.LedgerHead[:12]
	}
	fmt.Fprintf(w, "ROI of %s: ledger of %d entries (head %s), human work at %s USD/h\n\n", window, rep.LedgerEntries, head, money(rep.HourlyUSD))
	if len(rep.Agents) == 0 {
		fmt.Fprintln(w, "No runs.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tKIND\tRUNS\tCHANGED\tNO-CHANGE\tDUPLICATE\tFAILED\tMERGED\tREJECTED\tSUPERSEDED\tVALUE-USD\tCOST-USD\tROI")
	row := func(agent, kind string, f metrics.Figures) {
		if kind == "" {
			kind = "-"
		}
		o, u := f.Outcomes, f.WorkUnits
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", agent, kind, f.Runs,
			o["changed"], o["no_change"], o["duplicate_open"]+o["duplicate_rejected"], o[metrics.OutcomeFailed],
			u[metrics.WorkUnitMerged], u[metrics.WorkUnitRejected], u[metrics.WorkUnitSuperseded],
			money(f.ValueUSD), cost(f.CostUSD), roi(f))
	}
	rejected := 0.0
	for _, a := range rep.Agents {
		for _, k := range a.Kinds {
			row(a.Agent, k.Kind, k.Figures)
		}
		if len(a.Kinds) > 1 {
			row(a.Agent, "(all)", a.Figures)
		}
		rejected += a.RejectedValueUSD
	}
	row("TOTAL", "", rep.Total)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nValue: merged work units' human_minutes at the hourly rate. Cost: settled model spend of every attempt,\nfailed, rejected and unchanged runs included. ROI: value / cost (- when nothing was spent).\n")
	if rejected > 0 {
		fmt.Fprintf(w, "Rejected work units declared %s USD of value that reviewers turned down.\n", money(rejected))
	}
	return nil
}

func money(v float64) string { return fmt.Sprintf("%.2f", v) }

// cost shows spend to a hundredth of a cent: model runs often cost less
// than a cent.
func cost(v float64) string { return fmt.Sprintf("%.4f", v) }

func roi(f metrics.Figures) string {
	if !(f.CostUSD > 0) {
		return "-"
	}
	return fmt.Sprintf("%.2f", f.ROI)
}
