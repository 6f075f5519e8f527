package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentgitops/reconciler/hclspec"
)

func cmdValidate(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate", "validate [DIR] [--format text|json]", stderr)
	format := fs.String("format", "text", "output format: text or json")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 1 {
		return usageError(stderr, "validate takes one directory, got %d arguments", fs.NArg())
	}
	if *format != "text" && *format != "json" {
		return usageError(stderr, "--format %q: use text or json", *format)
	}
	dir := "."
	if fs.NArg() == 1 {
		dir = fs.Arg(0)
	}
	if err := checkSpecDir(dir); err != nil {
		return fail(stderr, fmt.Errorf("validate: %w", err))
	}
	spec, diags := hclspec.Load(os.DirFS(dir), hclspec.Options{LookupEnv: os.LookupEnv})
	if *format == "json" {
		writeJSONDiags(stdout, diags)
	} else {
		var files map[string]*hcl.File
		if spec != nil {
			files = spec.Files
		} else {
			files = parsedFiles(dir, diags)
		}
		wr := hcl.NewDiagnosticTextWriter(stdout, files, 100, false)
		_ = wr.WriteDiagnostics(diags)
		if !diags.HasErrors() {
			fmt.Fprintf(stdout, "Success! The configuration is valid: %d agent(s), %d polic(ies), %d provider(s), %d reviewer group(s).\n",
				len(spec.Agents), len(spec.Policies), len(spec.Providers), len(spec.Groups))
		}
	}
	if diags.HasErrors() {
		return exitFail
	}
	return exitOK
}

// checkSpecDir returns an error unless dir is a directory holding a
// desired-state spec: at least one of agents/, policies/, providers.hcl
// and reviewers.hcl. Without the check, a typo in the path or a run in
// the wrong folder would validate an empty spec and pass.
func checkSpecDir(dir string) error {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%q is not a directory", dir)
	}
	for _, name := range []string{"agents", "policies", hclspec.ProvidersFile, hclspec.ReviewersFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%q holds no desired-state spec: expected agents/, policies/, %s or %s in it; pass the root of the desired-state repository", dir, hclspec.ProvidersFile, hclspec.ReviewersFile)
}

// parsedFiles re-reads the files diagnostics point at so the text writer
// can show their source lines.
func parsedFiles(dir string, diags hcl.Diagnostics) map[string]*hcl.File {
	files := map[string]*hcl.File{}
	for _, d := range diags {
		if d.Subject == nil {
			continue
		}
		name := d.Subject.Filename
		if _, ok := files[name]; ok {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name))); err == nil {
			// Parse again for the body, so the writer can name the
			// enclosing block ("in agent \"a\"").
			f, _ := hclspec.ParseFile(b, name)
			if f == nil {
				f = &hcl.File{Bytes: b}
			}
			files[name] = f
		}
	}
	return files
}

type jsonDiag struct {
	Severity string     `json:"severity"`
	Summary  string     `json:"summary"`
	Detail   string     `json:"detail,omitempty"`
	Range    *jsonRange `json:"range,omitempty"`
}

type jsonRange struct {
	Filename string  `json:"filename"`
	Start    jsonPos `json:"start"`
	End      jsonPos `json:"end"`
}

type jsonPos struct {
	Line   int `json:"line"`
	Column int `json:"column"`
	Byte   int `json:"byte"`
}

// writeJSONDiags prints diagnostics in the shape of `terraform validate -json`.
func writeJSONDiags(w io.Writer, diags hcl.Diagnostics) {
	out := struct {
		Valid        bool       `json:"valid"`
		ErrorCount   int        `json:"error_count"`
		WarningCount int        `json:"warning_count"`
		Diagnostics  []jsonDiag `json:"diagnostics"`
	}{Valid: !diags.HasErrors(), Diagnostics: toJSONDiags(diags)}
	for _, d := range out.Diagnostics {
		if d.Severity == "warning" {
			out.WarningCount++
		} else {
			out.ErrorCount++
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

// toJSONDiags converts diagnostics for JSON output; never nil.
func toJSONDiags(diags hcl.Diagnostics) []jsonDiag {
	out := []jsonDiag{}
	for _, d := range diags {
		jd := jsonDiag{Severity: "error", Summary: d.Summary, Detail: d.Detail}
		if d.Severity == hcl.DiagWarning {
			jd.Severity = "warning"
		}
		if s := d.Subject; s != nil {
			jd.Range = &jsonRange{Filename: s.Filename,
				Start: jsonPos{s.Start.Line, s.Start.Column, s.Start.Byte},
				End:   jsonPos{s.End.Line, s.End.Column, s.End.Byte}}
		}
		out = append(out, jd)
	}
	return out
}
