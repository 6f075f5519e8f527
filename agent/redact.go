package agent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/hclspec"
)

// redactedText replaces every secret the transcript would otherwise keep.
const redactedText = "[REDACTED]"

// MinSecretLen is the shortest value, once trimmed of surrounding
// whitespace, treated as a known secret (by the redactor and by the
// secrets scanner): shorter values cannot be credentials, and replacing
// them everywhere would shred the text they occur in.
const MinSecretLen = 8

// secretPattern matches a kind of credential by its shape. The regexp
// runs only on text that contains one of its cues (lowercase), which keeps
// redaction cheap for the text that has no secrets.
type secretPattern struct {
	re   *regexp.Regexp
	cues []string
	// inWord, when set, decides whether a match glued to a word (right
	// after or before a letter, digit or underscore) is a credential, for
	// shapes that ordinary words can take ("risk-assessment-...",
	// "ASIAPACIFICREGION"); nil redacts every match wherever it is.
	inWord func(match string) bool
}

// secretPatterns match common credentials, also where one is glued to a
// word ("xghp_..."). Each replaces the secret with redactedText and keeps
// what ${1} captured (a prefix that says what was there, such as
// "Bearer ").
var secretPatterns = []secretPattern{
	// PEM private keys: whole blocks, a block cut off by paging or
	// truncation (no END), and the tail of one (base64 lines before END).
	{re: regexp.MustCompile(`-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY-----|[\s\S]*$)`), cues: []string{"private key-----"}},
	{re: regexp.MustCompile(`(?m)(?:^[A-Za-z0-9+/=]+\r?\n)*^[A-Za-z0-9+/=]*-----END[A-Z0-9 ]*PRIVATE KEY-----`), cues: []string{"private key-----"}},
	// OpenAI (sk-..., sk-proj-...), Anthropic (sk-ant-...) and other sk-
	// style API keys; inside a word only when it looks random.
	{re: regexp.MustCompile(`sk-[A-Za-z0-9_-]{20,}`), cues: []string{"sk-"}, inWord: mixedCase},
	// GitHub tokens: classic (ghp_, gho_, ghs_, ghu_, ghr_) and fine-grained.
	{re: regexp.MustCompile(`gh[pousr]_[A-Za-z0-9]{30,}`), cues: []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_"}},
	{re: regexp.MustCompile(`github_pat_[A-Za-z0-9_]{22,}`), cues: []string{"github_pat_"}},
	// GitLab personal access tokens.
	{re: regexp.MustCompile(`glpat-[A-Za-z0-9_-]{20,}`), cues: []string{"glpat-"}},
	// Google API keys.
	{re: regexp.MustCompile(`AIza[0-9A-Za-z_-]{35}`), cues: []string{"aiza"}},
	// AWS access key ids and secret keys written as assignments.
	{re: regexp.MustCompile(`(?:AKIA|ASIA)[0-9A-Z]{16}`), cues: []string{"akia", "asia"}, inWord: hasDigit},
	{re: regexp.MustCompile(`(?i)(aws_secret_access_key["']?\s*[:=]\s*["']?)[A-Za-z0-9/+=]{40}`), cues: []string{"aws_secret_access_key"}},
	// Slack tokens.
	{re: regexp.MustCompile(`xox[abposr]-[A-Za-z0-9-]{10,}`), cues: []string{"xox"}},
	// JSON Web Tokens; inside a word only when the header decodes to JSON.
	{re: regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`), cues: []string{"eyj"}, inWord: jwtHeader},
	// HTTP bearer credentials.
	{re: regexp.MustCompile(`(?i)(\bbearer\s+)[A-Za-z0-9._~+/-]{12,}=*`), cues: []string{"bearer"}},
}

// mixedCase reports whether an sk- match holds a digit, an upper and a
// lower case letter after its prefix, as generated keys do and
// hyphenated words do not.
func mixedCase(m string) bool {
	m = strings.TrimPrefix(m, "sk-")
	return strings.ContainsAny(m, "0123456789") &&
		strings.ContainsFunc(m, func(r rune) bool { return 'A' <= r && r <= 'Z' }) &&
		strings.ContainsFunc(m, func(r rune) bool { return 'a' <= r && r <= 'z' })
}

func hasDigit(m string) bool { return strings.ContainsAny(m, "0123456789") }

// jwtHeader reports whether a JWT-shaped match starts with a header that
// decodes to a JSON object.
func jwtHeader(m string) bool {
	head, _, _ := strings.Cut(m, ".")
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(head, "="))
	return err == nil && json.Valid(b) && bytes.HasPrefix(b, []byte("{"))
}

// isWordByte reports whether c is a letter, digit or underscore.
func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// replace redacts p's matches in s.
func (p *secretPattern) replace(s string) string {
	repl := redactedText
	if p.re.NumSubexp() > 0 {
		repl = "${1}" + redactedText
	}
	if p.inWord == nil {
		if p.re.NumSubexp() > 0 {
			return p.re.ReplaceAllString(s, repl)
		}
		return p.re.ReplaceAllLiteralString(s, repl)
	}
	// Matches are taken one by one so that one refused inside a word is
	// searched again from its next byte: a credential may start within
	// it.
	var b strings.Builder
	done, pos := 0, 0
	for pos < len(s) {
		loc := p.re.FindStringSubmatchIndex(s[pos:])
		if loc == nil {
			break
		}
		start, end := pos+loc[0], pos+loc[1]
		glued := start > 0 && isWordByte(s[start-1]) || end < len(s) && isWordByte(s[end])
		if glued && !p.inWord(s[start:end]) {
			pos = start + 1
			continue
		}
		b.WriteString(s[done:start])
		b.Write(p.re.ExpandString(nil, repl, s[pos:], loc))
		done, pos = end, end
		if end == start {
			pos++
		}
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}

// redactor removes secrets from text before it is kept: the values of
// given environment variables (the provider's API key) and credentials
// recognized by their shape.
type redactor struct {
	values []string
}

// newRedactor returns a redactor for the given secret values. Each value
// is matched as it is written, trimmed of surrounding whitespace (a key
// read from a file often ends in a newline) and JSON-escaped, also inside
// words; values shorter than MinSecretLen once trimmed are ignored.
func newRedactor(values ...string) *redactor {
	r := &redactor{}
	for _, v := range knownValues(values) {
		r.values = append(r.values, v)
		if q := strconv.Quote(v); q[1:len(q)-1] != v {
			r.values = append(r.values, q[1:len(q)-1])
		}
		if b, err := json.Marshal(v); err == nil && string(b[1:len(b)-1]) != v {
			r.values = append(r.values, string(b[1:len(b)-1]))
		}
	}
	r.values = slices.Compact(sortLongestFirst(r.values))
	return r
}

// knownValues returns values trimmed of surrounding whitespace, without
// those shorter than MinSecretLen and duplicates, longest first.
func knownValues(values []string) []string {
	var out []string
	for _, v := range values {
		if v = strings.TrimSpace(v); len(v) >= MinSecretLen {
			out = append(out, v)
		}
	}
	return slices.Compact(sortLongestFirst(out))
}

// sortLongestFirst sorts values longest first, so a secret that contains
// another goes whole, and equal values end up next to each other.
func sortLongestFirst(values []string) []string {
	slices.SortFunc(values, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return values
}

// Redact returns s with every given secret value (matched exactly, trimmed
// of surrounding whitespace and inside words; values shorter than
// MinSecretLen are ignored) and every credential recognized by its shape
// (GitHub, GitLab, OpenAI-style sk-, AWS, Google, Slack and JWT tokens,
// bearer credentials, PEM private keys) replaced by "[REDACTED]". Callers
// use it on whatever a run printed (an exec agent's stdout and stderr)
// before it is recorded, logged or returned in an error.
func Redact(s string, values ...string) string {
	return newRedactor(values...).String(s)
}

// ProviderSecrets returns the values of the API key variables
// (api_key_env) of providers, as lookup finds them (nil means
// os.LookupEnv): the reconciler's own secrets, which no transcript, entry
// or proposal may hold.
func ProviderSecrets(lookup func(string) (string, bool), providers ...*hclspec.Provider) []string {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var out []string
	for _, p := range providers {
		if p == nil || p.APIKeyEnv == "" {
			continue
		}
		if v, ok := lookup(p.APIKeyEnv); ok && v != "" {
			out = append(out, v)
		}
	}
	return out
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
	for i := range secretPatterns {
		p := &secretPatterns[i]
		if !slices.ContainsFunc(p.cues, func(c string) bool { return strings.Contains(lower, c) }) {
			continue
		}
		s = p.replace(s)
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

// Placeholders ScrubPaths writes for host directories.
const (
	WorkspacePlaceholder = "$WORKSPACE"
	TempDirPlaceholder   = "$TMPDIR"
	HomePlaceholder      = "$HOME"
)

// ScrubPaths returns s with the host's absolute directories replaced by
// placeholders, so that no entry records where the reconciler keeps its
// files: dirs[0] (the run's workspace) by "$WORKSPACE", each later dir by
// "$DIR1", "$DIR2", ..., then the system's temporary directory by
// "$TMPDIR" (so an exec run's private HOME, /tmp/reconciler-home-123,
// reads $TMPDIR/reconciler-home-123) and the user's home directory by
// "$HOME". A directory is replaced only where it is a whole path prefix
// ("/tmp/ws" never inside "/tmp/ws2" or "/x/tmp/ws"), both as given and
// with symbolic links resolved; the root and relative paths are ignored.
func ScrubPaths(s string, dirs ...string) string {
	type sub struct{ dir, with string }
	var subs []sub
	add := func(dir, with string) {
		if dir == "" || !filepath.IsAbs(dir) {
			return
		}
		for _, d := range []string{filepath.Clean(dir), resolved(dir)} {
			if d == "" || d == string(filepath.Separator) {
				continue
			}
			if !slices.ContainsFunc(subs, func(x sub) bool { return x.dir == d }) {
				subs = append(subs, sub{d, with})
			}
		}
	}
	for i, d := range dirs {
		with := WorkspacePlaceholder
		if i > 0 {
			with = "$DIR" + strconv.Itoa(i)
		}
		add(d, with)
	}
	// Longest first, so a workspace inside the temporary directory keeps
	// its own placeholder; the general directories come last.
	slices.SortStableFunc(subs, func(a, b sub) int { return len(b.dir) - len(a.dir) })
	n := len(subs)
	add(os.TempDir(), TempDirPlaceholder)
	if home, err := os.UserHomeDir(); err == nil {
		add(home, HomePlaceholder)
	}
	general := subs[n:]
	slices.SortStableFunc(general, func(a, b sub) int { return len(b.dir) - len(a.dir) })
	for _, sb := range subs {
		s = replacePath(s, sb.dir, sb.with)
	}
	return s
}

// resolved returns dir with symbolic links resolved, or "" when that
// fails or changes nothing.
func resolved(dir string) string {
	r, err := filepath.EvalSymlinks(dir)
	if err != nil || r == filepath.Clean(dir) {
		return ""
	}
	return r
}

// isPathByte reports whether c can be part of a path element.
func isPathByte(c byte) bool {
	return isWordByte(c) || c == '.' || c == '-' || c == '~' || c == '+' || c == '@' || c >= 0x80
}

// replacePath replaces dir in s by with where it is a whole path prefix:
// not preceded by a path byte or a separator and not followed by a path
// byte.
func replacePath(s, dir, with string) string {
	if !strings.Contains(s, dir) {
		return s
	}
	var b strings.Builder
	done := 0
	for pos := 0; pos < len(s); {
		i := strings.Index(s[pos:], dir)
		if i < 0 {
			break
		}
		start, end := pos+i, pos+i+len(dir)
		if start > 0 && (isPathByte(s[start-1]) || s[start-1] == '/') || end < len(s) && isPathByte(s[end]) {
			pos = start + 1
			continue
		}
		b.WriteString(s[done:start])
		b.WriteString(with)
		done, pos = end, end
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}
