package forge

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// maxBody is GitHub's limit on a pull request body, in characters.
const ghMaxBody = 65536

// title is the pull request title: the summary's first line.
func ghTitle(p Proposal) string {
	t := ghLine(p.Summary)
	if t == "" {
		t = fmt.Sprintf("%s: proposal of run %s", p.Agent, p.RunID)
	}
	return ghTruncate(t, 200)
}

// body is the pull request body of p: the agent's summary, rationale and
// risk (their text cleaned, and unable to forge the marker), the decision
// with the rules that fired, the ledger entry and how to verify it, and
// the marker recording which head and entry it was written for.
func (g *GitHub) body(p Proposal) string {
	var b strings.Builder
	d := p.Decision
	// The agent's words get at most half the body: the evidence always fits.
	agentText := func(s string) string { return ghText(s, ghMaxBody/6) }
	fmt.Fprintf(&b, "%s\n\n", agentText(p.Summary))
	if p.Body != "" {
		fmt.Fprintf(&b, "## Rationale\n\n%s\n\n", agentText(p.Body))
	}
	if p.Risk != "" {
		fmt.Fprintf(&b, "## Risk\n\n%s\n\n", agentText(p.Risk))
	}
	fmt.Fprintf(&b, "## Policy decision\n\n**%s**: %s\n\n", d.Outcome, ghText(d.Summary, 1000))
	if len(d.Requirements) > 0 {
		b.WriteString("Approvals required (reviews in state Approved on this head, by members matched through `forge_login` in `reviewers.hcl`):\n\n")
		for _, r := range d.Requirements {
			fmt.Fprintf(&b, "- %s\n", r)
		}
		b.WriteString("\n")
	}
	if len(d.Rules) > 0 {
		b.WriteString("Rules that fired:\n\n| rule | kind | blocking | message | where |\n|---|---|---|---|---|\n")
		for _, r := range d.Rules {
			fmt.Fprintf(&b, "| `%s/%s` | %s | %t | %s | %s |\n", ghCell(r.Policy), ghCell(r.Rule), ghCell(r.Kind), r.Blocking, ghCell(r.Message), ghCell(r.Pos))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "## Evidence\n\nDecided on head `%s` in ledger entry %d (branch `agent-evidence`), run `%s` of agent `%s`.\n\n",
		p.Head, p.LedgerEntry, ghCell(p.RunID), ghCell(p.Agent))
	b.WriteString("Verify it from a clone of this repository:\n\n```sh\nreconciler ledger verify --repo <clone URL>\n")
	fmt.Fprintf(&b, "reconciler ledger show --repo <clone URL> %d\nreconciler ledger show --repo <clone URL> %s\n```\n\n", p.LedgerEntry, ghShellWord(p.RunID))
	b.WriteString("A review counts only for the head it approved: a push to this branch is decided again and needs new approvals. The merge is yours to make.\n\n")
	fmt.Fprintf(&b, "<!-- agentgitops-reconciler context=%q head=%s entry=%d -->\n", g.context, p.Head, p.LedgerEntry)
	return b.String()
}

// marker is what the reconciler's marker in a body records.
type ghMarker struct {
	context, head string
	entry         uint64
}

var ghMarkerRE = regexp.MustCompile(`<!-- agentgitops-reconciler context=("(?:[^"\\]|\\.)*") head=([0-9a-f]{40}) entry=([0-9]+) -->`)

// readMarker returns the last marker of body.
func ghReadMarker(body string) (ghMarker, bool) {
	all := ghMarkerRE.FindAllStringSubmatch(body, -1)
	if len(all) == 0 {
		return ghMarker{}, false
	}
	m := all[len(all)-1]
	ctx, err := strconv.Unquote(m[1])
	if err != nil {
		return ghMarker{}, false
	}
	entry, err := strconv.ParseUint(m[3], 10, 64)
	if err != nil {
		return ghMarker{}, false
	}
	return ghMarker{context: ctx, head: m[2], entry: entry}, true
}

// sanitizeText keeps s's printable text and line breaks, at most n
// characters, and breaks any HTML comment opener so that text from an
// agent cannot hide content or forge the marker.
func ghText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case r == '\r':
			return -1
		case unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r):
			return -1
		}
		return r
	}, s)
	s = strings.ReplaceAll(s, "<!--", "&lt;!--")
	return ghTruncate(strings.TrimSpace(s), n)
}

// oneLineText is s's first non-empty line, cleaned.
func ghLine(s string) string {
	for _, line := range strings.Split(ghText(s, ghMaxBody), "\n") {
		if t := strings.TrimSpace(line); t != "" {
			return t
		}
	}
	return ""
}

// cell is s fit for one cell of a Markdown table.
func ghCell(s string) string {
	s = strings.ReplaceAll(ghLine(s), "|", `\|`)
	return strings.ReplaceAll(s, "`", "'")
}

// shellWord quotes s for a POSIX shell when it needs it.
func ghShellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
