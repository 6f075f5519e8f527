// Package secrets finds credentials in a proposed change before it leaves
// the reconciler: gitleaks' detector (github.com/zricethezav/gitleaks/v8)
// with its default rules, and the reconciler's own secret values (a
// provider's API key) wherever they occur.
//
// Scan reports where a secret is (file, line, rule), never the secret: no
// Finding holds a value or a fragment of one, so findings may be recorded
// and shown. It fails closed: content it cannot scan whole is a finding of
// its own, and an error means nothing was decided.
package secrets

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"github.com/zricethezav/gitleaks/v8/detect"
	"github.com/zricethezav/gitleaks/v8/logging"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
)

// Rules of the findings Scan makes itself; the others are gitleaks' rule
// ids (github-pat, aws-access-token, private-key, generic-api-key, ...).
const (
	// RuleKnown marks one of the reconciler's own secret values.
	RuleKnown = "known-secret"
	// RuleTooLarge marks a file Scan did not read, because it or the
	// change is over the limit: it is denied unscanned.
	RuleTooLarge = "too-large-to-scan"
)

// Limits on the work of one Scan.
const (
	// MaxFileBytes is the largest file scanned; a larger one is a
	// RuleTooLarge finding. gitleaks' default rules read about 2 MB/s of
	// manifest-like text per core (its generic-api-key rule is most of
	// that), so one such file takes about 2 s.
	MaxFileBytes = 4 << 20
	// MaxChangeBytes is the most content scanned in one change; every
	// file past it, in path order, is a RuleTooLarge finding. Files are
	// scanned on every core, so this bounds a scan to some 30 s of CPU.
	MaxChangeBytes = 64 << 20
	// maxDecodeDepth is how many times gitleaks decodes encoded text
	// (base64, hex, percent-encoding) to look inside it, as its command
	// line does by default.
	maxDecodeDepth = 5
)

// limits are the limits Scan applies; tests lower them.
var limits = struct{ file, change int }{MaxFileBytes, MaxChangeBytes}

// Finding is a secret in a change: where it is and which rule found it,
// never the value.
type Finding struct {
	// Path is the file's path; any part of it that is itself a secret is
	// replaced by [REDACTED].
	Path string `json:"path"`
	// Line is the 1-based line the secret starts on; 0 when the finding
	// is about the whole file (its name or its size).
	Line int `json:"line,omitempty"`
	// Rule is the gitleaks rule id, RuleKnown or RuleTooLarge.
	Rule string `json:"rule"`
	// Description says what the rule looks for.
	Description string `json:"description,omitempty"`
}

func (f Finding) String() string {
	if f.Line == 0 {
		return fmt.Sprintf("%s (%s)", f.Path, f.Rule)
	}
	return fmt.Sprintf("%s:%d (%s)", f.Path, f.Line, f.Rule)
}

// detector is gitleaks' detector with its default rules, built on first
// use: building it compiles some 200 regular expressions (about 25 ms),
// which a reconciler that never scans does not pay. It is safe for
// concurrent Detect calls.
var detector = sync.OnceValues(func() (*detect.Detector, error) {
	// gitleaks logs through a global zerolog logger to stderr; the
	// reconciler logs through slog only.
	logging.Logger = logging.Logger.Level(zerolog.Disabled)
	d, err := detect.NewDetectorDefaultConfig()
	if err != nil {
		return nil, fmt.Errorf("load the gitleaks default rules: %w", err)
	}
	d.MaxDecodeDepth = maxDecodeDepth
	return d, nil
})

// Scan looks for secrets in the files changes adds or modifies (deleted
// files are skipped): gitleaks' default rules, which skip the paths its
// default allowlist names (lock files, vendored code, images), and the
// known values, matched anywhere (also inside words and in paths),
// trimmed of surrounding whitespace, RuleKnown; values shorter than
// agent.MinSecretLen once trimmed are ignored. Binary files are scanned
// as their bytes, lines counted by newline bytes, since a key is as
// secret in a binary as in text; a symbolic link's target is scanned. A
// file over MaxFileBytes, and every file past MaxChangeBytes of content,
// is a RuleTooLarge finding instead.
//
// Findings are sorted by path, line and rule, one per place and rule.
// The error is non-nil only when the rules cannot be loaded; the change
// must then be treated as not scanned.
func Scan(changes []gitstore.FileChange, known []string) ([]Finding, error) {
	d, err := detector()
	if err != nil {
		return nil, fmt.Errorf("scan for secrets: %w", err)
	}
	known = knownValues(known)

	var files []gitstore.FileChange
	for _, c := range changes {
		if c.Status != gitstore.StatusDeleted {
			files = append(files, c)
		}
	}
	slices.SortStableFunc(files, func(a, b gitstore.FileChange) int { return strings.Compare(a.Path, b.Path) })

	found := make([][]Finding, len(files))
	shown := make([]string, len(files))
	var todo []int
	total := 0
	for i, f := range files {
		var path string
		path, found[i] = scanPath(d, f.Path, known)
		shown[i] = path
		switch {
		case len(f.Content) > limits.file:
			found[i] = append(found[i], Finding{Path: path, Rule: RuleTooLarge,
				Description: fmt.Sprintf("a file of %d bytes is over the %d bytes scanned for secrets; it is denied unscanned", len(f.Content), limits.file)})
		case total+len(f.Content) > limits.change:
			found[i] = append(found[i], Finding{Path: path, Rule: RuleTooLarge,
				Description: fmt.Sprintf("the change is over the %d bytes scanned for secrets; this file is denied unscanned", limits.change)})
		default:
			total += len(f.Content)
			todo = append(todo, i)
		}
	}

	// Files are scanned in parallel: the rules are pure functions of the
	// content.
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(todo)) {
		wg.Go(func() {
			for i := range next {
				found[i] = append(found[i], scanContent(d, files[i].Path, shown[i], files[i].Content, known)...)
			}
		})
	}
	for _, i := range todo {
		next <- i
	}
	close(next)
	wg.Wait()

	var out []Finding
	for _, fs := range found {
		out = append(out, fs...)
	}
	slices.SortFunc(out, func(a, b Finding) int {
		return cmp.Or(strings.Compare(a.Path, b.Path), cmp.Compare(a.Line, b.Line), strings.Compare(a.Rule, b.Rule))
	})
	return slices.CompactFunc(out, func(a, b Finding) bool {
		return a.Path == b.Path && a.Line == b.Line && a.Rule == b.Rule
	}), nil
}

// scanContent returns the findings in a file's content; shown is the
// path findings name (the path with any secret in it redacted).
func scanContent(d *detect.Detector, path, shown string, content []byte, known []string) []Finding {
	var out []Finding
	raw := string(content)
	// Lines count from 1; a rule on the file's name alone (a .p12 key
	// store, say) reports line 0.
	//lint:ignore SA1019 gitleaks v8's Detector.Detect takes only detect.Fragment; its replacement comes with v9.
	for _, f := range d.Detect(detect.Fragment{Raw: raw, FilePath: path, StartLine: 1}) {
		out = append(out, Finding{Path: shown, Line: f.StartLine, Rule: f.RuleID, Description: f.Description})
	}
	for _, v := range known {
		for off := 0; ; {
			i := strings.Index(raw[off:], v)
			if i < 0 {
				break
			}
			out = append(out, Finding{Path: shown, Line: 1 + strings.Count(raw[:off+i], "\n"), Rule: RuleKnown, Description: knownDescription})
			off += i + len(v)
		}
	}
	return out
}

const knownDescription = "one of the reconciler's own secret values, such as a provider's API key"

// scanPath returns the path as findings show it, with any secret in it
// redacted, and a finding for each secret it holds.
func scanPath(d *detect.Detector, path string, known []string) (string, []Finding) {
	var out []Finding
	shown := path
	for _, v := range known {
		if strings.Contains(shown, v) {
			shown = strings.ReplaceAll(shown, v, "[REDACTED]")
			out = append(out, Finding{Rule: RuleKnown, Description: knownDescription + ", in the file's name"})
		}
	}
	// The path as one line: columns locate each match in it.
	var spans [][2]int
	//lint:ignore SA1019 gitleaks v8's Detector.Detect takes only detect.Fragment; its replacement comes with v9.
	for _, f := range d.Detect(detect.Fragment{Raw: path, StartLine: 1}) {
		if f.StartLine == 1 && f.EndLine == 1 && f.StartColumn >= 1 && f.EndColumn <= len(path) && f.StartColumn <= f.EndColumn {
			spans = append(spans, [2]int{f.StartColumn - 1, f.EndColumn})
		} else {
			spans = append(spans, [2]int{0, len(path)})
		}
		out = append(out, Finding{Rule: f.RuleID, Description: f.Description + " (in the file's name)"})
	}
	if len(spans) > 0 {
		shown = redactSpans(path, spans, known)
	}
	// Shapes gitleaks does not know, and whatever is left.
	shown = agent.Redact(shown, known...)
	for i := range out {
		out[i].Path = shown
	}
	return shown, out
}

// redactSpans returns path with the byte spans and the known values
// replaced by [REDACTED].
func redactSpans(path string, spans [][2]int, known []string) string {
	hide := make([]bool, len(path))
	for _, s := range spans {
		for i := s[0]; i < s[1]; i++ {
			hide[i] = true
		}
	}
	for _, v := range known {
		for off := 0; ; {
			i := strings.Index(path[off:], v)
			if i < 0 {
				break
			}
			for j := off + i; j < off+i+len(v); j++ {
				hide[j] = true
			}
			off += i + len(v)
		}
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		if !hide[i] {
			b.WriteByte(path[i])
			continue
		}
		b.WriteString("[REDACTED]")
		for i+1 < len(path) && hide[i+1] {
			i++
		}
	}
	return b.String()
}

// knownValues returns the values trimmed of surrounding whitespace,
// without those shorter than agent.MinSecretLen and duplicates.
func knownValues(values []string) []string {
	var out []string
	for _, v := range values {
		if v = strings.TrimSpace(v); len(v) >= agent.MinSecretLen && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
