package hclspec

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// corpusDir is the shared conformance corpus of real-world and malformed
// HCL (Nomad jobs, Vault and Sentinel policies, hcl's own spec suite and
// fuzz seeds, inputs from bug reports). It lives beside the project, not
// in it, so tests that read it skip when it is absent.
var corpusDir = filepath.Join("..", "..", "shared", "conformance", "hcl")

// referenceFile records how hashicorp/hcl v2.24.0's hclparse parsed each
// corpus file: "OK\tpath" or "ERR\tpath\tline:col-line:col(byte a-b)\tsummary".
const referenceFile = "REFERENCE-hcl-v2.24.0-parse-results.tsv"

// corpusRoles are the paths Load reads a file at, one per kind of file.
var corpusRoles = []string{ProvidersFile, ReviewersFile, "agents/x.hcl", "policies/x.hcl"}

// loadTimeout bounds one Load of one corpus file: far more than it takes,
// so that only a hang trips it.
const loadTimeout = 10 * time.Second

// corpusFiles lists the corpus files written in HCL native syntax, as
// slash-separated paths relative to dir, sorted. JSON, the reference
// results, licenses and READMEs are left out.
func corpusFiles(t testing.TB, dir string) []string {
	t.Helper()
	var names []string
	err := fs.WalkDir(os.DirFS(dir), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(name) {
		case ".hcl", ".hcldec", ".nomad", ".t", ".hcle", ".hclt", ".tmpl":
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// reference is hcl v2.24.0's verdict on one file: whether it parsed, and
// the start lines of its errors when it did not.
type reference struct {
	ok    bool
	lines []int
}

func readReference(t testing.TB, name string) map[string]*reference {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	refs := map[string]*reference{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) < 2 {
			t.Fatalf("%s:%d: want at least 2 tab-separated fields, got %q", name, n, sc.Text())
		}
		status, file := fields[0], fields[1]
		r := refs[file]
		if r == nil {
			r = &reference{ok: true}
			refs[file] = r
		}
		switch status {
		case "OK":
		case "ERR":
			if len(fields) < 3 {
				t.Fatalf("%s:%d: ERR without a range: %q", name, n, sc.Text())
			}
			line, _, _ := strings.Cut(fields[2], ":")
			l, err := strconv.Atoi(line)
			if err != nil {
				t.Fatalf("%s:%d: range %q: %v", name, n, fields[2], err)
			}
			r.ok = false
			r.lines = append(r.lines, l)
		default:
			t.Fatalf("%s:%d: unknown status %q", name, n, status)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return refs
}

// loadResult is what one bounded Load gave.
type loadResult struct {
	spec  *Spec
	diags hcl.Diagnostics
	panic string // the panic value and stack, when Load panicked
}

// loadBounded runs Load in a goroutine, turning a panic into a result and
// reporting false when it does not return within timeout.
func loadBounded(fsys fs.FS, timeout time.Duration) (loadResult, bool) {
	done := make(chan loadResult, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- loadResult{panic: fmt.Sprintf("%v\n%s", r, debug.Stack())}
			}
		}()
		spec, diags := Load(fsys, Options{})
		done <- loadResult{spec: spec, diags: diags}
	}()
	select {
	case r := <-done:
		return r, true
	case <-time.After(timeout):
		return loadResult{}, false
	}
}

// checkSubject reports what is wrong with the range of a diagnostic about
// the file name with contents src: it must exist, name the file, start at
// a line and column of the file (1-based, consistent with its byte
// offset) and not end before it starts or after the end of the file.
func checkSubject(d *hcl.Diagnostic, name string, src []byte) error {
	r := d.Subject
	switch {
	case r == nil:
		return fmt.Errorf("no subject")
	case r.Filename != name:
		return fmt.Errorf("subject in file %q, want %q", r.Filename, name)
	case r.Start.Line < 1 || r.Start.Column < 1 || r.Start.Byte < 0:
		return fmt.Errorf("subject starts at %d:%d (byte %d), before the file", r.Start.Line, r.Start.Column, r.Start.Byte)
	case r.Start.Byte > len(src) || r.End.Byte > len(src):
		return fmt.Errorf("subject bytes %d-%d beyond the file's %d bytes", r.Start.Byte, r.End.Byte, len(src))
	case r.End.Byte < r.Start.Byte:
		return fmt.Errorf("subject ends at byte %d, before its start at byte %d", r.End.Byte, r.Start.Byte)
	}
	lineStart := bytes.LastIndexByte(src[:r.Start.Byte], '\n') + 1
	line := bytes.Count(src[:r.Start.Byte], []byte("\n")) + 1
	if r.Start.Line != line {
		return fmt.Errorf("subject starts at line %d, but its byte %d is on line %d", r.Start.Line, r.Start.Byte, line)
	}
	lineEnd := bytes.IndexByte(src[lineStart:], '\n')
	if lineEnd < 0 {
		lineEnd = len(src) - lineStart
	}
	// Columns count characters, so a line has at most as many as bytes.
	if r.Start.Column > lineEnd+1 {
		return fmt.Errorf("subject starts at column %d of line %d, which has %d bytes", r.Start.Column, line, lineEnd)
	}
	return nil
}

// TestConformanceCorpus loads every HCL file of the shared conformance
// corpus in each role Load reads a file in: Load must return within
// loadTimeout without panicking, and every error must point into the file.
// The files hcl v2.24.0 could not parse must give an error on a line it
// gave one on; those it parsed must not give a syntax error (they do give
// schema errors: a Nomad job is not an agent).
func TestConformanceCorpus(t *testing.T) {
	dir, err := filepath.Abs(corpusDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("shared conformance corpus not found at %s; it lives beside the project in ../shared", dir)
	}
	refs := readReference(t, filepath.Join(dir, referenceFile))
	names := corpusFiles(t, dir)
	if len(names) == 0 {
		t.Fatalf("no HCL files under %s", dir)
	}
	var loads, diagCount, errCount, refOK, refErr int
	for _, name := range names {
		src, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		ref := refs[name]
		t.Run(name, func(t *testing.T) {
			for _, role := range corpusRoles {
				res, ok := loadBounded(fstest.MapFS{role: {Data: src}}, loadTimeout)
				if !ok {
					t.Errorf("%s as %s: Load did not return within %s", name, role, loadTimeout)
					continue
				}
				if res.panic != "" {
					t.Errorf("%s as %s: Load panicked: %s", name, role, res.panic)
					continue
				}
				loads++
				diagCount += len(res.diags)
				if (res.spec == nil) != res.diags.HasErrors() {
					t.Errorf("%s as %s: Spec returned %v with diagnostics %v", name, role, res.spec != nil, res.diags)
				}
				for _, d := range res.diags {
					if d.Severity != hcl.DiagError {
						continue
					}
					errCount++
					if err := checkSubject(d, role, src); err != nil {
						t.Errorf("%s as %s: %s (%s: %s): %v", name, role, rangeString(d.Subject), d.Summary, d.Detail, err)
					}
				}
				// Load parses with hclparse; its syntax errors are
				// those the parser gives, and Load must return them all.
				_, syntax := hclparse.NewParser().ParseHCL(src, role)
				for _, d := range syntax.Errs() {
					if !containsDiag(res.diags, d) {
						t.Errorf("%s as %s: Load lost the syntax error %s: %s", name, role, rangeString(d.(*hcl.Diagnostic).Subject), d.(*hcl.Diagnostic).Summary)
					}
				}
				if ref == nil || role != "agents/x.hcl" {
					continue
				}
				if ref.ok {
					refOK++
					if syntax.HasErrors() {
						t.Errorf("%s: hcl v2.24.0 parses it, but Load gives syntax errors: %v", name, syntax)
					}
					continue
				}
				refErr++
				if !errorOnLine(res.diags, ref.lines) {
					t.Errorf("%s: hcl v2.24.0 gives errors starting on lines %v, Load none there: %v", name, ref.lines, res.diags)
				}
			}
		})
	}
	var missing []string
	for name := range refs {
		if ext := filepath.Ext(name); ext != ".json" && !slices.Contains(names, name) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Errorf("%s lists files the corpus does not have: %v", referenceFile, missing)
	}
	t.Logf("%d files in %d roles: %d loads, %d diagnostics (%d errors); checked against hcl v2.24.0: %d files that parse, %d that do not",
		len(names), len(corpusRoles), loads, diagCount, errCount, refOK, refErr)
}

// containsDiag reports whether diags holds d: the same summary at the same
// range.
func containsDiag(diags hcl.Diagnostics, d error) bool {
	want, ok := d.(*hcl.Diagnostic)
	if !ok {
		return false
	}
	for _, got := range diags {
		if got.Summary == want.Summary && rangeString(got.Subject) == rangeString(want.Subject) {
			return true
		}
	}
	return false
}

// errorOnLine reports whether one of the errors starts on one of lines.
func errorOnLine(diags hcl.Diagnostics, lines []int) bool {
	for _, d := range diags {
		if d.Severity != hcl.DiagError || d.Subject == nil {
			continue
		}
		for _, l := range lines {
			if d.Subject.Start.Line == l {
				return true
			}
		}
	}
	return false
}
