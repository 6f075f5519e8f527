package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// toolsTree is the workspace of the tool tests.
func toolsTree() map[string]string {
	var long strings.Builder
	for i := 1; i <= 450; i++ {
		fmt.Fprintf(&long, "line %d\n", i)
	}
	return map[string]string{
		"services/api/app.yaml":  "name: api\nreplicas: 2\nimage: api:v1\n",
		"services/api/dup.yaml":  "a: 1\nb: 1\na: 1\n",
		"services/api/long.txt":  long.String(),
		"services/api/wide.txt":  strings.Repeat("0123456789abcdef", 40<<10/16) + "\n",
		"services/api/bin.dat":   "GIF89a\x00\x01\x02" + strings.Repeat("z", 100),
		"services/api/empty.txt": "",
		"services/web/app.yaml":  "name: web\nimage: web:v1\n",
		"policies/x.hcl":         "image: api:v1 in a policy\n",
		"README.md":              "image: api:v1 in the readme\n",
	}
}

func TestTools(t *testing.T) {
	tests := []struct {
		name string
		tool string
		args string
		// want is the whole result, or its start when it ends in "...".
		want    string
		wantErr bool
		// files are the files that must have this content afterwards
		// ("" means deleted).
		files map[string]string
	}{
		{name: "list root", tool: "list_files", args: `{}`, want: "services/api/app.yaml (36 bytes)\nservices/api/bin.dat (109 bytes)\nservices/api/dup.yaml (15 bytes)\nservices/api/empty.txt (0 bytes)\nservices/api/long.txt (3942 bytes)\nservices/api/wide.txt (40961 bytes)\nservices/web/app.yaml (24 bytes)"},
		{name: "list empty args", tool: "list_files", args: ``, want: "services/api/app.yaml (36 bytes)\n..."},
		{name: "list dir", tool: "list_files", args: `{"path":"services/web"}`, want: "services/web/app.yaml (24 bytes)"},
		{name: "list out of scope", tool: "list_files", args: `{"path":"policies"}`, want: "no files in scope under policies (scope: services/**)"},
		{name: "list missing", tool: "list_files", args: `{"path":"nope"}`, want: `error: "nope" does not exist (list_files shows the files in scope)`, wantErr: true},
		{name: "list dotdot", tool: "list_files", args: `{"path":".."}`, want: `error: refused: path ".." leaves the workspace...`, wantErr: true},

		{name: "read", tool: "read_file", args: `{"path":"services/api/app.yaml"}`, want: "name: api\nreplicas: 2\nimage: api:v1"},
		{name: "read range", tool: "read_file", args: `{"path":"services/api/app.yaml","offset":2,"limit":1}`, want: "replicas: 2\n[lines 2-2 of 3; call again with offset=3 to read more]"},
		{name: "read pages", tool: "read_file", args: `{"path":"services/api/long.txt"}`, want: "line 1\nline 2\n..."},
		{name: "read last page", tool: "read_file", args: `{"path":"services/api/long.txt","offset":401}`, want: "line 401\n..."},
		{name: "read past end", tool: "read_file", args: `{"path":"services/api/long.txt","offset":451}`, want: "error: offset 451 is past the end of services/api/long.txt, which has 450 lines", wantErr: true},
		{name: "read bad offset", tool: "read_file", args: `{"path":"services/api/long.txt","offset":0}`, want: "error: offset is the first line to read, 1 or more; got 0", wantErr: true},
		{name: "read bad limit", tool: "read_file", args: `{"path":"services/api/long.txt","limit":-1}`, want: "error: limit is the number of lines to read, 1 or more; got -1", wantErr: true},
		{name: "read binary", tool: "read_file", args: `{"path":"services/api/bin.dat"}`, want: "binary file, 109 bytes: not shown"},
		{name: "read empty", tool: "read_file", args: `{"path":"services/api/empty.txt"}`, want: "(empty file)"},
		{name: "read control", tool: "read_file", args: `{"path":"policies/x.hcl"}`, want: `error: refused: "policies/x.hcl" is a control file...`, wantErr: true},
		{name: "read no path", tool: "read_file", args: `{}`, want: `error: argument "path" of read_file is required...`, wantErr: true},

		{name: "search", tool: "search", args: `{"pattern":"image: .*:v1"}`, want: "services/api/app.yaml:3: image: api:v1\nservices/web/app.yaml:2: image: web:v1\n[1 binary or oversized files were not searched]"},
		{name: "search path", tool: "search", args: `{"pattern":"(?i)NAME","path":"services/web"}`, want: "services/web/app.yaml:1: name: web"},
		{name: "search file", tool: "search", args: `{"pattern":"^a:","path":"services/api/dup.yaml"}`, want: "services/api/dup.yaml:1: a: 1\nservices/api/dup.yaml:3: a: 1"},
		{name: "search no match", tool: "search", args: `{"pattern":"nothing here","path":"services/web"}`, want: `no matches for "nothing here" in 1 files in scope under services/web`},
		{name: "search bad regexp", tool: "search", args: `{"pattern":"(unclosed"}`, want: "error: invalid pattern (RE2 syntax): error parsing regexp: missing closing ): `(unclosed`", wantErr: true},
		{name: "search no pattern", tool: "search", args: `{"path":"services"}`, want: `error: argument "pattern" of search is required...`, wantErr: true},
		{name: "search out of scope", tool: "search", args: `{"pattern":"x","path":"README.md"}`, want: `error: refused: "README.md" is outside the agent's scope...`, wantErr: true},

		{name: "write new", tool: "write_file", args: `{"path":"services/new/dir/x.yaml","content":"x: 1\n"}`, want: "wrote services/new/dir/x.yaml (5 bytes)", files: map[string]string{"services/new/dir/x.yaml": "x: 1\n"}},
		{name: "write over", tool: "write_file", args: `{"path":"services/api/app.yaml","content":""}`, want: "wrote services/api/app.yaml (0 bytes)", files: map[string]string{"services/api/app.yaml": ""}},
		{name: "write no content", tool: "write_file", args: `{"path":"services/api/app.yaml"}`, want: `error: argument "content" of write_file is required...`, wantErr: true},
		{name: "write out of scope", tool: "write_file", args: `{"path":"README.md","content":"x"}`, want: `error: refused: "README.md" is outside...`, wantErr: true, files: map[string]string{"README.md": "image: api:v1 in the readme\n"}},

		{name: "edit", tool: "edit_file", args: `{"path":"services/api/app.yaml","old_text":"replicas: 2","new_text":"replicas: 3\nminReplicas: 2"}`, want: "edited services/api/app.yaml: replaced 1 line with 2 lines", files: map[string]string{"services/api/app.yaml": "name: api\nreplicas: 3\nminReplicas: 2\nimage: api:v1\n"}},
		{name: "edit delete text", tool: "edit_file", args: `{"path":"services/api/app.yaml","old_text":"replicas: 2\n","new_text":""}`, want: "edited services/api/app.yaml: replaced 1 line with 0 lines", files: map[string]string{"services/api/app.yaml": "name: api\nimage: api:v1\n"}},
		{name: "edit no match", tool: "edit_file", args: `{"path":"services/api/app.yaml","old_text":"replicas: 9","new_text":"x"}`, want: "error: old_text does not occur in services/api/app.yaml; read_file shows the current content (copy whitespace and indentation exactly)", wantErr: true},
		{name: "edit two matches", tool: "edit_file", args: `{"path":"services/api/dup.yaml","old_text":"a: 1","new_text":"a: 2"}`, want: "error: old_text occurs 2 times in services/api/dup.yaml; include more surrounding lines so it occurs exactly once", wantErr: true, files: map[string]string{"services/api/dup.yaml": "a: 1\nb: 1\na: 1\n"}},
		{name: "edit empty old", tool: "edit_file", args: `{"path":"services/api/app.yaml","old_text":"","new_text":"x"}`, want: `error: argument "old_text" of edit_file is required...`, wantErr: true},
		{name: "edit no new", tool: "edit_file", args: `{"path":"services/api/app.yaml","old_text":"name"}`, want: `error: argument "new_text" of edit_file is required...`, wantErr: true},
		{name: "edit binary", tool: "edit_file", args: `{"path":"services/api/bin.dat","old_text":"GIF","new_text":"PNG"}`, want: `error: refused: "services/api/bin.dat" is a binary file, 109 bytes; it cannot be edited`, wantErr: true},
		{name: "edit control", tool: "edit_file", args: `{"path":"policies/x.hcl","old_text":"image","new_text":"x"}`, want: "error: refused: ...", wantErr: true, files: map[string]string{"policies/x.hcl": "image: api:v1 in a policy\n"}},

		{name: "delete", tool: "delete_file", args: `{"path":"services/api/dup.yaml"}`, want: "deleted services/api/dup.yaml", files: map[string]string{"services/api/dup.yaml": ""}},
		{name: "delete missing", tool: "delete_file", args: `{"path":"services/api/nope"}`, want: `error: "services/api/nope" does not exist...`, wantErr: true},
		{name: "delete control", tool: "delete_file", args: `{"path":"policies/x.hcl"}`, want: "error: refused: ...", wantErr: true, files: map[string]string{"policies/x.hcl": "image: api:v1 in a policy\n"}},

		{name: "finish", tool: "finish", args: `{"summary":"s","rationale":"r","risk":"high"}`, want: "finished"},
		{name: "finish no summary", tool: "finish", args: `{"summary":" ","rationale":"r","risk":"low"}`, want: `error: argument "summary" of finish is required...`, wantErr: true},
		{name: "finish no risk", tool: "finish", args: `{"summary":"s","rationale":"r"}`, want: `error: risk must be one of low, medium, high, got ""`, wantErr: true},
		{name: "finish too long", tool: "finish", args: `{"summary":"s","rationale":"` + strings.Repeat("r", 70000) + `","risk":"low"}`, want: "error: refused: the arguments of finish are 70043 bytes, over the 65536-byte limit of one call", wantErr: true},
		{name: "write too long", tool: "write_file", args: `{"path":"services/api/x.txt","content":"` + strings.Repeat("x", 5<<20) + `"}`, want: "error: refused: the arguments of write_file are 5242922 bytes, over the 4194304-byte limit of one call (a file may be at most 1048576 bytes)", wantErr: true, files: map[string]string{"services/api/x.txt": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			seedTree(t, dir, toolsTree())
			ws, err := openWorkspace(dir, []string{"services/**"}, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			tb := newToolbox(ws, []string{"list_files", "read_file", "search", "write_file", "edit_file", "delete_file"})
			res, err := tb.run(context.Background(), tt.tool, tt.args)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if prefix, ok := strings.CutSuffix(tt.want, "..."); ok {
				if !strings.HasPrefix(res.Text, prefix) {
					t.Errorf("result = %q, want it to start with %q", res.Text, prefix)
				}
			} else if res.Text != tt.want {
				t.Errorf("result = %q\nwant       %q", res.Text, tt.want)
			}
			if res.IsErr != tt.wantErr {
				t.Errorf("IsErr = %v, want %v", res.IsErr, tt.wantErr)
			}
			for name, want := range tt.files {
				b, err := os.ReadFile(filepath.Join(dir, name))
				if want == "" && !os.IsNotExist(err) && len(b) != 0 {
					t.Errorf("%s still exists", name)
				} else if want != "" && string(b) != want {
					t.Errorf("%s = %q, want %q", name, b, want)
				}
			}
		})
	}
}

func TestReadFilePaging(t *testing.T) {
	dir := t.TempDir()
	seedTree(t, dir, toolsTree())
	ws, err := openWorkspace(dir, []string{"services/**"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	tb := newToolbox(ws, []string{"read_file"})
	var got []string
	offset := 1
	for range 5 {
		res, err := tb.run(context.Background(), "read_file", fmt.Sprintf(`{"path":"services/api/long.txt","offset":%d}`, offset))
		if err != nil || res.IsErr {
			t.Fatalf("read at %d: %v %q", offset, err, res.Text)
		}
		lines := strings.Split(res.Text, "\n")
		notice := lines[len(lines)-1]
		got = append(got, notice)
		if _, err := fmt.Sscanf(notice, "[lines %d-", new(int)); err != nil {
			t.Fatalf("no notice: %q", notice)
		}
		if !strings.Contains(notice, "offset=") {
			break
		}
		offset += len(lines) - 1
	}
	want := []string{
		"[lines 1-200 of 450; call again with offset=201 to read more]",
		"[lines 201-400 of 450; call again with offset=401 to read more]",
		"[lines 401-450 of 450]",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("notices (-want +got):\n%s", diff)
	}
	res, _ := tb.run(context.Background(), "read_file", `{"path":"services/api/long.txt","limit":5000}`)
	if !strings.HasSuffix(res.Text, "line 450") {
		t.Errorf("a limit over the maximum reads %d lines, want all 450", strings.Count(res.Text, "\n")+1)
	}
}

func TestToolResultTruncation(t *testing.T) {
	dir := t.TempDir()
	seedTree(t, dir, toolsTree())
	ws, err := openWorkspace(dir, []string{"services/**"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	tb := newToolbox(ws, []string{"read_file", "search"})
	for _, args := range []string{`{"path":"services/api/wide.txt"}`} {
		res, err := tb.run(context.Background(), "read_file", args)
		if err != nil {
			t.Fatal(err)
		}
		body, notice, ok := strings.Cut(res.Text, "\n[truncated: ")
		if !ok || len(body) != defaultMaxResultBytes {
			t.Fatalf("result of %d bytes, body %d; want a truncation notice after %d bytes", len(res.Text), len(body), defaultMaxResultBytes)
		}
		if want := "the result is 40960 bytes, only the first 16384 are shown; ask for less, e.g. read_file with offset and limit or a narrower search]"; notice != want {
			t.Errorf("notice = %q, want %q", notice, want)
		}
	}
	// Truncation never splits a character.
	s := strings.Repeat("é", 10)
	if got := truncate(s, 5); !strings.HasPrefix(got, "éé\n[truncated") {
		t.Errorf("truncate = %q", got)
	}
	if got := truncate("short", 16); got != "short" {
		t.Errorf("truncate = %q", got)
	}
}

func TestSearchCaps(t *testing.T) {
	dir := t.TempDir()
	seedTree(t, dir, map[string]string{
		"services/a.txt": "match " + strings.Repeat("x", 300) + "\n",
		"services/b.txt": strings.Repeat("match\n", 150),
	})
	ws, err := openWorkspace(dir, []string{"services/**"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	res, _ := newToolbox(ws, []string{"search"}).run(context.Background(), "search", `{"pattern":"match"}`)
	lines := strings.Split(res.Text, "\n")
	if len(lines) != maxSearchMatches+1 || lines[maxSearchMatches] != "[only the first 100 matches are shown; narrow the pattern or the path]" {
		t.Errorf("%d lines, last %q", len(lines), lines[len(lines)-1])
	}
	if want := "services/a.txt:1: match " + strings.Repeat("x", maxSearchLineRunes-6) + "…"; lines[0] != want {
		t.Errorf("line = %q, want %q", lines[0], want)
	}
}

func TestToolDefinitions(t *testing.T) {
	tb := newToolbox(nil, []string{"delete_file", "read_file", "nonsense"})
	if diff := cmp.Diff([]string{"read_file", "delete_file", "finish"}, tb.names()); diff != "" {
		t.Errorf("offered (-want +got):\n%s", diff)
	}
	for _, d := range toolDefs {
		var schema map[string]any
		if err := json.Unmarshal([]byte(d.params), &schema); err != nil {
			t.Errorf("%s: schema: %v", d.name, err)
		}
		var hint map[string]any
		if err := json.Unmarshal([]byte(d.hint), &hint); err != nil {
			t.Errorf("%s: hint: %v", d.name, err)
		}
	}
}

// FuzzToolCall calls the tools with arbitrary names and arguments, as a
// model may: nothing panics, and nothing outside the scope changes.
func FuzzToolCall(f *testing.F) {
	seeds := [][2]string{
		{"read_file", `{"path":"services/api/app.yaml","offset":2,"limit":1}`},
		{"write_file", `{"path":"../x","content":"x"}`},
		{"write_file", `{"path":"services/x","content":"x"}`},
		{"edit_file", `{"path":"services/api/app.yaml","old_text":"api","new_text":"x"}`},
		{"delete_file", `{"path":"policies/x.hcl"}`},
		{"search", `{"pattern":"(a*)*b","path":"."}`},
		{"list_files", `{"path":"/"}`},
		{"finish", `{"summary":1}`},
		{"read_file", `{"path":`},
		{"nope", `[]`},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, name, args string) {
		dir, err := os.MkdirTemp(base, "ws")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		tree := map[string]string{"services/api/app.yaml": "name: api\n", "policies/x.hcl": "x\n", "README.md": "r\n"}
		seedTree(t, dir, tree)
		ws, err := openWorkspace(dir, []string{"services/**"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		tb := newToolbox(ws, []string{"list_files", "read_file", "search", "write_file", "edit_file", "delete_file"})
		res, err := tb.run(context.Background(), name, args)
		if err != nil {
			t.Fatalf("run error: %v", err)
		}
		if res.Text == "" {
			t.Error("empty result")
		}
		got := snapshotTree(t, dir)
		for p, content := range got {
			if !strings.HasPrefix(p, "services/") && tree[p] != content {
				t.Errorf("%s changed outside the scope", p)
			}
		}
		for p := range tree {
			if _, ok := got[p]; !ok && !strings.HasPrefix(p, "services/") {
				t.Errorf("%s deleted outside the scope", p)
			}
		}
		if entries, _ := os.ReadDir(base); len(entries) != 1 {
			t.Errorf("files beside the workspace: %v", entries)
		}
	})
}
