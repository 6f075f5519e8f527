package agent

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"golang.org/x/text/unicode/norm"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
)

// testSpec protects, besides the fixed control and forge paths, a prompt
// and a command script, as a loaded spec of examples/repo-layout does.
var testSpec = &hclspec.Spec{Protected: []string{"prompts/image-pinner.md", "tools/pin-images.sh"}}

func file(p string) gitstore.FileChange {
	return gitstore.FileChange{Path: p, Status: gitstore.StatusAdded, Mode: filemode.Regular, Content: []byte("x\n")}
}

func link(p, target string) gitstore.FileChange {
	return gitstore.FileChange{Path: p, Status: gitstore.StatusAdded, Mode: filemode.Symlink, Content: []byte(target)}
}

func TestCheckChangeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		scope   []string // default "**"
		changes []gitstore.FileChange
		path    string // the refused path
		reason  string
	}{
		// Names that hide what they are.
		{name: "bidi override", changes: []gitstore.FileChange{file("config/\u202eevil.env")}, path: "config/\u202eevil.env", reason: "bidirectional control U+202E"},
		{name: "bidi isolate", changes: []gitstore.FileChange{file("config/a\u2066b.env")}, path: "config/a\u2066b.env", reason: "bidirectional control U+2066"},
		{name: "right-to-left mark", changes: []gitstore.FileChange{file("config/a\u200fb.env")}, path: "config/a\u200fb.env", reason: "bidirectional control U+200F"},
		{name: "arabic letter mark", changes: []gitstore.FileChange{file("config/a\u061cb.env")}, path: "config/a\u061cb.env", reason: "bidirectional control U+061C"},
		{name: "zero-width space", changes: []gitstore.FileChange{file("config/a\u200bb.env")}, path: "config/a\u200bb.env", reason: "invisible character U+200B"},
		{name: "zero-width joiner", changes: []gitstore.FileChange{file("config/a\u200db.env")}, path: "config/a\u200db.env", reason: "invisible character U+200D"},
		{name: "byte order mark", changes: []gitstore.FileChange{file("\ufeffREADME.md")}, path: "\ufeffREADME.md", reason: "invisible character U+FEFF"},
		{name: "soft hyphen", changes: []gitstore.FileChange{file("config/pay\u00adments.env")}, path: "config/pay\u00adments.env", reason: "invisible character U+00AD"},
		{name: "tag character", changes: []gitstore.FileChange{file("config/a\U000E0041.env")}, path: "config/a\U000E0041.env", reason: "invisible character U+E0041"},
		{name: "hangul filler", changes: []gitstore.FileChange{file("config/\u3164.env")}, path: "config/\u3164.env", reason: "invisible character U+3164"},
		{name: "C0 control", changes: []gitstore.FileChange{file("config/a\x1b[31m.env")}, path: "config/a\x1b[31m.env", reason: "control character U+001B"},
		{name: "DEL", changes: []gitstore.FileChange{file("config/a\x7f.env")}, path: "config/a\x7f.env", reason: "control character U+007F"},
		{name: "C1 control", changes: []gitstore.FileChange{file("config/a\u0085.env")}, path: "config/a\u0085.env", reason: "control character U+0085"},
		{name: "no-break space", changes: []gitstore.FileChange{file("config/a\u00a0b.env")}, path: "config/a\u00a0b.env", reason: "space U+00A0"},
		{name: "not NFC", changes: []gitstore.FileChange{file("config/cafe\u0301.env")}, path: "config/cafe\u0301.env", reason: "normalization form C"},
		{name: "invalid UTF-8", changes: []gitstore.FileChange{file("config/\xff.env")}, path: "config/\xff.env", reason: "not valid UTF-8"},
		{name: "trailing dot and space", changes: []gitstore.FileChange{file("config/trailing. ")}, path: "config/trailing. ", reason: "ends in a space or a dot"},
		{name: "trailing dot", changes: []gitstore.FileChange{file("config/trailing.")}, path: "config/trailing.", reason: "ends in a space or a dot"},
		{name: "trailing dot in a directory", changes: []gitstore.FileChange{file("agents./x.hcl")}, path: "agents./x.hcl", reason: "ends in a space or a dot"},
		{name: "leading space", changes: []gitstore.FileChange{file("config/ x.env")}, path: "config/ x.env", reason: "begins with whitespace"},
		{name: "empty name", changes: []gitstore.FileChange{file("config//x.env")}, path: "config//x.env", reason: "empty"},

		// Names that look like protected paths without being them.
		{name: "Cyrillic a of agents", changes: []gitstore.FileChange{file("\u0430gents/evil.hcl")}, path: "\u0430gents/evil.hcl", reason: `looks like the protected path "agents/**"`},
		{name: "capital agents", changes: []gitstore.FileChange{file("Agents/evil.hcl")}, path: "Agents/evil.hcl", reason: `looks like the protected path "agents/**"`},
		{name: "fullwidth agents", changes: []gitstore.FileChange{file("\uff41\uff47\uff45\uff4e\uff54\uff53/x.hcl")}, path: "\uff41\uff47\uff45\uff4e\uff54\uff53/x.hcl", reason: `"agents/**"`},
		{name: "division slash", changes: []gitstore.FileChange{file("agents\u2215evil.hcl")}, path: "agents\u2215evil.hcl", reason: `"agents/**"`},
		{name: "capital I for l", changes: []gitstore.FileChange{file("poIicies/allow.hcl")}, path: "poIicies/allow.hcl", reason: `"policies/**"`},
		{name: "digit one for l", changes: []gitstore.FileChange{file("po1icies/allow.hcl")}, path: "po1icies/allow.hcl", reason: `"policies/**"`},
		{name: "long s", changes: []gitstore.FileChange{file("policie\u017f/allow.hcl")}, path: "policie\u017f/allow.hcl", reason: `"policies/**"`},
		{name: "reviewers", changes: []gitstore.FileChange{file("Reviewers.hcl")}, path: "Reviewers.hcl", reason: `"reviewers.hcl"`},
		{name: "providers", changes: []gitstore.FileChange{file("PROVIDERS.HCL")}, path: "PROVIDERS.HCL", reason: `"providers.hcl"`},
		{name: "reconciler keys", changes: []gitstore.FileChange{file(".Reconciler/keys/evil.pub")}, path: ".Reconciler/keys/evil.pub", reason: `".reconciler/**"`},
		{name: "gitmodules", changes: []gitstore.FileChange{file(".GITMODULES")}, path: ".GITMODULES", reason: `".gitmodules"`},
		{name: "gitattributes", changes: []gitstore.FileChange{file(".GitAttributes")}, path: ".GitAttributes", reason: `".gitattributes"`},
		{name: "Cyrillic i of github", changes: []gitstore.FileChange{file(".g\u0456thub/workflows/ci.yml")}, path: ".g\u0456thub/workflows/ci.yml", reason: `".github/**"`},
		{name: "capital github", changes: []gitstore.FileChange{file(".GitHub/workflows/ci.yml")}, path: ".GitHub/workflows/ci.yml", reason: `".github/**"`},
		{name: "codeowners", changes: []gitstore.FileChange{file("codeowners")}, path: "codeowners", reason: `"CODEOWNERS"`},
		{name: "docs codeowners", changes: []gitstore.FileChange{file("d0cs/CODEOWNERS")}, path: "d0cs/CODEOWNERS", reason: `"docs/CODEOWNERS"`},
		{name: "gitlab ci", changes: []gitstore.FileChange{file(".gitlab-ci.YML")}, path: ".gitlab-ci.YML", reason: `".gitlab-ci.yml"`},
		{name: "a protected prompt", changes: []gitstore.FileChange{file("Prompts/image-pinner.md")}, path: "Prompts/image-pinner.md", reason: `"prompts/image-pinner.md"`},
		{name: "rn for m", changes: []gitstore.FileChange{file("prornpts/image-pinner.md")}, path: "prornpts/image-pinner.md", reason: `"prompts/image-pinner.md"`},
		{name: "a protected command", changes: []gitstore.FileChange{file("tools/pin-images.SH")}, path: "tools/pin-images.SH", reason: `"tools/pin-images.sh"`},
		{name: "nested gitattributes", changes: []gitstore.FileChange{file("config/.gitattributes")}, path: "config/.gitattributes", reason: "git reads in every directory"},
		{name: "nested gitattributes look-alike", changes: []gitstore.FileChange{file("config/.GITATTRIBUTES")}, path: "config/.GITATTRIBUTES", reason: `"**/.gitattributes"`},
		{name: "a .git look-alike", changes: []gitstore.FileChange{file("sub/.g\u0456t/config")}, path: "sub/.g\u0456t/config", reason: `"**/.git/**"`},
		{name: "case collision in the change", changes: []gitstore.FileChange{file("config/A.env"), file("config/a.env")}, path: "config/a.env", reason: `same path as "config/A.env" on a case-insensitive file system`},
		{name: "a submodule", changes: []gitstore.FileChange{{Path: "vendor/lib", Status: gitstore.StatusAdded, Mode: filemode.Submodule, Content: []byte("x")}}, path: "vendor/lib", reason: "not a regular file, an executable or a symbolic link"},

		// Symbolic links.
		{name: "absolute link", changes: []gitstore.FileChange{link("config/key.env", "/etc/passwd")}, path: "config/key.env", reason: `absolute path "/etc/passwd"`},
		{name: "drive letter", changes: []gitstore.FileChange{link("config/key.env", "C:/key")}, path: "config/key.env", reason: "absolute path"},
		{name: "backslash", changes: []gitstore.FileChange{link("config/key.env", `..\..\key`)}, path: "config/key.env", reason: "backslash"},
		{name: "escaping link", changes: []gitstore.FileChange{link("config/key.env", "../../../etc/passwd")}, path: "config/key.env", reason: "leaves the repository"},
		{name: "link one level too far", changes: []gitstore.FileChange{link("config/key.env", "../..")}, path: "config/key.env", reason: "leaves the repository"},
		{name: "link to the root", changes: []gitstore.FileChange{link("config/root", "..")}, path: "config/root", reason: "the repository's root"},
		{name: "link to reviewers.hcl", changes: []gitstore.FileChange{link("config/reviewers.env", "../reviewers.hcl")}, path: "config/reviewers.env", reason: `the protected path "reviewers.hcl"`},
		{name: "link into agents", changes: []gitstore.FileChange{link("config/a.hcl", "../agents/image-pinner.hcl")}, path: "config/a.hcl", reason: `protected path "agents/image-pinner.hcl"`},
		{name: "link to a protected prompt", changes: []gitstore.FileChange{link("config/p.md", "../prompts/image-pinner.md")}, path: "config/p.md", reason: "protected path"},
		{name: "link to a look-alike", changes: []gitstore.FileChange{link("config/a.hcl", "../Agents/x.hcl")}, path: "config/a.hcl", reason: `looks like the protected path "agents/**"`},
		{name: "link into .git", changes: []gitstore.FileChange{link("config/git", "../.git/config")}, path: "config/git", reason: "into a .git directory"},
		{name: "link into .GIT", changes: []gitstore.FileChange{link("config/git", "../.GIT/config")}, path: "config/git", reason: "into a .git directory"},
		{name: "link to a directory of commands", changes: []gitstore.FileChange{link("config/tools", "../tools")}, path: "config/tools", reason: "a directory holding protected paths"},
		{name: "link to docs", changes: []gitstore.FileChange{link("config/docs", "../docs")}, path: "config/docs", reason: "a directory holding protected paths"},
		{name: "link to itself", changes: []gitstore.FileChange{link("config/self", "self")}, path: "config/self", reason: "itself"},
		{name: "link to its directory", changes: []gitstore.FileChange{link("config/sub/up", "..")}, path: "config/sub/up", reason: "a cycle"},
		{name: "chained links", changes: []gitstore.FileChange{link("config/a.env", "b.env"), link("config/b.env", "payments-api.env")}, path: "config/a.env", reason: `through "config/b.env"`},
		{name: "link through a linked directory", changes: []gitstore.FileChange{link("config/d", "../deploy"), link("config/a.env", "d/x.env")}, path: "config/a.env", reason: `through "config/d"`},
		{name: "dot-dot inside", changes: []gitstore.FileChange{link("config/a.env", "sub/../../reviewers.hcl")}, path: "config/a.env", reason: "shortest relative path"},
		{name: "dot name", changes: []gitstore.FileChange{link("config/a.env", "./b.env")}, path: "config/a.env", reason: "shortest relative path"},
		{name: "empty target", changes: []gitstore.FileChange{link("config/a.env", "")}, path: "config/a.env", reason: "empty target"},
		{name: "bidi in target", changes: []gitstore.FileChange{link("config/a.env", "b\u202e.env")}, path: "config/a.env", reason: "bidirectional control U+202E"},
		{name: "link outside the scope", scope: []string{"config/**"}, changes: []gitstore.FileChange{link("config/a.yaml", "../deploy/prod/app.yaml")}, path: "config/a.yaml", reason: `resolves to "deploy/prod/app.yaml", outside the agent's scope`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &hclspec.Agent{Name: "rogue", Scope: []string{"**"}}
			if tc.scope != nil {
				a.Scope = tc.scope
			}
			err := CheckChange(testSpec, a, tc.changes)
			var ce *ChangeError
			if !errors.As(err, &ce) {
				t.Fatalf("CheckChange = %v, want a *ChangeError", err)
			}
			if ce.Agent != "rogue" {
				t.Errorf("Agent = %q", ce.Agent)
			}
			found := false
			for _, p := range ce.Problems {
				if p.Path == tc.path && strings.Contains(p.Reason, tc.reason) {
					found = true
				}
			}
			if !found {
				t.Errorf("problems = %q, want %q for %q", ce.Problems, tc.reason, tc.path)
			}
			// The message names the path quoted, so what hides in it shows.
			msg := err.Error()
			if !strings.Contains(msg, fmt.Sprintf("%+q", tc.path)) || hasUnsafeRune(msg) {
				t.Errorf("message %q does not name %q visibly", msg, tc.path)
			}
		})
	}
}

// hasUnsafeRune reports whether s holds a rune that a terminal would not
// show as itself.
func hasUnsafeRune(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) || isBidiControl(r) || isInvisible(r) || r == utf8.RuneError {
			return true
		}
	}
	return false
}

func TestCheckChangeAllows(t *testing.T) {
	a := &hclspec.Agent{Name: "tidy", Scope: []string{"**"}}
	for _, tc := range []struct {
		name    string
		changes []gitstore.FileChange
	}{
		{"ordinary files", []gitstore.FileChange{file("config/payments-api.env"), file("deploy/prod/app.yaml"), file("README.md"), file("Makefile")}},
		{"names near protected ones", []gitstore.FileChange{file("docs/agents/x.md"), file("agents.md"), file("policies.md"), file("config/reviewers.hcl"), file("docs/CODEOWNERS.md"), file("config/.gitignore")}},
		{"unicode in NFC", []gitstore.FileChange{file("config/caf\u00e9.env"), file("docs/\u65e5\u672c\u8a9e.md"), file("config/\U0001F680.env")}},
		{"inner spaces and dots", []gitstore.FileChange{file("config/with space.env"), file("config/v1.0.env"), file("config/.hidden")}},
		{"executable", []gitstore.FileChange{{Path: "tools/new.sh", Status: gitstore.StatusAdded, Mode: filemode.Executable, Content: []byte("#!/bin/sh\n")}}},
		// Protected paths themselves are policy's to deny, not refused here.
		{"protected paths", []gitstore.FileChange{file("agents/evil.hcl"), file("reviewers.hcl"), file(".gitattributes"), file(".gitmodules"), file(".github/workflows/ci.yml"), file("CODEOWNERS"), file("prompts/image-pinner.md"), file("tools/pin-images.sh")}},
		// Removing a bad name disguises nothing.
		{"deletions", []gitstore.FileChange{{Path: "Agents/old.hcl", Status: gitstore.StatusDeleted}, {Path: "config/\u202eold.env", Status: gitstore.StatusDeleted}}},
		{"links inside the scope", []gitstore.FileChange{link("config/current.env", "payments-api.env"), link("config/sub/up.env", "../payments-api.env"), link("deploy/current", "prod"), link("config/app.yaml", "../deploy/prod/app.yaml")}},
		{"a link retargeted", []gitstore.FileChange{{Path: "config/current.env", Status: gitstore.StatusModified, Mode: filemode.Symlink, Content: []byte("payments-api.env")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckChange(testSpec, a, tc.changes); err != nil {
				t.Errorf("CheckChange = %v", err)
			}
		})
	}
}

func TestCheckChangeNils(t *testing.T) {
	// Without a spec, the fixed paths are still guarded.
	if err := CheckChange(nil, &hclspec.Agent{Name: "a", Scope: []string{"**"}}, []gitstore.FileChange{file("Agents/x.hcl")}); err == nil {
		t.Error("a look-alike of agents/ passed without a spec")
	}
	if err := CheckChange(nil, &hclspec.Agent{Name: "a", Scope: []string{"**"}}, []gitstore.FileChange{file("agents/x.hcl")}); err != nil {
		t.Errorf("a protected path was refused without a spec: %v", err)
	}
	// Without an agent there is no scope: every link is refused.
	err := CheckChange(testSpec, nil, []gitstore.FileChange{link("config/a.env", "b.env")})
	if err == nil || !strings.Contains(err.Error(), "outside the agent's scope") {
		t.Errorf("CheckChange(nil agent) = %v", err)
	}
}

func TestCheckChangeListsEveryProblem(t *testing.T) {
	err := CheckChange(testSpec, &hclspec.Agent{Name: "rogue", Scope: []string{"**"}}, []gitstore.FileChange{
		file("config/ok.env"), file("Agents/x.hcl"), link("config/key.env", "/etc/passwd"), file("config/trailing. "),
	})
	var ce *ChangeError
	if !errors.As(err, &ce) {
		t.Fatalf("CheckChange = %v", err)
	}
	var paths []string
	for _, p := range ce.Problems {
		paths = append(paths, p.Path)
	}
	want := []string{"Agents/x.hcl", "config/key.env", "config/trailing. "}
	if strings.Join(paths, "|") != strings.Join(want, "|") {
		t.Errorf("problem paths = %q, want %q", paths, want)
	}
	const wantMsg = `agent "rogue" made a change that cannot be proposed (rename the files, or remove the links): "Agents/x.hcl" looks like the protected path "agents/**" (by case or look-alike characters) without being it; "config/key.env" is a symbolic link to the absolute path "/etc/passwd": links must stay inside the workspace; "config/trailing. " has a name "trailing. " that ends in a space or a dot, which Windows drops`
	if err.Error() != wantMsg {
		t.Errorf("message:\n%s\nwant:\n%s", err, wantMsg)
	}
}

func TestCleanMessage(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text\n\nbody\twith tab", "plain text\n\nbody\twith tab"},
		{"\x1b]0;pwn\x07\x1b[31mred", "red"},
		{"\x1b]0;pwn\x1b\\title set with ST", "title set with ST"},
		{"a\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\b", "alinkb"},
		{"\x1b[2J\x1b[1;1Hcleared \x1b[?25lhidden cursor", "cleared hidden cursor"},
		{"\u009b31mC1 CSI", "C1 CSI"},
		{"\u009d0;pwn\u009cC1 OSC", "C1 OSC"},
		{"\x1bPq#0;2;0;0;0\x1b\\after DCS", "after DCS"},
		{"\x1b_apc\x1b\\after APC", "after APC"},
		{"\x1b(Bcharset \x1b7saved\x1b8", "charset saved"},
		{"cut \x1b[", "cut "},
		{"cut \x1b]unterminated title", "cut "},
		{"\x1b[31\x18cancelled", "cancelled"},
		{"windows\r\nline\r\n", "windows\nline\n"},
		{"safe\rEVIL", "safeEVIL"},
		{"bell\x07 back\x08space \x00nul \x7fdel \u0085nel", "bell backspace nul del nel"},
		{"bidi \u202eevil\u202c \u2066iso\u2069 \u200emark", "bidi evil iso mark"},
		{"zero\u200bwidth \ufeffbom soft\u00adhyphen", "zerowidth bom softhyphen"},
		{"ascii smuggling\U000E0041\U000E0042", "ascii smuggling"},
		{"joiners stay: \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \U0001F469\u200d\U0001F4BB \u2764\ufe0f", "joiners stay: \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \U0001F469\u200d\U0001F4BB \u2764\ufe0f"},
		{"cafe\u0301", "caf\u00e9"},
		{"cafe\u202e\u0301", "caf\u00e9"},
		{"bad \xff\xfebytes \xc3(", "bad bytes ("},
		{"line\u2028separator", "line\nseparator"},
	} {
		if got := CleanMessage(tc.in); got != tc.want {
			t.Errorf("CleanMessage(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCleanSubject(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Pin images", "Pin images"},
		{"  Fix\x1b[31m it\nnow\t \r\n", "Fix it now"},
		{"\x1b]0;pwn\x07\x1b[31mred", "red"},
		{"a\u00a0\u3000b", "a b"},
		{"\x1b[31m", ""},
	} {
		if got := CleanSubject(tc.in); got != tc.want {
			t.Errorf("CleanSubject(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// checkClean fails t when s holds anything CleanMessage removes.
func checkClean(t *testing.T, in, s string) {
	t.Helper()
	if !utf8.ValidString(s) || !norm.NFC.IsNormalString(s) {
		t.Fatalf("clean(%q) = %q: not valid UTF-8 in NFC", in, s)
	}
	for _, r := range s {
		if (unicode.IsControl(r) && r != '\n' && r != '\t') || isBidiControl(r) || (isInvisible(r) && r != '\u200c' && r != '\u200d' && !unicode.Is(unicode.Variation_Selector, r)) {
			t.Fatalf("clean(%q) = %q: holds %U", in, s, r)
		}
	}
}

func FuzzCleanMessage(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b]0;pwn\x07\x1b[31mred", "\u009b31m", "a\x1bP\x1b\\b", "e\u202e\u0301", "\xc3(", "\r\n", "\x1b\x1b[[", "\u2028", "\ufeff\u200b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m := CleanMessage(s)
		checkClean(t, s, m)
		if again := CleanMessage(m); again != m {
			t.Fatalf("CleanMessage not idempotent: %q -> %q -> %q", s, m, again)
		}
		sub := CleanSubject(s)
		checkClean(t, s, sub)
		if strings.ContainsAny(sub, "\n\t") || sub != strings.TrimSpace(sub) {
			t.Fatalf("CleanSubject(%q) = %q: not one trimmed line", s, sub)
		}
		if again := CleanSubject(sub); again != sub {
			t.Fatalf("CleanSubject not idempotent: %q -> %q -> %q", s, sub, again)
		}
	})
}

func FuzzCheckChange(f *testing.F) {
	f.Add("config/a.env", "", false)
	f.Add("config/key.env", "/etc/passwd", true)
	f.Add("config/key.env", "../../../etc/passwd", true)
	f.Add("config/r.env", "../reviewers.hcl", true)
	f.Add("\u0430gents/evil.hcl", "", false)
	f.Add("config/\u202eevil.env", "", false)
	f.Add("config/trailing. ", "", false)
	f.Add("config/a.env", "b\u202e.env", true)
	f.Add("config/sub/a.env", "../b.env", true)
	f.Fuzz(func(t *testing.T, p, target string, isLink bool) {
		ch := file(p)
		if isLink {
			ch = link(p, target)
		}
		a := &hclspec.Agent{Name: "fuzz", Scope: []string{"config/**"}}
		err := CheckChange(testSpec, a, []gitstore.FileChange{ch})
		if err != nil {
			var ce *ChangeError
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("CheckChange = %v, want a *ChangeError with problems", err)
			}
			if hasUnsafeRune(err.Error()) {
				t.Fatalf("message %q shows a control or invisible character raw", err)
			}
			return
		}
		// Whatever passes has plain names, and a link stays in the scope.
		if hasUnsafeRune(p) || !norm.NFC.IsNormalString(p) {
			t.Fatalf("unsafe path %q passed", p)
		}
		for part := range strings.SplitSeq(p, "/") {
			if part == "" || part == "." || part == ".." || strings.HasSuffix(part, ".") || strings.TrimSpace(part) != part {
				t.Fatalf("path %q with name %q passed", p, part)
			}
		}
		if isLink {
			to := path.Join(path.Dir(p), target)
			if strings.HasPrefix(target, "/") || strings.Contains(target, `\`) || hasUnsafeRune(target) ||
				to == "." || to == ".." || strings.HasPrefix(to, "../") || testSpec.IsProtected(to) || !hclspec.MatchAny(a.Scope, to) {
				t.Fatalf("link %q -> %q (resolving to %q) passed", p, target, to)
			}
		}
	})
}
