package hclspec

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/rogpeppe/go-internal/txtar"
)

// fuzzPaths are where FuzzLoadRoles puts its two inputs: the first in
// fuzzPaths[0][role%4], the second in fuzzPaths[1][role/4%4]. When both
// name the same file, the second is appended to the first.
var fuzzPaths = [2][4]string{
	{ProvidersFile, ReviewersFile, "agents/fuzz.hcl", "policies/fuzz.hcl"},
	{ProvidersFile, ReviewersFile, "agents/fuzz2.hcl", "policies/fuzz2.hcl"},
}

// The bits of role above the two paths: fuzzOverBase lays the inputs over
// testdata/errors/base.txtar, a valid repository, instead of an empty one;
// fuzzDir makes the second path a directory, which Load cannot read.
const (
	fuzzOverBase = 16
	fuzzDir      = 32
)

// roleOf is the index in fuzzPaths of the role a repository path has, or
// -1.
func roleOf(name string) int {
	switch {
	case name == ProvidersFile:
		return 0
	case name == ReviewersFile:
		return 1
	case strings.HasPrefix(name, "agents/"):
		return 2
	case strings.HasPrefix(name, "policies/") && !strings.HasSuffix(name, TestSuffix):
		return 3
	}
	return -1
}

// maxSeed leaves the largest corpus files out of the seeds: mutating 16 KiB
// Nomad jobs is slow and finds nothing the small ones do not.
const maxSeed = 8 << 10

// addCorpusSeeds seeds f with the shared conformance corpus: all of hcl's
// fuzz seeds and the malformed inputs from bug reports, each in every role,
// and one in eight of the other files in one role each.
func addCorpusSeeds(f *testing.F) {
	dir, err := filepath.Abs(corpusDir)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		f.Logf("not seeding from the shared conformance corpus: not found at %s", dir)
		return
	}
	sampled := 0
	for _, name := range corpusFiles(f, dir) {
		src, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			f.Fatal(err)
		}
		if len(src) > maxSeed {
			continue
		}
		if strings.HasPrefix(name, "hashicorp-hcl/fuzz-seeds-decoded/") {
			for role := range uint8(4) {
				f.Add(role|fuzzOverBase, src, []byte(nil))
			}
			continue
		}
		sampled++
		if sampled%8 == 0 {
			f.Add(uint8(sampled/8%4), src, []byte(nil))
		}
	}
	// Not all of them are .hcl: take the directory as it is.
	issues := filepath.Join(dir, "malformed-from-issues")
	entries, err := os.ReadDir(issues)
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		src, err := os.ReadFile(filepath.Join(issues, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		for role := range uint8(4) {
			f.Add(role|fuzzOverBase, src, []byte(nil))
			f.Add(role, src, []byte(nil))
		}
	}
}

// FuzzLoadRoles puts two arbitrary files in the roles chosen by role (see
// fuzzPaths), over base.txtar or alone, the second perhaps a directory
// instead of a file: Load must not panic, must withhold
// the Spec exactly when there are errors, and must point every diagnostic
// at a range of a file it read. FuzzLoad covers agent and policy files
// over base.txtar; this also covers providers.hcl and reviewers.hcl, pairs
// of files without the others, and is seeded with the shared conformance
// corpus.
func FuzzLoadRoles(f *testing.F) {
	example := copyFS(f, exampleDir)
	var pair [4][]byte // one example file per role
	for _, name := range slices.Sorted(maps.Keys(example)) {
		r := roleOf(name)
		if r < 0 || !strings.HasSuffix(name, ".hcl") {
			continue
		}
		f.Add(uint8(r)|fuzzOverBase, example[name].Data, []byte(nil))
		pair[r] = example[name].Data
	}
	// Two files that refer to each other, with nothing else.
	f.Add(uint8(0|2<<2), pair[0], pair[2])
	f.Add(uint8(1|3<<2), pair[1], pair[3])
	f.Add(uint8(2|2<<2), pair[2], pair[2]) // a duplicate agent
	scenarios, err := filepath.Glob("testdata/errors/*.txtar")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range scenarios {
		a, err := txtar.ParseFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range a.Files {
			if r := roleOf(file.Name); r >= 0 {
				f.Add(uint8(r)|fuzzOverBase, file.Data, []byte(nil))
			}
		}
	}
	f.Add(uint8(2|fuzzOverBase), []byte(tzScheduleAgent("TZ=UTC")), []byte(nil))
	f.Add(uint8(2|0<<2|fuzzOverBase|fuzzDir), pair[2], pair[0])
	addCorpusSeeds(f)

	base := txtarFS(f, "testdata/errors/base.txtar")
	f.Fuzz(func(t *testing.T, role uint8, first, second []byte) {
		fsys := fstest.MapFS{}
		if role&fuzzOverBase != 0 {
			fsys = cloneFS(base)
		}
		p1, p2 := fuzzPaths[0][role%4], fuzzPaths[1][role/4%4]
		fsys[p1] = &fstest.MapFile{Data: first}
		switch {
		case p2 == p1:
			fsys[p1].Data = append(append(append([]byte(nil), first...), '\n'), second...)
		case role&fuzzDir != 0:
			delete(fsys, p2)
			fsys[p2+"/README"] = &fstest.MapFile{Data: second}
		default:
			fsys[p2] = &fstest.MapFile{Data: second}
		}
		spec, diags := Load(fsys, Options{})
		if (spec == nil) != diags.HasErrors() {
			t.Fatalf("Spec %v with diagnostics %v", spec != nil, diags)
		}
		for _, d := range diags {
			var err error
			if d.Subject == nil {
				err = fmt.Errorf("no subject")
			} else if file, ok := fsys[d.Subject.Filename]; ok {
				err = checkSubject(d, d.Subject.Filename, file.Data)
			} else if fi, statErr := fs.Stat(fsys, d.Subject.Filename); statErr == nil && fi.IsDir() {
				err = checkSubject(d, d.Subject.Filename, nil) // at 1:1
			} else {
				err = fmt.Errorf("subject in %q, which is not in the repository", d.Subject.Filename)
			}
			if err != nil {
				t.Errorf("%s: %s; %s: %v", rangeString(d.Subject), d.Summary, d.Detail, err)
			}
		}
	})
}

func tzScheduleAgent(schedule string) string {
	return fmt.Sprintf(`agent "tz" {
  provider = provider.exec.local
  command  = ["sh", "tools/fix.sh"]

  trigger {
    schedule = %q
  }

  scope {
    paths = ["deploy/**"]
  }
}
`, schedule)
}

// TestLoadScheduleTimeZonePrefix: robfig/cron reads a TZ= or CRON_TZ=
// prefix itself. Without a space after it, it panicked; with one, it
// slipped a 1s @every past the one-minute minimum, and a zone that the
// timezone argument then silently replaced. Load refuses the prefix.
func TestLoadScheduleTimeZonePrefix(t *testing.T) {
	for _, schedule := range []string{"TZ=UTC", "CRON_TZ=Europe/Berlin", "TZ=UTC @every 1s", "CRON_TZ=Europe/Berlin 0 7 * * *", "TZ="} {
		t.Run(schedule, func(t *testing.T) {
			fsys := txtarFS(t, "testdata/errors/base.txtar")
			fsys["agents/tz.hcl"] = &fstest.MapFile{Data: []byte(tzScheduleAgent(schedule))}
			res, ok := loadBounded(fsys, loadTimeout)
			if !ok || res.panic != "" {
				t.Fatalf("Load did not return: %s", res.panic)
			}
			want := fmt.Sprintf("agents/tz.hcl:6:16-6:%d", 16+len(fmt.Sprintf("%q", schedule)))
			if res.spec != nil || len(res.diags) != 1 || rangeString(res.diags[0].Subject) != want ||
				res.diags[0].Summary != "Invalid schedule" || !strings.Contains(res.diags[0].Detail, "timezone argument") {
				t.Errorf("want one Invalid schedule error at %s about the timezone argument, got %v", want, res.diags)
			}
		})
	}
}

// TestLoadUnreadableFile: a directory named like one of the files is an
// error, which points at the file (it had no subject).
func TestLoadUnreadableFile(t *testing.T) {
	for _, name := range []string{ProvidersFile, ReviewersFile, "agents/dir.hcl", "policies/dir.hcl"} {
		t.Run(name, func(t *testing.T) {
			fsys := txtarFS(t, "testdata/errors/base.txtar")
			delete(fsys, name)
			fsys[name+"/README"] = &fstest.MapFile{Data: []byte("not HCL\n")}
			spec, diags := Load(fsys, Options{})
			if spec != nil || len(diags) == 0 {
				t.Fatalf("Load gave a Spec and diagnostics %v, want an error", diags)
			}
			d := diags[0]
			if d.Summary != "Cannot read file" || rangeString(d.Subject) != name+":1:1-1:1" {
				t.Errorf("got %s: %s, want Cannot read file at %s:1:1-1:1", rangeString(d.Subject), d.Summary, name)
			}
		})
	}
}

// TestLoadNesting: hclsyntax parses nested expressions recursively, and
// 100,000 levels exhausted the stack, a fatal error no recover catches.
// Load refuses more than MaxNesting levels, pointing at the first token
// past the limit, and still loads MaxNesting levels.
func TestLoadNesting(t *testing.T) {
	const deep = 100000 // crashed the process before
	agent := func(expr string) string {
		return `agent "fixer" {
  provider    = provider.exec.local
  command     = ["sh", "tools/fix.sh"]
  description = ` + expr + `

  trigger {
    on_spec_change = true
  }

  scope {
    paths = ["deploy/**"]
  }
}
`
	}
	// The description is on line 4, in the agent block (one level), and
	// its innermost value is a quoted string (one more).
	tests := []struct {
		name, open, inner, close string
		perLevel                 int // levels of nesting per open
	}{
		{"parentheses", "(", `"x"`, ")", 1},
		{"tuples", "[", `"x"`, "]", 1},
		{"objects", "{a = ", `"x"`, "}", 1},
		{"templates", `"${`, `"x"`, `}"`, 2},
		{"closers in strings", `(")"+`, `"x"`, ")", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nest := func(n int) string { return strings.Repeat(tc.open, n) + tc.inner + strings.Repeat(tc.close, n) }
			levels := (MaxNesting - 2) / tc.perLevel
			fsys := txtarFS(t, "testdata/errors/base.txtar")
			fsys["agents/fixer.hcl"] = &fstest.MapFile{Data: []byte(agent(nest(levels)))}
			// Most of these are not strings: only the nesting matters.
			_, diags := Load(fsys, Options{})
			for _, d := range diags {
				if d.Summary == "Nesting too deep" {
					t.Fatalf("%d levels: %s: %s", levels, rangeString(d.Subject), d.Summary)
				}
			}
			for _, src := range []string{agent(nest(levels + 1)), agent(nest(deep)), agent(strings.Repeat(tc.open, deep))} {
				fsys["agents/fixer.hcl"] = &fstest.MapFile{Data: []byte(src)}
				_, diags := Load(fsys, Options{})
				if len(diags) != 1 || diags[0].Summary != "Nesting too deep" {
					t.Fatalf("%.40q...: got %d diagnostics, want one Nesting too deep: %.300v", src[strings.Index(src, "description"):], len(diags), diags)
				}
				r := diags[0].Subject
				if err := checkSubject(diags[0], "agents/fixer.hcl", []byte(src)); err != nil || r.Start.Line != 4 {
					t.Errorf("%.40q...: error at %s (%v), want line 4", src[strings.Index(src, "description"):], rangeString(r), err)
				}
			}
		})
	}
	t.Run("templatefile", func(t *testing.T) {
		fsys := txtarFS(t, "testdata/errors/base.txtar")
		fsys["prompts/deep.tmpl"] = &fstest.MapFile{Data: []byte(strings.Repeat("${(", deep))}
		fsys["agents/fixer.hcl"] = &fstest.MapFile{Data: []byte(agent(`templatefile("prompts/deep.tmpl", {})`))}
		_, diags := Load(fsys, Options{})
		if len(diags) != 1 || !strings.Contains(diags[0].Detail, "Nesting too deep") || rangeString(diags[0].Subject) != "agents/fixer.hcl:4:31-4:48" {
			t.Errorf("got %v, want one error about the nesting at the templatefile argument", diags)
		}
	})
}

// TestLoadInvalidUTF8: after bytes that are not UTF-8, hclsyntax can take
// a newline for part of a character and put every later diagnostic on the
// wrong line (found by FuzzLoadRoles, testdata/fuzz/FuzzLoadRoles). Load
// reports the first invalid byte instead.
func TestLoadInvalidUTF8(t *testing.T) {
	tests := []struct{ src, want string }{
		{strings.Repeat("0", 48) + "\xea\xde\n$", "agents/x.hcl:1:49-1:50"},
		{"a = 1\xea\xde\nb = 2\n\xff\n$", "agents/x.hcl:1:6-1:7"},
		{"agent \"é\" {\n  description = \"ü\xff\"\n}\n", "agents/x.hcl:2:19-2:20"},
	}
	for _, tc := range tests {
		src := []byte(tc.src)
		_, diags := Load(fstest.MapFS{"agents/x.hcl": {Data: src}}, Options{})
		if len(diags) != 1 || diags[0].Summary != "Invalid character encoding" || rangeString(diags[0].Subject) != tc.want {
			t.Errorf("%q: got %v, want one Invalid character encoding at %s", tc.src, diags, tc.want)
			continue
		}
		if err := checkSubject(diags[0], "agents/x.hcl", src); err != nil {
			t.Errorf("%q: %v", tc.src, err)
		}
	}
}
