package forge

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/agentgitops/reconciler/policy"
)

// The body of a proposal's pull request starts with a marker naming the
// head and ledger entry it describes (how Open knows it is stale), and
// keeps the agent's words between two markers (how an update that has no
// words of its own keeps them). The agent's words cannot forge either
// marker: HTML comments in them are escaped.
const (
	descStart = "<!-- reconciler:description -->"
	descEnd   = "<!-- /reconciler:description -->"
)

var markerRE = regexp.MustCompile(`^<!-- reconciler:proposal agent=(\S*) run=(\S*) head=([0-9a-f]{40}) entry=([0-9]+) -->`)

type marker struct {
	agent, run, head string
	entry            uint64
}

// parseMarker reads the marker on the first line of a pull request body.
func parseMarker(body string) (marker, bool) {
	m := markerRE.FindStringSubmatch(body)
	if m == nil {
		return marker{}, false
	}
	entry, err := strconv.ParseUint(m[4], 10, 64)
	if err != nil {
		return marker{}, false
	}
	return marker{agent: m[1], run: m[2], head: m[3], entry: entry}, true
}

// body is the pull request body describing p: the agent's summary,
// rationale and risk (or, when p has none, those of old, the body it
// replaces), the decision and the rules that fired, and the ledger entry
// with the commands that verify it.
func (g *Gitea) body(p Proposal, old string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<!-- reconciler:proposal agent=%s run=%s head=%s entry=%d -->\n", markerWord(p.Agent), markerWord(p.RunID), p.Head, p.LedgerEntry)
	desc := description(p)
	if desc == "" {
		desc = oldDescription(old)
	}
	b.WriteString(descStart + "\n" + desc + "\n" + descEnd + "\n\n")

	d := p.Decision
	b.WriteString("### Decision\n\n")
	fmt.Fprintf(&b, "**%s**: %s\n\n", orDash(d.Outcome), escapeText(oneLineTitle(d.Summary)))
	if len(d.Requirements) > 0 {
		var reqs []string
		for _, r := range d.Requirements {
			reqs = append(reqs, r.String())
		}
		fmt.Fprintf(&b, "Needs approving reviews: %s. Only reviews of `%s` by the reviewers.hcl members matched by `forge_login` count; a push voids them.\n\n",
			strings.Join(reqs, ", "), p.Head)
	}
	if len(d.Overrides) > 0 {
		fmt.Fprintf(&b, "Blocked by soft rules a reviewer must override: %s.\n\n", strings.Join(d.Overrides, ", "))
	}
	if len(d.Rules) > 0 {
		b.WriteString("Rules that fired:\n\n")
		for _, r := range d.Rules {
			fmt.Fprintf(&b, "- `%s` (%s", r.Name(), r.Kind)
			if r.Enforcement != "" {
				b.WriteString(", " + r.Enforcement)
			}
			if r.Blocking {
				b.WriteString(", blocking")
			}
			b.WriteString(")")
			if r.Message != "" {
				b.WriteString(": " + escapeText(oneLineTitle(r.Message)))
			}
			if r.Pos != "" {
				b.WriteString(" at `" + r.Pos + "`")
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	if d.PolicyDigest != "" {
		fmt.Fprintf(&b, "Policy digest: `%s`\n\n", d.PolicyDigest)
	}

	b.WriteString("### Evidence\n\n")
	fmt.Fprintf(&b, "- Branch: `%s`\n- Head: `%s`\n- Ledger entry: %d (the signed decision, on the `agent-evidence` branch)\n\n", p.Branch, p.Head, p.LedgerEntry)
	repoURL := g.cloneURL()
	fmt.Fprintf(&b, "Check it:\n\n```\nreconciler ledger show %d --repo %s\nreconciler ledger verify --repo %s\n```\n", p.LedgerEntry, repoURL, repoURL)
	return b.String()
}

// cloneURL is the repository's http(s) URL, without credentials.
func (g *Gitea) cloneURL() string {
	return strings.TrimSuffix(g.cfg.BaseURL, "/") + "/" + g.cfg.Owner + "/" + g.cfg.Name + ".git"
}

// description is the agent's summary, rationale and risk as markdown, ""
// when p has none.
func description(p Proposal) string {
	var parts []string
	if s := oneLineTitle(p.Summary); s != "" {
		parts = append(parts, "**"+escapeText(s)+"**")
	}
	if s := strings.TrimSpace(p.Body); s != "" {
		parts = append(parts, escapeText(s))
	}
	if s := strings.TrimSpace(p.Risk); s != "" {
		parts = append(parts, "**Risk:** "+escapeText(s))
	}
	return strings.Join(parts, "\n\n")
}

// oldDescription is the agent's words kept in a previous body.
func oldDescription(old string) string {
	_, rest, ok := strings.Cut(old, descStart+"\n")
	if !ok {
		return ""
	}
	desc, _, ok := strings.Cut(rest, "\n"+descEnd)
	if !ok {
		return ""
	}
	return desc
}

// escapeText keeps text from opening or closing an HTML comment, so it
// cannot hide parts of the body or forge its markers.
func escapeText(s string) string {
	return strings.NewReplacer("<!--", "&lt;!--", "-->", "--&gt;").Replace(s)
}

// oneLineTitle is s on one line, without control characters.
func oneLineTitle(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			return ' '
		case r < 0x20 || r == 0x7f:
			return -1
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// markerWord is s as one word of the marker.
func markerWord(s string) string {
	s = strings.Map(func(r rune) rune {
		if r <= ' ' || r == '>' || r == '<' {
			return '_'
		}
		return r
	}, s)
	if s == "" {
		return "-"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// decisionLine says a decision in a line, for comments.
func decisionLine(d policy.Decision) string {
	s := orDash(d.Outcome)
	if d.Summary != "" {
		s += ": " + escapeText(oneLineTitle(d.Summary))
	}
	return s
}
