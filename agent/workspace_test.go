package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// confinementTree makes a workspace with control files, .git, a file
// outside the workspace and links that point out of the scope or the
// workspace. It returns the workspace and the directory beside it.
func confinementTree(t *testing.T) (string, string) {
	t.Helper()
	base := t.TempDir()
	ws, outside := filepath.Join(base, "ws"), filepath.Join(base, "outside")
	seedTree(t, ws, map[string]string{
		"services/api/app.yaml":  "replicas: 2\n",
		"services/api/big.txt":   strings.Repeat("x", defaultMaxFileBytes+1),
		"README.md":              "# repo\n",
		"policies/x.hcl":         "policy \"x\" {}\n",
		"agents/a.hcl":           "agent \"a\" {}\n",
		"providers.hcl":          "# providers\n",
		".reconciler/keys/k.pub": "ssh-ed25519 AAAA\n",
		".git/config":            "[core]\n",
		"services/.git/config":   "[core]\n",
	})
	seedTree(t, outside, map[string]string{"secret.txt": "outside secret\n"})
	links := map[string]string{
		"services/api/out-abs":   filepath.Join(outside, "secret.txt"),
		"services/api/out-rel":   "../../../outside/secret.txt",
		"services/api/out-dir":   outside,
		"services/api/to-policy": "../../policies/x.hcl",
		"services/api/to-app":    "app.yaml",
		"services/linkdir":       "api",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(ws, filepath.FromSlash(name))); err != nil {
			t.Skipf("symlinks: %v", err)
		}
	}
	return ws, outside
}

func TestWorkspaceConfinement(t *testing.T) {
	type op string
	const (
		read   op = "read"
		write  op = "write"
		remove op = "delete"
		list   op = "list"
	)
	tests := []struct {
		name  string
		op    op
		path  string
		scope []string
		// want is the start of the error; "" means allowed.
		want string
	}{
		{"in scope", read, "services/api/app.yaml", nil, ""},
		{"in scope with ./", read, "./services//api/app.yaml", nil, ""},
		{"write in scope", write, "services/api/new/dir/file.yaml", nil, ""},
		{"dotdot", write, "../escape.txt", nil, `refused: path "../escape.txt" leaves the workspace`},
		{"dotdot inside", read, "services/../services/api/app.yaml", nil, "refused: path"},
		{"dotdot deep", write, "services/api/../../../outside/x", nil, "refused: path"},
		{"absolute", write, "/etc/passwd", nil, `refused: path "/etc/passwd" is absolute`},
		{"absolute into the workspace", read, "$WS/services/api/app.yaml", nil, "refused: path"},
		{"backslash", write, `services\..\..\x`, nil, "refused: path"},
		{"NUL", read, "services/api/app.yaml\x00.txt", nil, "refused: path"},
		{"empty", read, "", nil, "refused: a path is required"},
		{"root", read, ".", []string{"**"}, `"." is the repository root`},
		{"symlink out, absolute", read, "services/api/out-abs", nil, `refused: "services/api/out-abs" is a symbolic link`},
		{"symlink out, relative", read, "services/api/out-rel", nil, "refused:"},
		{"write through symlink out", write, "services/api/out-rel", nil, "refused:"},
		{"write into symlinked dir out", write, "services/api/out-dir/new.txt", nil, `refused: "services/api/out-dir" is a symbolic link`},
		{"read through symlinked dir out", read, "services/api/out-dir/secret.txt", nil, "refused:"},
		{"symlink to a control file", read, "services/api/to-policy", []string{"**"}, "refused:"},
		{"symlink inside scope", read, "services/api/to-app", nil, "refused:"},
		{"symlinked dir inside scope", write, "services/linkdir/app.yaml", nil, "refused:"},
		{"delete symlink", remove, "services/api/to-app", nil, "refused:"},
		{"list through symlinked dir", list, "services/api/out-dir", nil, "refused:"},
		{"control: policy", write, "policies/x.hcl", []string{"**"}, `refused: "policies/x.hcl" is a control file`},
		{"control: policy read", read, "policies/x.hcl", []string{"**"}, "refused:"},
		{"control: agent", remove, "agents/a.hcl", []string{"**"}, "refused:"},
		{"control: providers", write, "providers.hcl", []string{"**"}, "refused:"},
		{"control: reviewers", write, "reviewers.hcl", []string{"**"}, "refused:"},
		{"control: keys", write, ".reconciler/keys/evil.pub", []string{"**"}, "refused:"},
		{"control: case", write, "Policies/x.hcl", []string{"**"}, "refused:"},
		{".git", write, ".git/config", []string{"**"}, `refused: ".git/config" is inside .git`},
		{".git nested", write, "services/.git/config", nil, "refused:"},
		{".git case", read, "services/.GIT/config", nil, "refused:"},
		{".git list", list, ".git", []string{"**"}, "refused:"},
		{"out of scope read", read, "README.md", nil, `refused: "README.md" is outside the agent's scope (services/**)`},
		{"out of scope write", write, "deploy/x.yaml", nil, "refused:"},
		{"out of scope delete", remove, "README.md", nil, "refused:"},
		{"no scope", read, "services/api/app.yaml", []string{}, "refused:"},
		{"too large read", read, "services/api/big.txt", nil, `refused: "services/api/big.txt" is 1048577 bytes, over the 1048576-byte limit`},
		{"too large write", write, "services/api/huge.txt", nil, "refused: the content is 1048577 bytes"},
		{"missing", read, "services/api/nope.yaml", nil, `"services/api/nope.yaml" does not exist`},
		{"directory", read, "services/api", nil, `"services/api" is a directory`},
		{"delete directory", remove, "services/api", nil, `"services/api" is a directory`},
		{"write over directory", write, "services/api", nil, `"services/api" is a directory`},
		{"list missing", list, "services/nope", nil, `"services/nope" does not exist`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, outside := confinementTree(t)
			scope := tt.scope
			if scope == nil {
				scope = []string{"services/**"}
			}
			ws, err := openWorkspace(dir, scope, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			before := snapshotTree(t, filepath.Dir(dir))
			p := strings.ReplaceAll(tt.path, "$WS", dir)
			switch tt.op {
			case read:
				_, _, err = ws.read(p)
			case write:
				size := 3
				if strings.Contains(tt.name, "too large") {
					size = defaultMaxFileBytes + 1
				}
				_, err = ws.write(p, []byte(strings.Repeat("y", size)))
			case remove:
				_, err = ws.remove(p)
			case list:
				_, _, err = ws.files(context.Background(), p)
			}
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("%s %q: %v", tt.op, p, err)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
				t.Fatalf("%s %q: err = %v, want %q...", tt.op, p, err, tt.want)
			case strings.HasPrefix(tt.want, "refused") && !errors.Is(err, ErrRefused):
				t.Errorf("err = %v does not wrap ErrRefused", err)
			}
			if err != nil && strings.Contains(err.Error(), filepath.Dir(dir)) && !strings.Contains(tt.path, "$WS") {
				t.Errorf("the error shows the workspace's location: %v", err)
			}
			after := snapshotTree(t, filepath.Dir(dir))
			if tt.want != "" || tt.op != write {
				if diff := cmp.Diff(before, after); diff != "" {
					t.Errorf("a refused %s changed files (-before +after):\n%s", tt.op, diff)
				}
			}
			if got := snapshotTree(t, outside); got["secret.txt"] != "outside secret\n" || len(got) != 1 {
				t.Errorf("outside changed: %v", got)
			}
		})
	}
}

func TestWorkspaceFiles(t *testing.T) {
	dir, _ := confinementTree(t)
	seedTree(t, dir, map[string]string{
		"services/web/b.txt":                 "b",
		"services/web/a.txt":                 "a",
		"services/web/" + tempPrefix + "123": "partial write",
	})
	ws, err := openWorkspace(dir, []string{"services/**", "policies/**"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_, files, err := ws.files(context.Background(), ".")
	if err != nil {
		t.Fatal(err)
	}
	want := []fileEntry{
		{"services/api/app.yaml", 12},
		{"services/api/big.txt", defaultMaxFileBytes + 1},
		{"services/web/a.txt", 1},
		{"services/web/b.txt", 1},
	}
	if diff := cmp.Diff(want, files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	rel, one, err := ws.files(context.Background(), "services/web/a.txt")
	if err != nil || rel != "services/web/a.txt" || len(one) != 1 {
		t.Errorf("files of one file = %q, %v, %v", rel, one, err)
	}
	if _, _, err := ws.files(context.Background(), "README.md"); !errors.Is(err, ErrRefused) {
		t.Errorf("files of a file out of scope: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	many := map[string]string{}
	for i := range 300 {
		many[fmt.Sprintf("services/many/f%03d.txt", i)] = ""
	}
	seedTree(t, dir, many)
	if _, _, err := ws.files(ctx, "."); !errors.Is(err, context.Canceled) {
		t.Errorf("files with a cancelled context: %v", err)
	}
}

func TestWorkspaceWriteKeepsMode(t *testing.T) {
	dir := t.TempDir()
	seedTree(t, dir, map[string]string{"services/run.sh": "#!/bin/sh\n"})
	if err := os.Chmod(filepath.Join(dir, "services/run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	ws, err := openWorkspace(dir, []string{"services/**"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, err := ws.write("services/run.sh", []byte("#!/bin/sh\necho hi\n")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "services/run.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode = %v, want 0755", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "services"))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestIsBinary(t *testing.T) {
	tests := []struct {
		data []byte
		want bool
	}{
		{nil, false},
		{[]byte("text\n"), false},
		{[]byte("a\x00b"), true},
		{append([]byte(strings.Repeat("a", binarySniffLen)), 0), false},
		{append([]byte(strings.Repeat("a", binarySniffLen-1)), 0), true},
	}
	for i, tt := range tests {
		if got := isBinary(tt.data); got != tt.want {
			t.Errorf("%d: isBinary = %v, want %v", i, got, tt.want)
		}
	}
}

// The meter checks each read and write before it is done: the one that
// would pass a limit is not done and fails with a *LimitError naming it.
func TestWorkspaceMeter(t *testing.T) {
	dir := t.TempDir()
	seedTree(t, dir, map[string]string{"services/a.txt": strings.Repeat("a", 600), "services/b.txt": "b\n"})
	ws, err := openWorkspace(dir, []string{"services/**"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.meter = newMeter(3, 1000, 1000)
	wantLimit := func(err error, limit, msg string) {
		t.Helper()
		var le *LimitError
		if !errors.As(err, &le) || !errors.Is(err, ErrWorkLimit) || le.Limit != limit || !strings.Contains(err.Error(), msg) {
			t.Errorf("err = %v, want limit %s with %q", err, limit, msg)
		}
	}

	if _, _, err := ws.read("services/a.txt"); err != nil {
		t.Fatal(err)
	}
	_, _, err = ws.read("services/a.txt")
	wantLimit(err, "max_bytes_read", "limit max_bytes_read (1000) reached: reading services/a.txt (600 bytes) would make 1200 bytes of file content read in this run")
	if _, _, err := ws.read("services/b.txt"); err != nil || ws.meter.read != 602 {
		t.Errorf("read b: %v, %d bytes read", err, ws.meter.read)
	}

	// Files are counted once, at their last size; deleting makes one 0.
	for _, w := range []struct {
		path string
		n    int
	}{{"services/new.txt", 700}, {"services/new.txt", 900}, {"services/new.txt", 100}, {"services/b.txt", 800}} {
		if _, err := ws.write(w.path, []byte(strings.Repeat("n", w.n))); err != nil {
			t.Fatalf("write %s (%d bytes): %v", w.path, w.n, err)
		}
	}
	if ws.meter.written != 900 || len(ws.meter.sizes) != 2 {
		t.Errorf("written %d bytes in %d files, want 900 in 2", ws.meter.written, len(ws.meter.sizes))
	}
	_, err = ws.write("services/new.txt", []byte(strings.Repeat("n", 201)))
	wantLimit(err, "max_bytes_written", "writing services/new.txt (201 bytes) would make the files written in this run 1001 bytes in total")
	if _, err := ws.remove("services/b.txt"); err != nil || ws.meter.written != 100 {
		t.Errorf("remove: %v, written %d", err, ws.meter.written)
	}
	if _, err := ws.write("services/c.txt", []byte("c")); err != nil {
		t.Fatal(err)
	}
	_, err = ws.write("services/d.txt", []byte("d"))
	wantLimit(err, "max_files_written", "changing services/d.txt would make 4 files written, edited or deleted in this run")
	_, err = ws.remove("services/a.txt")
	wantLimit(err, "max_files_written", "changing services/a.txt would make 4")
	if _, err := os.Stat(filepath.Join(dir, "services/d.txt")); !os.IsNotExist(err) {
		t.Errorf("the write over the limit was done: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "services/a.txt")); err != nil {
		t.Errorf("the delete over the limit was done: %v", err)
	}
	// Shrinking a file never passes max_bytes_written.
	ws.meter.maxWritten = 10
	if _, err := ws.write("services/new.txt", []byte("small")); err != nil {
		t.Errorf("shrinking: %v", err)
	}
}
