package agent

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"

	"github.com/sashabaranov/go-openai"
)

// redactedText replaces every secret the transcript would otherwise keep.
const redactedText = "[REDACTED]"

// minSecretLen is the shortest environment value treated as a secret:
// shorter values cannot be credentials, and replacing them everywhere
// would destroy the transcript.
const minSecretLen = 4

// secretPattern matches a kind of credential by its shape. The regexp
// runs only on text that contains one of its cues (lowercase), which keeps
// redaction cheap for the text that has no secrets.
type secretPattern struct {
	re   *regexp.Regexp
	cues []string
}

// secretPatterns match common credentials. Each replaces the secret with
// redactedText and keeps what ${1} captured (a prefix that says what was
// there, such as "Bearer ").
var secretPatterns = []secretPattern{
	// PEM private keys: whole blocks, a block cut off by paging or
	// truncation (no END), and the tail of one (base64 lines before END).
	{regexp.MustCompile(`-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY-----|[\s\S]*$)`), []string{"private key-----"}},
	{regexp.MustCompile(`(?m)(?:^[A-Za-z0-9+/=]+\r?\n)*^[A-Za-z0-9+/=]*-----END[A-Z0-9 ]*PRIVATE KEY-----`), []string{"private key-----"}},
	// OpenAI (sk-..., sk-proj-...) and other sk- style API keys.
	{regexp.MustCompile(`\bsk-[A-Za-z0-9_-]{20,}`), []string{"sk-"}},
	// GitHub tokens: classic (ghp_, gho_, ghs_, ghu_, ghr_) and fine-grained.
	{regexp.MustCompile(`\bgh[pousr]_[A-Za-z0-9]{30,}`), []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_"}},
	{regexp.MustCompile(`\bgithub_pat_[A-Za-z0-9_]{22,}`), []string{"github_pat_"}},
	// AWS access key ids and secret keys written as assignments.
	{regexp.MustCompile(`\b(?:AKIA|ASIA)[0-9A-Z]{16}\b`), []string{"akia", "asia"}},
	{regexp.MustCompile(`(?i)(aws_secret_access_key["']?\s*[:=]\s*["']?)[A-Za-z0-9/+=]{40}`), []string{"aws_secret_access_key"}},
	// Slack tokens.
	{regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9-]{10,}`), []string{"xox"}},
	// JSON Web Tokens.
	{regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`), []string{"eyj"}},
	// HTTP bearer credentials.
	{regexp.MustCompile(`(?i)(\bbearer\s+)[A-Za-z0-9._~+/-]{12,}=*`), []string{"bearer"}},
}

// redactor removes secrets from text before it is kept: the values of
// given environment variables (the provider's API key) and credentials
// recognized by their shape.
type redactor struct {
	values []string
}

// newRedactor returns a redactor for the given secret values; empty and
// very short values are ignored.
func newRedactor(values ...string) *redactor {
	r := &redactor{}
	for _, v := range values {
		if len(v) >= minSecretLen && !slices.Contains(r.values, v) {
			r.values = append(r.values, v)
		}
	}
	// Longest first, so a secret that contains another goes whole.
	slices.SortFunc(r.values, func(a, b string) int { return len(b) - len(a) })
	return r
}

// String returns s with every secret replaced by redactedText.
func (r *redactor) String(s string) string {
	if s == "" {
		return s
	}
	for _, v := range r.values {
		s = strings.ReplaceAll(s, v, redactedText)
	}
	lower := strings.ToLower(s)
	for _, p := range secretPatterns {
		if !slices.ContainsFunc(p.cues, func(c string) bool { return strings.Contains(lower, c) }) {
			continue
		}
		if p.re.NumSubexp() > 0 {
			s = p.re.ReplaceAllString(s, "${1}"+redactedText)
		} else {
			s = p.re.ReplaceAllLiteralString(s, redactedText)
		}
	}
	return s
}

// JSON redacts a JSON document (tool call arguments): the text as it is,
// and the decoded string values, whose escapes (a PEM key's \n, say) can
// hide a secret from the patterns. When only the decoded values reveal a
// secret the document is re-encoded with keys in sorted order.
func (r *redactor) JSON(s string) string {
	out := r.String(s)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return out
	}
	v, changed := r.value(v)
	if !changed {
		return out
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return out
	}
	return r.String(strings.TrimSuffix(b.String(), "\n"))
}

// value redacts the strings (keys and values) of a decoded JSON value.
func (r *redactor) value(v any) (any, bool) {
	switch v := v.(type) {
	case string:
		s := r.String(v)
		return s, s != v
	case []any:
		changed := false
		for i, e := range v {
			var c bool
			v[i], c = r.value(e)
			changed = changed || c
		}
		return v, changed
	case map[string]any:
		changed := false
		out := make(map[string]any, len(v))
		for k, e := range v {
			e, c := r.value(e)
			rk := r.String(k)
			changed = changed || c || rk != k
			out[rk] = e
		}
		return out, changed
	}
	return v, false
}

// Message returns a copy of m with its text and tool call arguments
// redacted.
func (r *redactor) Message(m openai.ChatCompletionMessage) openai.ChatCompletionMessage {
	m.Content = r.String(m.Content)
	m.Refusal = r.String(m.Refusal)
	m.ReasoningContent = r.String(m.ReasoningContent)
	if m.MultiContent != nil {
		parts := slices.Clone(m.MultiContent)
		for i := range parts {
			parts[i].Text = r.String(parts[i].Text)
		}
		m.MultiContent = parts
	}
	if m.FunctionCall != nil {
		fc := *m.FunctionCall
		fc.Arguments = r.JSON(fc.Arguments)
		m.FunctionCall = &fc
	}
	if m.ToolCalls != nil {
		calls := slices.Clone(m.ToolCalls)
		for i := range calls {
			calls[i].Function.Arguments = r.JSON(calls[i].Function.Arguments)
		}
		m.ToolCalls = calls
	}
	return m
}

// redactedError keeps an error's chain for errors.Is and errors.As while
// its message, which may quote a model's reply or a file, is redacted.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// Error returns err with its message redacted, or err itself when there
// is nothing to redact.
func (r *redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := r.String(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
