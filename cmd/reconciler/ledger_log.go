package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentgitops/reconciler/ledger"
)

const ledgerLogHelp = `Log lists the entries of the evidence branch, oldest first, each verified
against the ledger's trust history as it is read. Filters combine: an entry
is listed when it matches every one given. TIME is an RFC 3339 time
(2025-01-02T15:04:05Z) or a duration back from now (90m, 24h, 7d).

With --format json each line is one entry's signed predicate.

Exit status is 0 when every entry verified, 1 when one does not: the
entries before it are listed, then one line on stderr names it. 2 on
usage errors.`

func cmdLedgerLog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ledger log", "ledger log --repo URL [--agent NAME] [--run RUN_ID] [--event TYPE]... [--since TIME] [--until TIME] [--format text|json]", stderr)
	var lf ledgerFlags
	lf.register(fs)
	agentName := fs.String("agent", "", "only entries of the agent `NAME`")
	runID := fs.String("run", "", "only entries of the run `RUN_ID`")
	var events multiFlag
	fs.Var(&events, "event", "only entries of this event `TYPE` (repeatable, or comma-separated)")
	since := fs.String("since", "", "only entries at or after `TIME`")
	until := fs.String("until", "", "only entries at or before `TIME`")
	format := fs.String("format", "text", "output format: text or json")
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", ledgerLogHelp) }
	if code, ok := parse(fs, args); !ok {
		return code
	}
	now := time.Now()
	var match entryFilter
	switch {
	case lf.repo == "":
		return usageError(stderr, "--repo is required")
	case fs.NArg() > 0:
		return usageError(stderr, "ledger log takes no arguments, got %q", fs.Args())
	case *format != "text" && *format != "json":
		return usageError(stderr, "--format %q: use text or json", *format)
	}
	match.agent, match.run = *agentName, *runID
	var err error
	if match.events, err = parseEventTypes(events); err != nil {
		return usageError(stderr, "%s", err)
	}
	if match.since, err = parseTime("since", *since, now); err != nil {
		return usageError(stderr, "%s", err)
	}
	if match.until, err = parseTime("until", *until, now); err != nil {
		return usageError(stderr, "%s", err)
	}

	l, closeRepo, err := lf.open(ctx)
	if err != nil {
		return ledgerFail(stderr, "log", err)
	}
	defer closeRepo()
	w := bufio.NewWriter(stdout)
	enc := json.NewEncoder(w)
	err = l.Each(ctx, func(e ledger.Entry) error {
		if !match.matches(&e) {
			return nil
		}
		if *format == "json" {
			return enc.Encode(e.Predicate)
		}
		_, err := fmt.Fprintf(w, "%6d  %s  %s\n", e.Seq, e.Time.UTC().Format("2006-01-02 15:04:05Z"), e.Summary)
		return err
	})
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return ledgerFail(stderr, "log", err)
	}
	return exitOK
}

// entryFilter selects entries for ledger log; zero fields match anything.
type entryFilter struct {
	agent, run   string
	events       map[string]bool
	since, until time.Time
}

func (f *entryFilter) matches(e *ledger.Entry) bool {
	switch {
	case f.agent != "" && e.Agent != f.agent,
		f.run != "" && e.RunID != f.run,
		f.events != nil && !f.events[e.Type],
		!f.since.IsZero() && e.Time.Before(f.since),
		!f.until.IsZero() && e.Time.After(f.until):
		return false
	}
	return true
}

// parseEventTypes reads the --event values, each one type or a
// comma-separated list; none gives nil (every type).
func parseEventTypes(values []string) (map[string]bool, error) {
	if len(values) == 0 {
		return nil, nil
	}
	known := ledger.EventTypes()
	slices.Sort(known)
	out := map[string]bool{}
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if t == "" {
				continue
			}
			if !slices.Contains(known, t) {
				return nil, fmt.Errorf("--event %q: unknown event type; use one of %s", t, strings.Join(known, ", "))
			}
			out[t] = true
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--event %q: name at least one event type", strings.Join(values, ","))
	}
	return out, nil
}

// parseTime reads a --since or --until value: an RFC 3339 time, or a
// duration back from now as time.ParseDuration reads it, with d for days
// (7d, 1d12h). "" gives the zero time.
func parseTime(flagName, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseAgo(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: want an RFC 3339 time (2025-01-02T15:04:05Z) or a duration back from now (90m, 24h, 7d)", flagName, s)
	}
	return now.Add(-d), nil
}

// parseAgo parses a non-negative duration that may start with a number
// of days: "7d", "1d12h", "36h".
func parseAgo(s string) (time.Duration, error) {
	var d time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		days, err := strconv.ParseUint(s[:i], 10, 16)
		if err != nil {
			return 0, err
		}
		d = time.Duration(days) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return d, nil
		}
	}
	rest, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if rest < 0 {
		return 0, errors.New("negative duration")
	}
	return d + rest, nil
}

// ledgerFail reports err from the ledger command op: usage errors exit 2,
// others 1. A *ledger.VerifyError names the first entry that does not
// verify, with its path and commit.
func ledgerFail(stderr io.Writer, op string, err error) int {
	var ue usageErr
	if errors.As(err, &ue) {
		return usageError(stderr, "%s", ue)
	}
	return fail(stderr, fmt.Errorf("ledger %s: %w", op, err))
}

const ledgerShowHelp = `Show prints one entry, given its sequence number, or every entry of a run,
given its 12-hex-digit run id, in order, each verified against the ledger's
trust history: the signed predicate's fields, its subject, and where the
entry is stored (evidence commit, path, bundle digest, signing key).

With --format json it prints the entry as one JSON object
{"predicate", "subject", "commit", "path", "digest", "signer"}, or an array
of them for a run.

Exit status is 0 when the entry or run was found, 1 when it was not or an
entry up to it does not verify, 2 on usage errors.`

func cmdLedgerShow(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ledger show", "ledger show --repo URL SEQ|RUN_ID [--trusted-key FILE]... [--format text|json]", stderr)
	var lf ledgerFlags
	lf.register(fs)
	format := fs.String("format", "text", "output format: text or json")
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", ledgerShowHelp) }
	if code, ok := parse(fs, args); !ok {
		return code
	}
	pos := fs.Args()
	switch {
	case lf.repo == "":
		return usageError(stderr, "--repo is required")
	case len(pos) != 1:
		return usageError(stderr, "ledger show takes one SEQ or RUN_ID, got %d arguments", len(pos))
	case *format != "text" && *format != "json":
		return usageError(stderr, "--format %q: use text or json", *format)
	}
	arg := pos[0]
	seq, seqErr := strconv.ParseUint(arg, 10, 64)
	isRun := isRunID(arg)
	if !isRun && (seqErr != nil || seq == 0) {
		return usageError(stderr, "ledger show: %q is neither an entry number (1, 2, ...) nor a run id (12 hex digits)", arg)
	}

	l, closeRepo, err := lf.open(ctx)
	if err != nil {
		return ledgerFail(stderr, "show", err)
	}
	defer closeRepo()
	if isRun {
		// A run id of 12 decimal digits could also be an entry number:
		// the run wins, the entry is the fallback.
		var fallback uint64
		if seqErr == nil {
			fallback = seq
		}
		err = showRun(ctx, l, stdout, *format, arg, fallback)
	} else {
		err = showSeq(ctx, l, stdout, *format, seq)
	}
	if err != nil {
		return ledgerFail(stderr, "show", err)
	}
	return exitOK
}

// showSeq prints entry seq. It reads no further than that entry, so an
// entry before a damaged one still shows.
func showSeq(ctx context.Context, l *ledger.Ledger, w io.Writer, format string, seq uint64) error {
	errFound := errors.New("found")
	var hit ledger.Entry
	var last uint64
	err := l.Each(ctx, func(e ledger.Entry) error {
		last = e.Seq
		if e.Seq == seq {
			hit = e
			return errFound
		}
		return nil
	})
	switch {
	case errors.Is(err, errFound):
		return printEntries(w, format, []ledger.Entry{hit}, false)
	case err != nil:
		return err
	}
	return fmt.Errorf("no entry %d on %s: it has %d entries", seq, ledger.Branch, last)
}

// showRun prints every entry of the run id in order, or, when the run has
// none and fallback is not 0, entry fallback. When an entry does not
// verify, the run's entries before it are printed, then its error returned.
func showRun(ctx context.Context, l *ledger.Ledger, w io.Writer, format, id string, fallback uint64) error {
	var found []ledger.Entry
	var bySeq *ledger.Entry
	var last uint64
	err := l.Each(ctx, func(e ledger.Entry) error {
		last = e.Seq
		e.Bundle = nil // not shown; hold only the run's predicates
		switch {
		case e.RunID == id:
			found = append(found, e)
		case fallback != 0 && e.Seq == fallback:
			bySeq = &e
		}
		return nil
	})
	switch {
	case len(found) > 0:
		if werr := printEntries(w, format, found, true); err == nil {
			err = werr
		}
		return err
	case err != nil:
		return err
	case bySeq != nil:
		return printEntries(w, format, []ledger.Entry{*bySeq}, false)
	}
	return fmt.Errorf("no run %s on %s (%d entries read)", id, ledger.Branch, last)
}

// isRunID reports whether s has the form of a run id: 12 lowercase hex
// digits.
func isRunID(s string) bool {
	if len(s) != 12 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// printEntries prints entries as ledger show does: as a JSON array when
// asArray, else the single entry as a JSON object; in text, each entry's
// fields, a blank line between entries.
func printEntries(w io.Writer, format string, entries []ledger.Entry, asArray bool) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if !asArray {
			return enc.Encode(newEntryDoc(entries[0], false))
		}
		docs := make([]entryDoc, len(entries))
		for i, e := range entries {
			docs[i] = newEntryDoc(e, false)
		}
		return enc.Encode(docs)
	}
	bw := bufio.NewWriter(w)
	for i, e := range entries {
		if i > 0 {
			bw.WriteString("\n")
		}
		writeEntryText(bw, &e)
	}
	return bw.Flush()
}

// entryDoc is the JSON form of an entry for ledger show and export.
type entryDoc struct {
	Predicate ledger.Predicate `json:"predicate"`
	Subject   subjectDoc       `json:"subject"`
	// Commit is the evidence commit that added the entry, Path the
	// bundle's path in it, Digest the bundle's sha256 (the next entry's
	// prev) and Signer the ID of the trusted key whose signature verified.
	Commit string `json:"commit"`
	Path   string `json:"path"`
	Digest string `json:"digest"`
	Signer string `json:"signer"`
	// Bundle is the Sigstore bundle as stored (export only).
	Bundle json.RawMessage `json:"bundle,omitempty"`
}

// subjectDoc is an in-toto resource descriptor.
type subjectDoc struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

func newEntryDoc(e ledger.Entry, bundle bool) entryDoc {
	d := entryDoc{
		Predicate: e.Predicate,
		Subject:   subjectDoc{Name: e.SubjectName, Digest: map[string]string{"gitCommit": e.Subject}},
		Commit:    e.Commit.String(),
		Path:      e.Path,
		Digest:    e.Digest,
		Signer:    e.Signer,
	}
	if bundle {
		d.Bundle = json.RawMessage(e.Bundle)
	}
	return d
}

// writeEntryText writes an entry's fields, one per line: those every entry
// has, then each predicate field that is set. Keys are shown by ID and
// source, not PEM.
func writeEntryText(w *bufio.Writer, e *ledger.Entry) {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-17s %s\n", label+":", fmt.Sprintf(format, args...))
	}
	opt := func(label, v string) {
		if v != "" {
			line(label, "%s", v)
		}
	}
	item := func(format string, args ...any) {
		fmt.Fprintf(w, "    %s\n", fmt.Sprintf(format, args...))
	}
	line("seq", "%d", e.Seq)
	line("time", "%s", e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	line("event", "%s", e.Type)
	line("summary", "%s", e.Summary)
	opt("agent", e.Agent)
	opt("run", e.RunID)
	opt("trigger", e.Trigger)
	opt("spec commit", e.SpecCommit)
	opt("spec digest", e.SpecDigest)
	if e.SubjectName != "" {
		line("subject", "%s (%s)", e.Subject, e.SubjectName)
	} else {
		line("subject", "%s", e.Subject)
	}
	line("evidence commit", "%s", e.Commit)
	line("path", "%s", e.Path)
	line("signer", "%s", e.Signer)
	if e.Prev == "" {
		line("prev", "none (first entry)")
	} else {
		line("prev", "%s", e.Prev)
	}
	line("digest", "%s", e.Digest)

	opt("model", e.Model)
	if u := e.Usage; u != nil {
		line("usage", "%d input, %d output tokens", u.InputTokens, u.OutputTokens)
	}
	if e.CostUSD != 0 {
		line("cost", "%s USD", strconv.FormatFloat(e.CostUSD, 'f', -1, 64))
	}
	if e.ReservedUSD != 0 {
		line("reserved", "%s USD", strconv.FormatFloat(e.ReservedUSD, 'f', -1, 64))
	}
	if wu := e.WorkUnit; wu != nil {
		line("work unit", "%s (%s human minutes)", wu.Kind, strconv.FormatFloat(wu.HumanMinutes, 'f', -1, 64))
	}
	if a := e.Alert; a != nil {
		line("alert", "%s, group %s", a.Status, a.GroupKey)
		opt("alert receiver", a.Receiver)
		opt("alertmanager", a.ExternalURL)
		for _, it := range a.Alerts {
			item("%s %s %s", it.Status, it.Fingerprint, labelString(it.Labels))
		}
	}
	if rq := e.Request; rq != nil {
		line("request", "%s", rq.ID)
		opt("requested by", rq.By)
		opt("reason", rq.Reason)
	}
	if h := e.Hold; h != nil {
		line("hold", "%s: %s", h.Kind, h.Reason)
		opt("hold policy", h.Policy)
		opt("hold rule", h.Rule)
		if !h.Until.IsZero() {
			line("hold until", "%s", h.Until.UTC().Format(time.RFC3339))
		}
	}
	opt("outcome", e.Outcome)
	if c := e.Change; c != nil {
		line("change", "%s: %d file(s), +%d -%d", c.ID, len(c.Files), c.Added, c.Removed)
		for _, f := range c.Files {
			item("%s", f)
		}
	}
	if len(e.Decision) > 0 {
		line("decision", "%s", compactJSON(e.Decision))
	}
	if p := e.Proposal; p != nil {
		line("proposal", "%s at %s", p.Branch, p.Head)
		opt("change id", p.ChangeID)
		opt("merge commit", p.MergeCommit)
	}
	opt("reviewer", e.Reviewer)
	if len(e.Overrides) > 0 {
		line("overrides", "%s", strings.Join(e.Overrides, ", "))
	}
	opt("transcript", e.TranscriptDigest)
	opt("error", e.Error)
	if len(e.Diagnostics) > 0 {
		line("diagnostics", "%d", len(e.Diagnostics))
		for _, d := range e.Diagnostics {
			item("%s", d)
		}
	}
	if len(e.Keys) > 0 {
		line("keys", "%d trusted from entry %d on", len(e.Keys), trustedFrom(e))
		for _, k := range e.Keys {
			if k.Source != "" {
				item("%s (%s)", k.ID, k.Source)
			} else {
				item("%s", k.ID)
			}
		}
	}
}

// trustedFrom is the first entry a genesis or keys.changed entry's keys
// sign: genesis signs itself, keys.changed takes effect after itself.
func trustedFrom(e *ledger.Entry) uint64 {
	if e.Type == ledger.Genesis {
		return e.Seq
	}
	return e.Seq + 1
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

const ledgerExportHelp = `Export writes every entry of the evidence branch as JSON Lines, oldest
first, each verified against the ledger's trust history as it streams: one
object per line with the signed predicate, the subject, the evidence
commit, the bundle's path and sha256, the signing key's ID, and the
Sigstore bundle itself under "bundle" (a JSON object, as stored).

With --output FILE the export replaces FILE atomically, and only when every
entry verified: on a damaged ledger FILE is left as it was and the entries
before the bad one are written to FILE.partial.

Exit status is 0 when every entry verified, 1 when one does not (one line on
stderr names it), 2 on usage errors.`

func cmdLedgerExport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ledger export", "ledger export --repo URL [--trusted-key FILE]... [--output FILE]", stderr)
	var lf ledgerFlags
	lf.register(fs)
	output := fs.String("output", "", "write to `FILE` (atomically) instead of stdout")
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", ledgerExportHelp) }
	if code, ok := parse(fs, args); !ok {
		return code
	}
	switch {
	case lf.repo == "":
		return usageError(stderr, "--repo is required")
	case fs.NArg() > 0:
		return usageError(stderr, "ledger export takes no arguments, got %q", fs.Args())
	}
	l, closeRepo, err := lf.open(ctx)
	if err != nil {
		return ledgerFail(stderr, "export", err)
	}
	defer closeRepo()

	if *output == "" {
		w := bufio.NewWriter(stdout)
		_, err := exportEntries(ctx, l, w)
		if ferr := w.Flush(); err == nil {
			err = ferr
		}
		if err != nil {
			return ledgerFail(stderr, "export", err)
		}
		return exitOK
	}
	if err := exportFile(ctx, l, *output); err != nil {
		return ledgerFail(stderr, "export", err)
	}
	return exitOK
}

// exportEntries writes each entry as one JSON line and returns how many it
// wrote.
func exportEntries(ctx context.Context, l *ledger.Ledger, w io.Writer) (int, error) {
	enc := json.NewEncoder(w)
	n := 0
	err := l.Each(ctx, func(e ledger.Entry) error {
		if err := enc.Encode(newEntryDoc(e, true)); err != nil {
			return fmt.Errorf("entry %d: %w", e.Seq, err)
		}
		n++
		return nil
	})
	return n, err
}

// exportFile exports to a temporary file beside path, synced, then renamed
// over path. When an entry does not verify, path is left as it was and the
// temporary file, holding the entries before it, becomes path.partial.
func exportFile(ctx context.Context, l *ledger.Ledger, path string) error {
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("--output %q: %w", path, err)
	}
	tmp := f.Name()
	dest := path
	defer func() {
		if f != nil {
			_ = f.Close()
		}
		if tmp != "" {
			_ = os.Remove(tmp)
		}
	}()

	w := bufio.NewWriter(f)
	n, err := exportEntries(ctx, l, w)
	var verr *ledger.VerifyError
	if err != nil && !errors.As(err, &verr) {
		return err
	}
	if verr != nil {
		dest = path + ".partial"
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	f = nil
	if err := os.Rename(tmp, dest); err != nil {
		return err
	}
	tmp = ""
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	if verr != nil {
		return fmt.Errorf("%w; %s was left as it was, the %d entries before it are in %s", verr, path, n, dest)
	}
	return nil
}

// labelString prints labels as Prometheus does: {k="v", ...}, sorted.
func labelString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
