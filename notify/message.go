package notify

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// Kinds of notification, as they appear in logs and in each message's
// first line. The ledger kinds are the event types they come from.
const (
	KindProposalOpened  = ledger.ProposalOpened
	KindProposalUpdated = ledger.ProposalUpdated
	KindDecisionChanged = ledger.PolicyDecision
	KindViolation       = ledger.PolicyViolation
	KindBudgetExceeded  = ledger.BudgetExceeded
	KindRunHeld         = ledger.RunHeld
	KindStall           = "stall"
)

// DefaultHeldKinds are the run.held kinds notified when Config.HeldKinds
// is nil: an agent waiting for its open proposals to be reviewed.
// budget.exceeded is always notified.
var DefaultHeldKinds = []string{"open_proposals"}

// candidate is a notification the ledger's state calls for, before it is
// known whether it was sent: its dedup key, the entry it is about (0 when
// the state does not say, as for violations) and how to build it.
type candidate struct {
	key   string
	seq   uint64
	kind  string
	agent string
	run   string
	build func() message
}

// message is what a notification says, before it is rendered.
type message struct {
	title  string
	fields []field
	// verify are the commands that show the evidence.
	verify []string
}

type field struct {
	label, value string
	code         bool // shown as code (branches, commits)
}

// payload is the JSON body posted: the Slack incoming-webhook format,
// which Mattermost, Rocket.Chat and most chat tools accept too. Text is
// the whole message (the only part most receivers read); Blocks is the
// same for Slack's layout.
type payload struct {
	Text   string  `json:"text"`
	Blocks []block `json:"blocks,omitempty"`
}

type block struct {
	Type     string       `json:"type"`
	Text     *textObject  `json:"text,omitempty"`
	Elements []textObject `json:"elements,omitempty"`
}

type textObject struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// Limits on what a message holds, below Slack's (150 characters for a
// header, 3000 for a section): a longer value is cut with "…".
const (
	maxTitle = 140
	maxValue = 600
)

// candidates returns the notifications st calls for, in ledger order,
// those about no particular entry last.
func (n *Notifier) candidates(st *ledger.State) []candidate {
	var out []candidate
	for _, r := range st.Runs {
		if r.ProposalOpen() {
			out = append(out, n.proposalOpened(r))
			if r.Updated != nil && r.Updated.Proposal != nil {
				out = append(out, n.proposalUpdated(r))
			}
			if d := r.Decision; d != nil && d.Type == ledger.PolicyDecision && d.Seq > r.Opened.Seq {
				out = append(out, n.decisionChanged(r))
			}
		}
		for _, subject := range r.Violations {
			out = append(out, n.violation(r, subject))
		}
	}
	for _, subject := range slices.Sorted(maps.Keys(st.ViolationSubjects)) {
		out = append(out, n.violation(nil, subject))
	}
	for _, agent := range slices.Sorted(maps.Keys(st.Held)) {
		e := st.Held[agent]
		if e == nil || e.Hold == nil {
			continue
		}
		if e.Type == ledger.RunHeld && !n.heldKind(e.Hold.Kind) {
			continue
		}
		out = append(out, n.hold(e))
	}
	slices.SortStableFunc(out, func(a, b candidate) int {
		// Entries in ledger order; those of no known entry (seq 0) last.
		return cmp.Compare(a.seq-1, b.seq-1)
	})
	return out
}

func (n *Notifier) heldKind(kind string) bool {
	return n.heldKinds["*"] || n.heldKinds[kind]
}

// entryKey is the dedup key of a notification about entry e.
func entryKey(kind, subject string, e *ledger.Entry) string {
	return fmt.Sprintf("%s/%s/%d/%s", kind, subject, e.Seq, short(e.Digest))
}

func (n *Notifier) proposalOpened(r *ledger.Run) candidate {
	e := r.Opened
	return candidate{key: entryKey(KindProposalOpened, r.ID, e), seq: e.Seq, kind: KindProposalOpened, agent: r.Agent, run: r.ID,
		build: func() message {
			needs, decided := needs(r.Decision)
			m := message{title: fmt.Sprintf("Proposal opened: %s run %s needs %s", r.Agent, r.ID, needs)}
			m.fields = n.runFields(r)
			m.fields = append(m.fields, field{"Branch", e.Proposal.Branch, true}, field{"Head", e.Proposal.Head, true})
			if decided != "" {
				m.fields = append(m.fields, field{"Decision", decided, false})
			}
			m.fields = append(m.fields, field{"Summary", e.Summary, false})
			m.verify = []string{n.command("ledger", "show", fmt.Sprint(e.Seq)), n.command("ledger", "show", r.ID)}
			return m
		}}
}

func (n *Notifier) proposalUpdated(r *ledger.Run) candidate {
	e := r.Updated
	return candidate{key: entryKey(KindProposalUpdated, r.ID, e), seq: e.Seq, kind: KindProposalUpdated, agent: r.Agent, run: r.ID,
		build: func() message {
			needs, decided := needs(r.Decision)
			m := message{title: fmt.Sprintf("Proposal updated: %s run %s moved to %s and needs %s again", r.Agent, r.ID, short(e.Proposal.Head), needs)}
			m.fields = n.runFields(r)
			m.fields = append(m.fields, field{"Branch", e.Proposal.Branch, true}, field{"Head", e.Proposal.Head, true})
			if e.Proposal.PreviousHead != "" {
				m.fields = append(m.fields, field{"Previous head", e.Proposal.PreviousHead + " (its approvals no longer count)", false})
			}
			if decided != "" {
				m.fields = append(m.fields, field{"Decision", decided, false})
			}
			m.fields = append(m.fields, field{"Summary", e.Summary, false})
			m.verify = []string{n.command("ledger", "show", fmt.Sprint(e.Seq)), n.command("ledger", "show", r.ID)}
			return m
		}}
}

func (n *Notifier) decisionChanged(r *ledger.Run) candidate {
	e := r.Decision
	return candidate{key: entryKey(KindDecisionChanged, r.ID, e), seq: e.Seq, kind: KindDecisionChanged, agent: r.Agent, run: r.ID,
		build: func() message {
			needs, decided := needs(e)
			m := message{title: fmt.Sprintf("Decision changed: %s run %s now needs %s", r.Agent, r.ID, needs)}
			m.fields = n.runFields(r)
			m.fields = append(m.fields, field{"Branch", r.Opened.Proposal.Branch, true})
			if decided != "" {
				m.fields = append(m.fields, field{"Decision", decided, false})
			}
			m.fields = append(m.fields, field{"Summary", e.Summary, false})
			m.verify = []string{n.command("ledger", "show", fmt.Sprint(e.Seq)), n.command("ledger", "show", r.ID)}
			return m
		}}
}

// violation is a policy.violation of run r (nil: of no run) about the
// commit subject. The state keeps the subject, not the entry, so the
// message points to the entries rather than quoting them.
func (n *Notifier) violation(r *ledger.Run, subject string) candidate {
	c := candidate{key: KindViolation + "//" + subject, kind: KindViolation}
	if r != nil {
		c.key, c.agent, c.run = KindViolation+"/"+r.ID+"/"+subject, r.Agent, r.ID
	}
	c.build = func() message {
		if r == nil {
			return message{
				title: fmt.Sprintf("Policy violation: commit %s reached the protected branch without an approved merge", short(subject)),
				fields: []field{{"Commit", subject, true},
					{"Effect", "recorded, never undone; keys it adds to .reconciler/keys are not trusted", false}},
				verify: []string{n.command("ledger", "log", "--event", ledger.PolicyViolation)},
			}
		}
		m := message{title: fmt.Sprintf("Policy violation: %s run %s: commit %s broke its policy decision", r.Agent, r.ID, short(subject))}
		m.fields = n.runFields(r)
		m.fields = append(m.fields, field{"Commit", subject, true})
		if p := proposalOf(r); p != nil {
			m.fields = append(m.fields, field{"Branch", p.Branch, true})
		}
		if r.Decision != nil {
			if _, decided := needs(r.Decision); decided != "" {
				m.fields = append(m.fields, field{"Decision", decided, false})
			}
		}
		m.verify = []string{n.command("ledger", "log", "--run", r.ID, "--event", ledger.PolicyViolation), n.command("ledger", "show", r.ID)}
		return m
	}
	return c
}

func proposalOf(r *ledger.Run) *ledger.Proposal {
	for _, e := range []*ledger.Entry{r.Closed, r.Updated, r.Opened} {
		if e != nil && e.Proposal != nil {
			return e.Proposal
		}
	}
	return nil
}

func (n *Notifier) hold(e *ledger.Entry) candidate {
	kind := KindRunHeld
	if e.Type == ledger.BudgetExceeded {
		kind = KindBudgetExceeded
	}
	return candidate{key: entryKey(kind, e.Agent, e), seq: e.Seq, kind: kind, agent: e.Agent,
		build: func() message {
			h := e.Hold
			what := "Run held"
			if kind == KindBudgetExceeded {
				what = "Budget exceeded"
			}
			title := fmt.Sprintf("%s: %s: %s", what, e.Agent, h.Kind)
			if !h.Until.IsZero() {
				title += " until " + h.Until.UTC().Format("2006-01-02T15:04:05Z07:00")
			}
			m := message{title: title}
			m.fields = []field{{"Agent", e.Agent, false}, {"Trigger", e.Trigger, true}, {"Reason", h.Reason, false}}
			if h.Policy != "" {
				m.fields = append(m.fields, field{"Policy", strings.Trim(h.Policy+"/"+h.Rule, "/"), false})
			}
			m.fields = append(m.fields, field{"Summary", e.Summary, false})
			m.verify = []string{n.command("ledger", "show", fmt.Sprint(e.Seq)), n.command("status")}
			return m
		}}
}

// stallMessage is the message of a stalled pass.
func (n *Notifier) stallMessage(reason, msg string) message {
	return message{
		title: fmt.Sprintf("Reconciler stalled: %s", reason),
		fields: []field{{"Reason", reason, false}, {"Error", msg, false},
			{"Effect", "a person must act: the reconciler retries at its interval but appends nothing until the ledger can be trusted", false}},
		verify: []string{n.command("ledger", "verify")},
	}
}

func stallKey(reason, msg string) string {
	sum := sha256.Sum256([]byte(reason + "\x00" + msg))
	return KindStall + "/" + reason + "/" + hex.EncodeToString(sum[:8])
}

func (n *Notifier) runFields(r *ledger.Run) []field {
	return []field{{"Agent", r.Agent, false}, {"Run", r.ID, true}, {"Trigger", r.Trigger, true}}
}

// needs says which approvals a decision asks for ("2 of sre; override
// deps/no-major-bumps") and returns the decision's own summary.
func needs(e *ledger.Entry) (string, string) {
	if e == nil || len(e.Decision) == 0 {
		return "review (no decision recorded)", ""
	}
	var d policy.Decision
	if err := json.Unmarshal(e.Decision, &d); err != nil {
		return "review (the decision does not decode)", ""
	}
	if d.Outcome == policy.Deny {
		return "nothing: the policies deny it", d.Summary
	}
	var parts []string
	for _, r := range d.Requirements {
		parts = append(parts, r.String())
	}
	if len(parts) == 0 {
		parts = append(parts, "1 reviewer")
	}
	s := "approval by " + strings.Join(parts, " and ")
	if len(d.Overrides) > 0 {
		s += ", overriding " + strings.Join(d.Overrides, ", ")
	}
	return s, d.Summary
}

// command is a reconciler command line that shows the evidence, run
// against this instance's repository.
func (n *Notifier) command(args ...string) string {
	repo := "URL"
	if n.instance != "" {
		repo = shellQuote(n.instance)
	}
	if args[0] == "status" {
		return "reconciler status"
	}
	return "reconciler " + strings.Join(args, " ") + " --repo " + repo
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9@%+=:,./_~-]+$`)

func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// render builds the JSON body of m.
func (n *Notifier) render(m message) ([]byte, error) {
	prefix := "reconciler"
	if n.instance != "" {
		prefix += " " + n.instance
	}
	title := n.clean(m.title, maxTitle)
	var text, detail strings.Builder
	fmt.Fprintf(&text, "[%s] %s", escape(n.clean(prefix, maxValue)), escape(title))
	for _, f := range m.fields {
		v := n.clean(f.value, maxValue)
		if v == "" {
			continue
		}
		fmt.Fprintf(&text, "\n%s: %s", f.label, escape(v))
		if f.code {
			fmt.Fprintf(&detail, "*%s:* `%s`\n", f.label, escape(strings.ReplaceAll(v, "`", "'")))
		} else {
			fmt.Fprintf(&detail, "*%s:* %s\n", f.label, escape(v))
		}
	}
	var verify strings.Builder
	for i, c := range m.verify {
		c = n.clean(c, maxValue)
		text.WriteString("\nVerify: " + escape(c))
		if i > 0 {
			verify.WriteString("\n")
		}
		verify.WriteString("Verify: `" + escape(strings.ReplaceAll(c, "`", "'")) + "`")
	}
	p := payload{Text: text.String()}
	if !n.noBlocks {
		p.Blocks = []block{
			{Type: "header", Text: &textObject{Type: "plain_text", Text: title}},
			{Type: "context", Elements: []textObject{{Type: "mrkdwn", Text: escape(n.clean(prefix, maxValue))}}},
			{Type: "section", Text: &textObject{Type: "mrkdwn", Text: strings.TrimSuffix(detail.String(), "\n")}},
		}
		if verify.Len() > 0 {
			p.Blocks = append(p.Blocks, block{Type: "context", Elements: []textObject{{Type: "mrkdwn", Text: verify.String()}}})
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode notification: %w", err)
	}
	return b, nil
}

// clean makes s safe to show: control and bidirectional-formatting
// characters are dropped (tabs and newlines become spaces), credentials
// in URLs and the webhook URL are removed, and the result is cut to max
// runes.
func (n *Notifier) clean(s string, max int) string {
	s = n.redact(s)
	s = userinfo.ReplaceAllString(s, "$1")
	var b strings.Builder
	runes := 0
	for _, r := range s {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			r = ' '
		case r == utf8.RuneError, unicode.IsControl(r), unicode.Is(unicode.Bidi_Control, r), r == '\u200b', r == '\ufeff':
			continue
		}
		if runes == max {
			return strings.TrimSpace(b.String()) + "…"
		}
		b.WriteRune(r)
		runes++
	}
	return strings.TrimSpace(b.String())
}

// userinfo matches the credentials of a URL ("scheme://user:token@").
var userinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@`)

// mentions are the words chat tools expand into notifying everyone.
var mentions = regexp.MustCompile(`(?i)@(channel|here|everyone|all)\b`)

// escape makes s literal text for Slack (whose mrkdwn reads &, < and > as
// markup: "<!channel>" would notify everyone) and defuses the @channel
// style mentions of Mattermost and Rocket.Chat.
func escape(s string) string {
	s = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
	return mentions.ReplaceAllString(s, "@\u2060$1")
}

// cleanInstance returns the repository URL without credentials: no
// password, and for http(s) no user name either (often a token).
func cleanInstance(s string) string {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return gitstore.Redact(s)
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok || u.Scheme == "http" || u.Scheme == "https" {
			if ok && u.Scheme != "http" && u.Scheme != "https" {
				u.User = url.User(u.User.Username())
			} else {
				u.User = nil
			}
		}
	}
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
