package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentgitops/reconciler/reconcile"
)

const statusHelp = `Status asks a running 'reconciler run' for its status (GET /api/v1/status)
and prints it: as text, the repository's conditions, revisions and ledger,
then one line per agent (Ready, reason, last run, open proposals, next
run) and the agents held back; as json, the document as the daemon serves
it (Flux-shaped: conditions Ready, Reconciling and Stalled,
observedGeneration, lastAppliedRevision and lastAttemptedRevision).

It exits 0 when the repository is Ready=True, 1 when it is not (so scripts
can wait on it) or when the daemon cannot be reached or answers with an
error, and 2 on a usage error. The default address is the daemon's default
--listen address ($RECONCILER_LISTEN, else 127.0.0.1:8080), on loopback
when it listens on all interfaces.`

// maxStatusBytes bounds the status document read from the daemon.
const maxStatusBytes = 16 << 20

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", "status [--addr URL] [--format text|json] [--timeout 10s]", stderr)
	addr := fs.String("addr", "", "base `URL` of the daemon (default: from $RECONCILER_LISTEN, else http://127.0.0.1:8080)")
	format := fs.String("format", "text", "output `format`: text or json")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", statusHelp) }
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	if *format != "text" && *format != "json" {
		return usageError(stderr, "--format %q: use text or json", *format)
	}
	if *timeout <= 0 {
		return usageError(stderr, "--timeout %s: use a positive duration", *timeout)
	}
	u, err := daemonURL(*addr)
	if err != nil {
		return usageError(stderr, "%s", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	body, st, err := fetchStatus(ctx, u.JoinPath("/api/v1/status"))
	if err != nil {
		return fail(stderr, fmt.Errorf("status: %w", err))
	}
	if *format == "json" {
		stdout.Write(body)
		if len(body) > 0 && body[len(body)-1] != '\n' {
			io.WriteString(stdout, "\n")
		}
	} else {
		writeStatusText(stdout, st)
	}
	if !st.Ready() {
		c := apimeta.FindStatusCondition(st.Conditions, meta.ReadyCondition)
		if c == nil {
			return fail(stderr, errors.New("status: the repository has no Ready condition yet (no pass has ended)"))
		}
		return fail(stderr, fmt.Errorf("status: not ready: Ready=%s %s: %s", c.Status, c.Reason, c.Message))
	}
	return exitOK
}

// fetchStatus gets the status document at u: its bytes as served, and
// decoded. A daemon that cannot be reached, answers other than 200, or
// sends what is not a status document is an error saying so.
func fetchStatus(ctx context.Context, u *url.URL) ([]byte, reconcile.Status, error) {
	var st reconcile.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, st, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, st, fmt.Errorf("cannot reach the daemon (is 'reconciler run' serving there? --addr names another): %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBytes+1))
	if err != nil {
		return nil, st, fmt.Errorf("read %s: %w", u, err)
	}
	if len(body) > maxStatusBytes {
		return nil, st, fmt.Errorf("%s: the status is over %d MiB", u, maxStatusBytes>>20)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, st, fmt.Errorf("%s: %s: %s", u, resp.Status, firstLine(string(body), 200))
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, st, fmt.Errorf("%s: not a status document: %w", u, err)
	}
	return body, st, nil
}

// firstLine is s's first line, cut to n bytes.
func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

// writeStatusText prints the status for a person: the repository, then a
// table of the agents, then why any is held back.
func writeStatusText(w io.Writer, st reconcile.Status) {
	fmt.Fprintf(w, "repository  generation %d\n", st.ObservedGeneration)
	if len(st.Conditions) == 0 {
		fmt.Fprintln(w, "  no pass has ended yet")
	}
	for _, c := range st.Conditions {
		fmt.Fprintf(w, "  %s\n", conditionText(c))
	}
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%-11s %s\n", k, v)
		}
	}
	line("applied", st.LastAppliedRevision)
	line("attempted", st.LastAttemptedRevision)
	if t := st.LastReconcileTime; t != nil {
		line("last pass", t.UTC().Format(time.RFC3339))
	}
	ledger := fmt.Sprintf("entry %d", st.Ledger.Seq)
	if st.Ledger.Head != "" {
		ledger += " at " + shortHash(st.Ledger.Head)
	}
	line("ledger", ledger)
	if n := st.NextRun; n != nil {
		line("next run", fmt.Sprintf("%s %s (%s)", n.At.UTC().Format(time.RFC3339), n.Agent, n.Reason))
	}
	if s := st.Sandbox; s != nil {
		sb := s.Mode + ": " + strings.Join(s.Mechanisms, ", ")
		if s.Helper != "" {
			sb += " (helper: " + s.Helper + ")"
		}
		line("sandbox", sb)
	}
	if len(st.Diagnostics) > 0 {
		fmt.Fprintln(w, "diagnostics:")
		for _, d := range st.Diagnostics {
			fmt.Fprintf(w, "  %s\n", d)
		}
	}
	if len(st.Agents) == 0 {
		return
	}
	names := make([]string, 0, len(st.Agents))
	for n := range st.Agents {
		names = append(names, n)
	}
	slices.Sort(names)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tREADY\tREASON\tLAST RUN\tOPEN\tNEXT RUN")
	for _, n := range names {
		as := st.Agents[n]
		ready, reason := "Unknown", "-"
		if c := apimeta.FindStatusCondition(as.Conditions, meta.ReadyCondition); c != nil {
			ready, reason = string(c.Status), c.Reason
		}
		last := "-"
		if r := as.LastRun; r != nil {
			last = fmt.Sprintf("%s %s %s", r.ID, r.Outcome, r.Started.UTC().Format(time.RFC3339))
		}
		next := "-"
		if r := as.NextRun; r != nil {
			next = r.At.UTC().Format(time.RFC3339) + " (" + r.Reason + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", n, ready, reason, last, len(as.OpenProposals), next)
	}
	tw.Flush()
	for _, n := range names {
		as := st.Agents[n]
		if h := as.Held; h != nil {
			rule := strings.Trim(h.Policy+"/"+h.Rule, "/")
			until := ""
			if h.Until != nil {
				until = " until " + h.Until.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s held: %s (%s)%s: %s\n", n, h.Kind, rule, until, h.Reason)
		}
		for _, c := range as.Conditions {
			if c.Type != meta.ReadyCondition && c.Status == metav1.ConditionTrue {
				fmt.Fprintf(w, "%s %s\n", n, conditionText(c))
			}
		}
	}
}

// conditionText is a condition on one line: Type=Status Reason: message
// (since lastTransitionTime).
func conditionText(c metav1.Condition) string {
	s := fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	if !c.LastTransitionTime.IsZero() {
		s += " (since " + c.LastTransitionTime.UTC().Format(time.RFC3339) + ")"
	}
	return s
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
