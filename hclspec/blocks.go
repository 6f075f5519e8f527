package hclspec

import (
	"maps"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentgitops/reconciler/approval"
)

// AlertMatch is an `on_alert` trigger: it fires for an Alertmanager alert
// whose labels equal every Match value and match every MatchRE pattern
// (anchored, as Alertmanager's =~ matchers are).
type AlertMatch struct {
	Match   map[string]string
	MatchRE map[string]*regexp.Regexp
	Range   hcl.Range
}

// Matches reports whether an alert's labels satisfy every matcher.
func (m *AlertMatch) Matches(labels map[string]string) bool {
	for k, v := range m.Match {
		if labels[k] != v {
			return false
		}
	}
	for k, re := range m.MatchRE {
		if !re.MatchString(labels[k]) {
			return false
		}
	}
	return true
}

// Budget is a policy's `budget` block: limits checked before a run starts.
// Zero means no limit.
type Budget struct {
	MaxTokensPerRun    int64
	MaxCostUSDPerDay   float64
	MaxCostUSDPerMonth float64
	MaxRunsPerHour     int
	MaxOpenProposals   int
	MaxConcurrentRuns  int
	// MaxOpenProposalsTotal and MaxRunsPerHourTotal count every agent the
	// policy applies to together (with applies_to = ["*"], the whole
	// repository): open proposals (pull requests), and runs started in the
	// last hour.
	MaxOpenProposalsTotal int
	MaxRunsPerHourTotal   int
	DeclRange             hcl.Range
	AttributeRanges       map[string]hcl.Range
}

// Freeze is a policy's `freeze "<name>"` block: from each activation of
// Cron, for Duration, the agents the policy applies to do not run.
type Freeze struct {
	Name      string
	Cron      string
	Duration  time.Duration
	Timezone  *time.Location
	DeclRange hcl.Range

	schedule schedule
}

// Active reports whether the freeze is in force at now, and until when.
func (f *Freeze) Active(now time.Time) (bool, time.Time) {
	start, ok := f.schedule.last(now.In(f.Timezone))
	if !ok {
		return false, time.Time{}
	}
	end := start.Add(f.Duration)
	if now.Before(end) {
		return true, end
	}
	return false, time.Time{}
}

// Tools are the tool names an OpenAI-compatible agent may be given.
var Tools = []string{"list_files", "read_file", "search", "write_file", "edit_file", "delete_file", "finish",
	ToolPrometheusQuery, ToolKubernetesGet, ToolHTTPGet, ToolRecall} // perception.go

var alertSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "match"}, {Name: "match_re"}}}

func (l *loader) decodeAlert(blk *hcl.Block, ctx *hcl.EvalContext) *AlertMatch {
	c := l.content(blk.Body, alertSchema)
	if c == nil {
		return nil
	}
	m := &AlertMatch{Match: map[string]string{}, MatchRE: map[string]*regexp.Regexp{}, Range: blk.DefRange}
	l.decodeAttr(c.Attributes, "match", ctx, &m.Match)
	var res map[string]string
	if l.decodeAttr(c.Attributes, "match_re", ctx, &res) {
		for _, k := range slices.Sorted(maps.Keys(res)) {
			re, err := regexp.Compile("^(?:" + res[k] + ")$")
			if err != nil {
				l.errorf(c.Attributes["match_re"].Expr.Range(), "Invalid regular expression", "match_re %q: %q is not a valid RE2 expression: %v.", k, res[k], err)
				continue
			}
			m.MatchRE[k] = re
		}
	}
	if len(m.Match)+len(res) == 0 {
		l.errorf(blk.DefRange, "Alert trigger matches everything", "An on_alert block needs at least one matcher, such as match = { alertname = \"HighErrorRate\" }; an agent run for every alert is almost certainly a mistake.")
		return nil
	}
	return m
}

var budgetAttrs = []string{"max_tokens_per_run", "max_cost_usd_per_day", "max_cost_usd_per_month", "max_runs_per_hour", "max_open_proposals", "max_concurrent_runs",
	"max_open_proposals_total", "max_runs_per_hour_total"}

var budgetSchema = func() *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, n := range budgetAttrs {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: n})
	}
	return s
}()

func (l *loader) decodeBudget(blk *hcl.Block, ctx *hcl.EvalContext) *Budget {
	c := l.content(blk.Body, budgetSchema)
	if c == nil {
		return nil
	}
	b := &Budget{DeclRange: blk.DefRange, AttributeRanges: map[string]hcl.Range{}}
	for _, n := range budgetAttrs {
		a, ok := c.Attributes[n]
		if !ok {
			continue
		}
		var v float64
		if !l.decodeAttr(c.Attributes, n, ctx, &v) {
			continue
		}
		b.AttributeRanges[n] = a.Expr.Range()
		integer := !strings.Contains(n, "usd")
		switch {
		case v < 0 || math.IsInf(v, 0):
			l.errorf(a.Expr.Range(), "Invalid budget", "%s must be a positive number; leave it out for no limit.", n)
			continue
		case v > 1e15:
			l.errorf(a.Expr.Range(), "Invalid budget", "%s = %v is too large to be meant; leave it out for no limit.", n, v)
			continue
		case integer && v != math.Trunc(v):
			l.errorf(a.Expr.Range(), "Invalid budget", "%s counts whole things; %v is not a whole number.", n, v)
			continue
		}
		switch n {
		case "max_tokens_per_run":
			b.MaxTokensPerRun = int64(v)
		case "max_cost_usd_per_day":
			b.MaxCostUSDPerDay = v
		case "max_cost_usd_per_month":
			b.MaxCostUSDPerMonth = v
		case "max_runs_per_hour":
			b.MaxRunsPerHour = int(v)
		case "max_open_proposals":
			b.MaxOpenProposals = int(v)
		case "max_concurrent_runs":
			b.MaxConcurrentRuns = int(v)
		case "max_open_proposals_total":
			b.MaxOpenProposalsTotal = int(v)
		case "max_runs_per_hour_total":
			b.MaxRunsPerHourTotal = int(v)
		}
	}
	if len(b.AttributeRanges) == 0 && !l.diags.HasErrors() {
		l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Empty budget", Detail: "This budget block sets no limit; set one of " + strings.Join(budgetAttrs, ", ") + ", or remove it.", Subject: &b.DeclRange})
	}
	return b
}

var freezeSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "cron", Required: true}, {Name: "duration", Required: true}, {Name: "timezone"},
}}

func (l *loader) decodeFreeze(blk *hcl.Block, ctx *hcl.EvalContext) *Freeze {
	c := l.content(blk.Body, freezeSchema)
	if c == nil {
		return nil
	}
	f := &Freeze{Name: blk.Labels[0], DeclRange: blk.DefRange, Timezone: time.UTC}
	var tz string
	if l.decodeAttr(c.Attributes, "timezone", ctx, &tz) {
		loc, err := l.location(tz)
		if err != nil {
			l.errorf(c.Attributes["timezone"].Expr.Range(), "Unknown time zone", "%q is not an IANA time zone name; write it like \"Europe/Berlin\" or \"UTC\".", tz)
			return nil
		}
		f.Timezone = loc
	}
	l.decodeDuration(c.Attributes, "duration", ctx, &f.Duration)
	if l.decodeAttr(c.Attributes, "cron", ctx, &f.Cron) {
		if strings.HasPrefix(f.Cron, "@every") {
			l.errorf(c.Attributes["cron"].Expr.Range(), "Invalid freeze", "A freeze starts at calendar times: use five cron fields such as \"0 16 * * FRI\", not @every.")
			return nil
		}
		s, err := parseSchedule(f.Cron, f.Timezone)
		if err != nil {
			l.errorf(c.Attributes["cron"].Expr.Range(), "Invalid schedule", "%q: %v. Use five cron fields, such as \"0 16 * * FRI\" for Fridays at 16:00.", f.Cron, err)
			return nil
		}
		f.schedule = s
	}
	if f.schedule.cron == nil || f.Duration == 0 {
		return nil
	}
	return f
}

// checkSigningKey validates a reviewer's signing key as the approval
// verifier will read it (approval.ParseKey): an SSH public key in
// authorized_keys form or an armored OpenPGP public key block, so that a key
// the verifier would skip is reported where it is written.
func (l *loader) checkSigningKey(key string, rng hcl.Range) {
	if strings.HasPrefix(strings.TrimSpace(key), "-----BEGIN PGP PUBLIC KEY BLOCK-----") && !strings.Contains(key, "-----END PGP PUBLIC KEY BLOCK-----") {
		l.errorf(rng, "Invalid signing key", "The OpenPGP key block is not terminated by -----END PGP PUBLIC KEY BLOCK-----; paste the whole output of gpg --armor --export.")
		return
	}
	if _, err := approval.ParseKey(key); err != nil {
		l.errorf(rng, "Invalid signing key", "signing_key must be an SSH public key as in authorized_keys (\"ssh-ed25519 AAAA... name\") or an armored OpenPGP public key (gpg --armor --export): %v.", err)
	}
}

// checkBaseURL validates an openai provider's base URL.
func (l *loader) checkBaseURL(p *Provider, rng hcl.Range) {
	if p.BaseURL == "" {
		return
	}
	u, err := url.Parse(p.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		l.errorf(rng, "Invalid base URL", "base_url %q must be an http(s) URL including /v1, such as \"http://127.0.0.1:11434/v1\" for Ollama.", p.BaseURL)
		return
	}
	if u.User != nil {
		l.errorf(rng, "Credentials in base URL", "base_url must not carry credentials; name the variable holding the key in api_key_env instead.")
	}
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
