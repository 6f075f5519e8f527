package gitstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// trailerCases are commit messages with the trailers git 2.39's
// "git interpret-trailers --parse" finds in them. TestTrailers checks each
// want against git itself as well as against Trailers, so a wrong want fails.
var trailerCases = []struct {
	name    string
	message string
	want    []Trailer
}{
	{name: "empty", message: ""},
	{name: "subject only", message: "Add ledger entry\n"},
	{name: "subject that looks like a trailer", message: "Fixes: nothing\n"},
	{name: "one paragraph of trailers", message: "Agent-Run: r1\nSigned-off-by: Bot <bot@example.com>\n"},
	{name: "no trailers", message: "Subject\n\nBody text explaining things.\n"},
	{
		name:    "trailers after subject",
		message: "Subject\n\nAgent: reviewer\nRun-Id: 0194\n",
		want:    []Trailer{{"Agent", "reviewer"}, {"Run-Id", "0194"}},
	},
	// The kinds of message issue 9 names.
	{
		name:    "key in any case",
		message: "Merge proposal\n\npolicy-override: budget\nAGENT-RUN: r7\n",
		want:    []Trailer{{"policy-override", "budget"}, {"AGENT-RUN", "r7"}},
	},
	{
		name:    "space before the colon",
		message: "Merge proposal\n\nPolicy-Override : budget\nAgent-Run\t:\tr7\n",
		want:    []Trailer{{"Policy-Override", "budget"}, {"Agent-Run", "r7"}},
	},
	{
		name:    "prose mixed with Signed-off-by",
		message: "Merge proposal\n\nApproved after the review meeting.\nPolicy-Override: budget\nSigned-off-by: Alice <alice@example.com>\n",
		want:    []Trailer{{"Policy-Override", "budget"}, {"Signed-off-by", "Alice <alice@example.com>"}},
	},
	{
		name:    "cherry picked from",
		message: "Fix the loop\n\nAgent-Run: r7\n(cherry picked from commit 0123456789abcdef0123456789abcdef01234567)\n",
		want:    []Trailer{{"Agent-Run", "r7"}},
	},
	{
		name:    "comment lines",
		message: "Merge proposal\n\nPolicy-Override: budget\n# Lines starting with '#' are ignored.\nAgent-Run: r7\n\n# Please enter the commit message.\n#\n",
		want:    []Trailer{{"Policy-Override", "budget"}, {"Agent-Run", "r7"}},
	},
	{
		name:    "patch divider",
		message: "Fix the loop\n\nAgent-Run: r7\n---\n reconcile/loop.go | 2 +-\n\nNot-A-Trailer: x\n",
		want:    []Trailer{{"Agent-Run", "r7"}},
	},
	// Edge cases.
	{
		name:    "prose mixed with trailers, nothing git-generated",
		message: "Subject\n\nSome text\nAgent: x\n",
	},
	{
		name:    "25% trailers with Signed-off-by",
		message: "Subject\n\none\ntwo\nthree\nSigned-off-by: A <a@example.com>\n",
		want:    []Trailer{{"Signed-off-by", "A <a@example.com>"}},
	},
	{
		name:    "under 25% trailers with Signed-off-by",
		message: "Subject\n\none\ntwo\nthree\nfour\nSigned-off-by: A <a@example.com>\n",
	},
	{
		name:    "Signed-off-by without a space is not git-generated",
		message: "Subject\n\nSome text\nSigned-off-by:A\n",
	},
	{
		name:    "only Signed-off-by",
		message: "Subject\n\nBody.\n\nSigned-off-by: A <a@example.com>\nSigned-off-by: B <b@example.com>\n",
		want:    []Trailer{{"Signed-off-by", "A <a@example.com>"}, {"Signed-off-by", "B <b@example.com>"}},
	},
	{
		name:    "multi-paragraph with trailing blank lines",
		message: "Subject\n\nFirst paragraph.\n\nSecond paragraph.\n\nAgent: fixer\nSigned-off-by: Bot <bot@example.com>\n\n\n \n\t\n",
		want:    []Trailer{{"Agent", "fixer"}, {"Signed-off-by", "Bot <bot@example.com>"}},
	},
	{
		name:    "key-value lines in the body are not trailers",
		message: "Subject\n\nNote: this is body text\nAnd: so is this\n\nRun-Id: 42\n",
		want:    []Trailer{{"Run-Id", "42"}},
	},
	{
		name:    "a colon in prose",
		message: "Subject\n\nNote: see http://x for the design\nand the thread after it.\n",
	},
	{
		name:    "no final newline",
		message: "Subject\n\nAgent: x",
		want:    []Trailer{{"Agent", "x"}},
	},
	{
		name:    "CRLF",
		message: "Subject\r\n\r\nAgent: x\r\nRun-Id: 7\r\n",
		want:    []Trailer{{"Agent", "x"}, {"Run-Id", "7"}},
	},
	{
		name:    "CRLF continuation keeps the inner CR",
		message: "Subject\r\n\r\nDescription: a\r\n b\r\n",
		want:    []Trailer{{"Description", "a\r b"}},
	},
	{
		name:    "duplicate keys keep order and case as written",
		message: "Subject\n\nReviewed-by: a\nreviewed-by: b\nReviewed-by: c\n",
		want:    []Trailer{{"Reviewed-by", "a"}, {"reviewed-by", "b"}, {"Reviewed-by", "c"}},
	},
	{
		name:    "empty values",
		message: "Subject\n\nEmpty:\nBlank:   \nAgent: x\n",
		want:    []Trailer{{"Empty", ""}, {"Blank", ""}, {"Agent", "x"}},
	},
	{
		name:    "continuation lines and colons in values",
		message: "Subject\n\nDescription: first part\n  second part\n\tthird\nURL: https://example.com:8443/x\n",
		want:    []Trailer{{"Description", "first part second part third"}, {"URL", "https://example.com:8443/x"}},
	},
	{
		name:    "continuation without a trailer",
		message: "Subject\n\n  indented\nAgent: x\n",
	},
	{
		// git counts the continuation as a line that is not a trailer.
		name:    "continuation after a comment",
		message: "Subject\n\nAgent: x\n# comment\n  more\n",
	},
	{
		name:    "key with a space inside",
		message: "Subject\n\nSee also: x\n",
	},
	{
		name:    "key that is not ASCII",
		message: "Subject\n\nGröße: 5\n",
	},
	{
		name:    "separator without a key",
		message: "Subject\n\n: x\nAgent: y\n",
	},
	{
		name:    "unicode values",
		message: "Subject\n\nReviewed-by: Zoë Ångström <zoe@example.com>\nNote: 日本語 ✓\n",
		want:    []Trailer{{"Reviewed-by", "Zoë Ångström <zoe@example.com>"}, {"Note", "日本語 ✓"}},
	},
	{
		name:    "whitespace-only line separates paragraphs",
		message: "Subject\n \t\nAgent: x\n",
		want:    []Trailer{{"Agent", "x"}},
	},
	{
		name:    "comment lines do not end the subject",
		message: "# comment\nSubject\n\nAgent: x\n",
		want:    []Trailer{{"Agent", "x"}},
	},
	{
		name:    "empty subject",
		message: "\nAgent: x\n",
		want:    []Trailer{{"Agent", "x"}},
	},
	{
		name:    "dashes without whitespace are not a divider",
		message: "Subject\n\n----\n---x\n\nAgent: x\n",
		want:    []Trailer{{"Agent", "x"}},
	},
	{
		name:    "divider in the subject",
		message: "--- Subject\n\nAgent: x\n",
	},
	{
		name:    "scissors line",
		message: "Subject\n\nAgent: x\n# ------------------------ >8 ------------------------\nNot-A-Trailer: y\n",
		want:    []Trailer{{"Agent", "x"}},
	},
	{
		name:    "old conflicts block",
		message: "Merge branch 'x'\n\nAgent: x\n\nConflicts:\n\ta.txt\n\tb.txt\n",
		want:    []Trailer{{"Agent", "x"}},
	},
	{
		name:    "NUL ends the message",
		message: "Subject\n\nAgent: x\x00\nRun-Id: 7\n",
		want:    []Trailer{{"Agent", "x"}},
	},
	{
		name: "long message",
		message: "Subject\n\n" + strings.Repeat("Body line with: a colon.\n", 5000) + "\n" +
			strings.Repeat("Reviewed-by: r\n", 300) + "Long: " + strings.Repeat("v", 1<<16) + "\n",
		want: append(repeatTrailer(Trailer{"Reviewed-by", "r"}, 300), Trailer{"Long", strings.Repeat("v", 1<<16)}),
	},
}

func repeatTrailer(t Trailer, n int) []Trailer {
	out := make([]Trailer, n)
	for i := range out {
		out[i] = t
	}
	return out
}

func TestTrailers(t *testing.T) {
	t.Parallel()
	for _, tt := range trailerCases {
		t.Run(tt.name, func(t *testing.T) {
			got := Trailers(tt.message)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Trailers(%q) = %q, want %q", tt.message, got, tt.want)
			}
			if _, err := exec.LookPath("git"); err != nil {
				t.Skip("no git to compare with")
			}
			fromGit, err := gitTrailers(t.Context(), t.TempDir(), tt.message)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fromGit, tt.want) {
				t.Errorf("git interpret-trailers --parse on %q = %q, want %q", tt.message, fromGit, tt.want)
			}
		})
	}
}

// trailerLines are the kinds of line TestTrailersGenerated builds messages
// from: the ones git's trailer rules tell apart.
var trailerLines = []string{
	"", " ", "\t", "\r", "Subject line", "Body text, with: a colon", "Note: see http://x",
	"Agent-Run: r1", "agent-run: r2", "Policy-Override : budget", "Key\t:\tv", "Empty:",
	": no key", "See also: x", "Größe: 5", "Signed-off-by: A <a@example.com>",
	"Signed-off-by:A", "(cherry picked from commit 0123abc)", "  continued", "\tcontinued",
	"# comment", "#", "---", "--- a/file", "----", "---x",
	"# ------------------------ >8 ------------------------", "Conflicts:", "\tpath.txt",
	"Value: x\r", "Long: " + strings.Repeat("ü", 40),
}

// TestTrailersGenerated compares Trailers with git on messages made of
// random sequences of trailerLines, with LF or CRLF line ends.
func TestTrailersGenerated(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git to compare with")
	}
	n := 400
	if testing.Short() {
		n = 40
	}
	rng := rand.New(rand.NewPCG(9, 2039))
	dir := t.TempDir()
	for range n {
		var b strings.Builder
		eol := "\n"
		if rng.IntN(8) == 0 {
			eol = "\r\n"
		}
		for range rng.IntN(12) {
			b.WriteString(trailerLines[rng.IntN(len(trailerLines))])
			b.WriteString(eol)
		}
		msg := b.String()
		if rng.IntN(4) == 0 {
			msg = strings.TrimSuffix(msg, eol)
		}
		if gitHangs(msg) {
			continue
		}
		want, err := gitTrailers(t.Context(), dir, msg)
		if err != nil {
			t.Fatal(err)
		}
		if got := Trailers(msg); !reflect.DeepEqual(got, want) {
			t.Errorf("Trailers(%q) = %q, git interpret-trailers --parse gives %q", msg, got, want)
		}
	}
}

// TestTrailersGitHang covers the one message git 2.39 cannot parse: with a
// scissors line after the "---" divider, its ignore_non_trailer loops
// forever. Later versions of git stop at the divider, as Trailers does.
func TestTrailersGitHang(t *testing.T) {
	t.Parallel()
	msg := "Subject\n\nAgent: x\n---\n\n# ------------------------ >8 ------------------------\n"
	if !gitHangs(msg) {
		t.Errorf("gitHangs(%q) = false, want true", msg)
	}
	want := []Trailer{{"Agent", "x"}}
	if got := Trailers(msg); !reflect.DeepEqual(got, want) {
		t.Errorf("Trailers(%q) = %q, want %q", msg, got, want)
	}
}

func TestTrailerValue(t *testing.T) {
	t.Parallel()
	msg := "Subject\n\nBody: not a trailer\n\nReviewed-by: a\nRun-Id: 1\nreviewed-BY: b\n"
	tests := []struct {
		key    string
		want   string
		wantOK bool
	}{
		{"Reviewed-by", "b", true}, // the last one wins, whatever its case
		{"REVIEWED-BY", "b", true},
		{"Run-Id", "1", true},
		{"run-id", "1", true},
		{"Run", "", false},  // the whole key
		{"Body", "", false}, // not in the trailer block
		{"Missing", "", false},
		{"Run-\u0130d", "", false}, // ASCII case folding only
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, ok := TrailerValue(msg, tt.key)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("TrailerValue(%q) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestTrailerValues(t *testing.T) {
	t.Parallel()
	msg := "Merge proposal\n\nPolicy-Override: budget\nAgent-Run: r1\npolicy-override : review\n"
	if got, want := TrailerValues(msg, "Policy-Override"), []string{"budget", "review"}; !reflect.DeepEqual(got, want) {
		t.Errorf("TrailerValues(Policy-Override) = %q, want %q", got, want)
	}
	if got := TrailerValues(msg, "Missing"); got != nil {
		t.Errorf("TrailerValues(Missing) = %q, want nil", got)
	}
}

// maxGitFuzzLen bounds the fuzzed messages FuzzTrailers also gives git.
const maxGitFuzzLen = 4096

func FuzzTrailers(f *testing.F) {
	for _, tt := range trailerCases {
		if len(tt.message) <= maxGitFuzzLen {
			f.Add(tt.message)
		}
	}
	f.Add("Subject\n\nAgent: x\n  more\n")
	f.Add("\n\n \n")
	_, lookErr := exec.LookPath("git")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, msg string) {
		got := Trailers(msg)
		for i, tr := range got {
			if findSeparator(tr.Key+":") != len(tr.Key) || tr.Key == "" {
				t.Errorf("trailer %d: invalid key %q", i, tr.Key)
			}
			if strings.Contains(tr.Value, "\n") || trimSpace(tr.Value) != tr.Value {
				t.Errorf("trailer %d: value %q has a newline or is not trimmed", i, tr.Value)
			}
			if v, ok := TrailerValue(msg, tr.Key); !ok || !trailerIsLast(got, i, v) {
				t.Errorf("TrailerValue(%q) = %q, %v; not the last trailer with that key", tr.Key, v, ok)
			}
		}
		if lookErr != nil || len(msg) > maxGitFuzzLen || !utf8.ValidString(msg) ||
			strings.IndexByte(msg, 0) >= 0 || gitHangs(msg) {
			return
		}
		fromGit, err := gitTrailers(t.Context(), dir, msg)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, fromGit) {
			t.Errorf("Trailers(%q) = %q, git interpret-trailers --parse gives %q", msg, got, fromGit)
		}
	})
}

// trailerIsLast reports whether v is the value of the last trailer with the
// key of trailers[i].
func trailerIsLast(trailers []Trailer, i int, v string) bool {
	for j := len(trailers) - 1; j >= i; j-- {
		if equalFoldASCII(trailers[j].Key, trailers[i].Key) {
			return trailers[j].Value == v
		}
	}
	return false
}

// gitHangs reports whether git 2.39's interpret-trailers loops forever on
// msg: when msg has a scissors line (not on its first line) after the start
// of its "---" divider, ignore_non_trailer's cutoff lies past the end of the
// text it walks.
func gitHangs(msg string) bool {
	if strings.HasPrefix(msg, scissors) {
		return false
	}
	p := strings.Index(msg, "\n"+scissors)
	return p >= 0 && p+1 > findPatchStart(msg)
}

// gitTrailers runs "git interpret-trailers --parse" on message in dir, with
// hermetic configuration and outside any repository, and returns the
// trailers it prints.
func gitTrailers(ctx context.Context, dir, message string) ([]Trailer, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "interpret-trailers", "--parse")
	cmd.Dir = dir
	cmd.Env = append(gittest.Env(gittest.Name, gittest.Email), "GIT_DIR="+filepath.Join(dir, "no-repo"))
	cmd.Stdin = strings.NewReader(message)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w (does gitHangs miss a case?)", err)
		}
		return nil, fmt.Errorf("git interpret-trailers --parse on %q: %w\n%s", message, err, stderr.Bytes())
	}
	var out []Trailer
	for line := range strings.Lines(stdout.String()) {
		key, value, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ": ")
		if !ok {
			return nil, fmt.Errorf("git interpret-trailers --parse on %q: unexpected line %q", message, line)
		}
		out = append(out, Trailer{Key: key, Value: value})
	}
	return out, nil
}
