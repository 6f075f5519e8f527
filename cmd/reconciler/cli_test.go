package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/object"
	"go.yaml.in/yaml/v3"

	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/sandbox"
	"github.com/agentgitops/reconciler/signing"
)

const examplesDir = "../../examples/repo-layout"

// cli runs the reconciler's entry point with args.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// parse collects the positional arguments wherever they stand, honours
// "--", tells a flag's value "--" from the terminator, and sets each flag
// once, so fs.Args() holds every positional and a repeatable flag holds
// each value once.
func TestParseInterleaved(t *testing.T) {
	tests := []struct {
		args    []string
		pos     []string
		format  string
		trusted []string
		verbose bool
		code    int
		ok      bool
	}{
		{args: nil, pos: []string{}, format: "text", ok: true},
		{args: []string{"dir"}, pos: []string{"dir"}, format: "text", ok: true},
		{args: []string{"dir", "--format", "json"}, pos: []string{"dir"}, format: "json", ok: true},
		{args: []string{"--format=json", "dir"}, pos: []string{"dir"}, format: "json", ok: true},
		{args: []string{"a", "-v", "b", "--trusted-key", "k1", "c", "--trusted-key=k2"}, pos: []string{"a", "b", "c"}, format: "text", trusted: []string{"k1", "k2"}, verbose: true, ok: true},
		{args: []string{"a", "--", "--format", "json", "-v"}, pos: []string{"a", "--format", "json", "-v"}, format: "text", ok: true},
		{args: []string{"--", "-dir"}, pos: []string{"-dir"}, format: "text", ok: true},
		{args: []string{"a", "--format", "json", "--", "-b"}, pos: []string{"a", "-b"}, format: "json", ok: true},
		// "--" as a flag's value is no terminator: the flag after it is parsed.
		{args: []string{"--format", "--", "a", "-v"}, pos: []string{"a"}, format: "--", verbose: true, ok: true},
		{args: []string{"-v=false", "a", "--", "b"}, pos: []string{"a", "b"}, format: "text", ok: true},
		{args: []string{"-", "x"}, pos: []string{"-", "x"}, format: "text", ok: true},
		{args: []string{"a", "--bogus"}, code: exitUsage},
		{args: []string{"a", "--format"}, code: exitUsage},
		{args: []string{"a", "-h"}, code: exitOK},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			format := fs.String("format", "text", "")
			verbose := fs.Bool("v", false, "")
			var trusted multiFlag
			fs.Var(&trusted, "trusted-key", "")
			code, ok := parse(fs, tt.args)
			if ok != tt.ok || code != tt.code {
				t.Fatalf("parse = %d, %t; want %d, %t", code, ok, tt.code, tt.ok)
			}
			if !ok {
				return
			}
			if got := fs.Args(); !slices.Equal(got, tt.pos) || fs.NArg() != len(tt.pos) {
				t.Errorf("Args() = %q, want %q", got, tt.pos)
			}
			if *format != tt.format || *verbose != tt.verbose || !slices.Equal(trusted, tt.trusted) {
				t.Errorf("format %q, -v %t, trusted %q; want %q, %t, %q", *format, *verbose, trusted, tt.format, tt.verbose, tt.trusted)
			}
		})
	}
}

// Flags and positional arguments in any order, for every command that
// takes positionals; extra arguments are usage errors for every command.
func TestFlagsAfterArguments(t *testing.T) {
	key := filepath.Join(t.TempDir(), "ledger.key")
	if _, err := signing.GenerateKey(key); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"validate", examplesDir, "--format", "json"}, exitOK, `"valid": true`, ""},
		{[]string{"validate", "--format", "json", examplesDir}, exitOK, `"valid": true`, ""},
		{[]string{"validate", examplesDir, "--format", "xml"}, exitUsage, "", "use text or json"},
		{[]string{"validate", examplesDir, "extra", "--format", "json"}, exitUsage, "", "validate takes one directory, got 2 arguments"},
		{[]string{"policy", "test", examplesDir, "--format", "json"}, exitOK, `"passed": 8`, ""},
		{[]string{"policy", "test", examplesDir, "--run", "--"}, exitOK, `no tests match --run "--"`, ""},
		{[]string{"ledger", "show", "1", "--format", "xml", "--repo", "r"}, exitUsage, "", "use text or json"},
		{[]string{"ledger", "show", "1", "2", "--repo", "r"}, exitUsage, "", "one SEQ or RUN_ID, got 2 arguments"},
		{[]string{"ledger", "log", "extra", "--repo", "r"}, exitUsage, "", `ledger log takes no arguments, got ["extra"]`},
		{[]string{"ledger", "verify", "extra", "--repo", "r"}, exitUsage, "", `ledger verify takes no arguments, got ["extra"]`},
		{[]string{"ledger", "checkpoint", "--repo", "r", "extra"}, exitUsage, "", `ledger checkpoint takes no arguments`},
		{[]string{"ledger", "export", "--repo", "r", "extra"}, exitUsage, "", `ledger export takes no arguments`},
		{[]string{"once", "extra", "--repo", "r", "--key", key}, exitUsage, "", `once takes no arguments, got ["extra"]`},
		{[]string{"plan", "extra", "--repo", "r"}, exitUsage, "", `plan takes no arguments, got ["extra"]`},
		{[]string{"demo", "extra"}, exitUsage, "", `demo takes no arguments`},
		{[]string{"keygen", "--out", filepath.Join(t.TempDir(), "k"), "extra"}, exitUsage, "", `keygen takes no arguments, got ["extra"]`},
		{[]string{"version", "extra"}, exitUsage, "", `version takes no arguments`},
		{[]string{"replay", "000000000000", "--bogus"}, exitUsage, "", "flag provided but not defined: -bogus"},
		{[]string{"validate", examplesDir, "-h"}, exitOK, "", "Usage: reconciler validate"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errs := cli(t, tt.args...)
			if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errs, tt.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q and %q", code, out, errs, tt.code, tt.out, tt.err)
			}
		})
	}
}

// Usage errors exit 2 with what is expected, whichever check finds them.
func TestUsageErrors(t *testing.T) {
	key := filepath.Join(t.TempDir(), "ledger.key")
	if _, err := signing.GenerateKey(key); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		err  string
	}{
		{[]string{"once", "--repo", "r", "--key", key, "--identity", "nobody"}, `--identity "nobody": want the form "Name <email>"`},
		{[]string{"once", "--repo", "r", "--key", key, "--identity", "<a@b.c>"}, `want the form "Name <email>"`},
		{[]string{"once", "--repo", "r", "--key", key, "--log-format", "xml"}, "--log-format"},
		{[]string{"once", "--repo", "r", "--key", key, "--concurrency", "0"}, "--concurrency 0"},
		{[]string{"once", "--key", key}, "--repo is required"},
		{[]string{"once", "--repo", "r", "--key", ""}, "--key is required"},
		{[]string{"plan"}, "--repo is required"},
		{[]string{"plan", "--repo", "r", "--change-from", "x"}, "needs --agent"},
		{[]string{"replay", "--repo", "r"}, "one RUN_ID, got 0 arguments"},
		{[]string{"keygen"}, "--out is required"},
		{[]string{"version", "--format", "yaml"}, "use text or json"},
		{[]string{"healthcheck", "--addr", "127.0.0.1:1"}, "want a URL"},
		{[]string{"ledger", "nope"}, `unknown ledger command "nope"`},
		{[]string{"policy", "test", "--nope"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, errs := cli(t, tt.args...)
			if code != exitUsage || !strings.Contains(errs, tt.err) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errs, exitUsage, tt.err)
			}
		})
	}
}

// validate and policy test fail on a directory that holds no spec, saying
// what they expected, instead of passing an empty spec.
func TestNoSpecDirectory(t *testing.T) {
	empty := t.TempDir()
	notes := t.TempDir()
	os.WriteFile(filepath.Join(notes, "README.md"), []byte("not a spec\n"), 0o644)
	onlyReviewers := t.TempDir()
	os.WriteFile(filepath.Join(onlyReviewers, "reviewers.hcl"), []byte("group \"sre\" {\n  member \"rita\" { email = \"rita@example.com\" }\n}\n"), 0o644)
	const want = "holds no desired-state spec: expected agents/, policies/, providers.hcl or reviewers.hcl in it"
	for _, cmd := range [][]string{{"validate"}, {"policy", "test"}} {
		for _, dir := range []string{empty, notes} {
			for _, format := range []string{"text", "json"} {
				args := append(slices.Clone(cmd), dir, "--format", format)
				t.Run(strings.Join(args, " "), func(t *testing.T) {
					code, out, errs := cli(t, args...)
					if code != exitFail || !strings.Contains(errs, want) || !strings.Contains(errs, dir) {
						t.Errorf("exit %d, stdout %q, stderr %q; want 1 and %q", code, out, errs, want)
					}
				})
			}
		}
		args := append(slices.Clone(cmd), onlyReviewers)
		t.Run("a spec of reviewers only: "+strings.Join(args, " "), func(t *testing.T) {
			if code, out, errs := cli(t, args...); code != exitOK {
				t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
			}
		})
	}
	// The current directory is the default.
	t.Chdir(empty)
	if code, _, errs := cli(t, "validate"); code != exitFail || !strings.Contains(errs, `"." holds no desired-state spec`) {
		t.Errorf("validate in an empty directory: exit %d, %s", code, errs)
	}
}

// plan exits 1 when the spec on the branch does not load, after printing
// its diagnostics with file:line:col, also when it plans on the last good
// spec.
func TestPlanInvalidSpec(t *testing.T) {
	bare := gittest.NewBare(t, examplesDir)
	if code, out, errs := cli(t, "plan", "--repo", bare); code != exitOK || !strings.Contains(out, "RUN  image-pinner") {
		t.Fatalf("plan of a valid spec: exit %d, %s %s", code, out, errs)
	}
	// One pass records the good spec.
	signer, err := signing.GenerateKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := reconcile.New(context.Background(), reconcile.Config{Repo: bare, Signer: signer,
		Identity: object.Signature{Name: "R", Email: "r@example.com"}, Runners: runners(sandbox.Config{Mode: sandbox.Permissive})})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.Close()

	work := gittest.Clone(t, bare)
	os.WriteFile(filepath.Join(work, "agents", "broken.hcl"), []byte("agent \"broken\" {\n  provider = provider.exec.nope\n}\n"), 0o644)
	gittest.Git(t, work, "add", "-A")
	gittest.Git(t, work, "commit", "-q", "-m", "break the spec")
	gittest.Git(t, work, "push", "-q", "origin", "main")

	code, out, errs := cli(t, "plan", "--repo", bare)
	if code != exitFail || !regexp.MustCompile(`(?m)^spec error: agents/broken\.hcl:\d+:\d+: `).MatchString(out) ||
		!strings.Contains(out, "image-pinner") || !strings.Contains(errs, "does not load") || !strings.Contains(errs, "planned on the last good spec") {
		t.Errorf("plan of a broken spec after a good one: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, _ = cli(t, "plan", "--repo", bare, "--format", "json")
	var plan reconcile.Plan
	if err := json.Unmarshal([]byte(out), &plan); err != nil || code != exitFail || len(plan.Diagnostics) == 0 {
		t.Errorf("plan --format json: exit %d, %v, %s", code, err, out)
	}

	// A spec that never loaded: nothing would run.
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "agents"), 0o755)
	os.WriteFile(filepath.Join(src, "agents", "a.hcl"), []byte("agent \"a\" {\n"), 0o644)
	code, out, errs = cli(t, "plan", "--repo", gittest.NewBare(t, src))
	if code != exitFail || !regexp.MustCompile(`(?m)^spec error: agents/a\.hcl:\d+:\d+: `).MatchString(out) || !strings.Contains(errs, "no spec ever did") {
		t.Errorf("plan of a spec that never loaded: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, errs := cli(t, args...)
		if code != exitOK || !strings.HasPrefix(out, "reconciler ") || !strings.Contains(out, "  go        "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
	code, out, _ := cli(t, "version", "--format", "json")
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != exitOK || v.Version == "" || v.Go != runtime.Version() || v.Module != "github.com/agentgitops/reconciler" {
		t.Errorf("version --format json: exit %d, %v, %+v", code, err, v)
	}
	old := version
	t.Cleanup(func() { version = old })
	version = "v1.2.3-test"
	if _, out, _ := cli(t, "version"); !strings.HasPrefix(out, "reconciler v1.2.3-test\n") {
		t.Errorf("stamped version: %q", out)
	}
}

// make build stamps the version with git describe, and the binary reports
// the revision it was built from.
func TestVersionStamped(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	for _, tool := range []string{"git", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-C", root}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Skipf("git %s: %v (not a git checkout?)", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	head := git("rev-parse", "HEAD")
	bin := filepath.Join(t.TempDir(), "reconciler")
	cmd := exec.Command("make", "-C", root, "build", "BIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	// Described after the build, as make did: the tree may change meanwhile
	// only through other work in the same checkout.
	describe := git("describe", "--always", "--dirty")
	out, err := exec.Command(bin, "version", "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v versionInfo
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.TrimSuffix(v.Version, "-dirty") != strings.TrimSuffix(describe, "-dirty") || v.Revision != head || v.Modified == nil || v.Time == "" {
		t.Errorf("version %+v; want version %q and revision %s", v, describe, head)
	}
}

// healthcheck exits 0 when the daemon answers 200 and 1 otherwise; with no
// --addr it asks the daemon's default address, on loopback when that
// listens on every interface, as the image's does.
func TestHealthcheck(t *testing.T) {
	ready := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz":
			io.WriteString(w, "ok\n")
		case r.URL.Path == "/readyz" && ready:
			io.WriteString(w, "ok\n")
		case r.URL.Path == "/readyz":
			http.Error(w, "not ready: no successful pass yet", http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	if code, out, errs := cli(t, "healthcheck", "--addr", srv.URL); code != exitOK || out != srv.URL+"/healthz: ok\n" {
		t.Errorf("healthcheck: exit %d, %q %q", code, out, errs)
	}
	if code, _, errs := cli(t, "healthcheck", "--addr", srv.URL, "--ready"); code != exitFail || !strings.Contains(errs, "503 Service Unavailable: not ready") {
		t.Errorf("healthcheck --ready of an unready daemon: exit %d, %q", code, errs)
	}
	ready = true
	if code, _, errs := cli(t, "healthcheck", "--ready", "--addr", srv.URL); code != exitOK {
		t.Errorf("healthcheck --ready: exit %d, %q", code, errs)
	}
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	t.Setenv("RECONCILER_LISTEN", ":"+port)
	if code, out, errs := cli(t, "healthcheck"); code != exitOK || out != "http://127.0.0.1:"+port+"/healthz: ok\n" {
		t.Errorf("healthcheck from $RECONCILER_LISTEN: exit %d, %q %q", code, out, errs)
	}
	srv.Close()
	if code, _, errs := cli(t, "healthcheck", "--timeout", "2s"); code != exitFail || !strings.Contains(errs, "connection refused") {
		t.Errorf("healthcheck of a stopped daemon: exit %d, %q", code, errs)
	}
}

func TestDefaultListen(t *testing.T) {
	t.Setenv("RECONCILER_LISTEN", "")
	if got := defaultListen(); got != "127.0.0.1:8080" {
		t.Errorf("default outside a container = %q, want loopback", got)
	}
	t.Setenv("RECONCILER_LISTEN", ":8080")
	if got := defaultListen(); got != ":8080" {
		t.Errorf("with $RECONCILER_LISTEN = %q", got)
	}
	for addr, want := range map[string]string{
		":8080":          "http://127.0.0.1:8080",
		"0.0.0.0:9090":   "http://127.0.0.1:9090",
		"[::]:8080":      "http://127.0.0.1:8080",
		"127.0.0.1:8080": "http://127.0.0.1:8080",
		"10.1.2.3:80":    "http://10.1.2.3:80",
		"[::1]:8080":     "http://[::1]:8080",
	} {
		if got := listenURL(addr); got != want {
			t.Errorf("listenURL(%q) = %q, want %q", addr, got, want)
		}
	}
}

// keygen refuses a missing folder instead of creating it, and extra
// arguments; a key file others can read gets ssh's warning from every
// command that loads it, and a 0600 one none.
func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no", "such", "folder", "ledger.key")
	if code, _, errs := cli(t, "keygen", "--out", missing); code != exitFail || !strings.Contains(errs, `the folder "`+filepath.Dir(missing)+`" of --out does not exist`) {
		t.Errorf("keygen into a missing folder: exit %d, %q", code, errs)
	}
	if _, err := os.Stat(filepath.Dir(missing)); err == nil {
		t.Error("keygen created the missing folder")
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if code, _, errs := cli(t, "keygen", "--out", filepath.Join(file, "k")); code != exitFail || !strings.Contains(errs, "is not a folder") {
		t.Errorf("keygen under a file: exit %d, %q", code, errs)
	}
	key := filepath.Join(dir, "ledger.key")
	if code, out, errs := cli(t, "keygen", "--out", key); code != exitOK || !strings.Contains(out, "wrote "+key) {
		t.Fatalf("keygen: exit %d, %q %q", code, out, errs)
	}
	if code, _, errs := cli(t, "keygen", "--out", key); code != exitFail || !strings.Contains(errs, key) {
		t.Errorf("keygen over an existing key: exit %d, %q", code, errs)
	}
	const warning = "WARNING: UNPROTECTED PRIVATE KEY FILE"
	// The repository does not exist: the command fails after loading the key.
	noRepo := filepath.Join(dir, "no-repo")
	cpKey := filepath.Join(dir, "checkpoint.key")
	commands := [][]string{
		{"once", "--repo", noRepo, "--key", key, "--cache-dir", ""},
		{"ledger", "checkpoint", "--repo", noRepo, "--checkpoint-key", cpKey},
		{"ledger", "verify", "--repo", noRepo, "--checkpoint", filepath.Join(dir, "cp"), "--checkpoint-key", cpKey},
	}
	// ledger checkpoint creates its note key (0600) when missing.
	if code, _, errs := cli(t, commands[1]...); code != exitFail || strings.Contains(errs, warning) {
		t.Fatalf("ledger checkpoint creating its key: exit %d, %q", code, errs)
	}
	for _, mode := range []os.FileMode{0o600, 0o400, 0o640, 0o644, 0o604} {
		for _, k := range []string{key, cpKey} {
			if err := os.Chmod(k, mode); err != nil {
				t.Fatal(err)
			}
		}
		for _, args := range commands {
			code, _, errs := cli(t, args...)
			warned := strings.Contains(errs, warning)
			if code != exitFail || warned != (mode&0o077 != 0) {
				t.Errorf("%q with a key of mode %04o: exit %d, stderr %q", args, mode, code, errs)
			}
			if warned && !strings.Contains(errs, "chmod 600") {
				t.Errorf("the warning says no fix: %q", errs)
			}
		}
	}
}

// ciCommand is a reconciler command line found in a CI definition.
type ciCommand struct {
	where string
	args  []string
}

// TestCIExamples checks examples/ci: both definitions parse as YAML, check
// pull and merge requests with validate and policy test, run once on a
// schedule, and every reconciler command line in them names a command whose
// flags exist (each is run with -h appended: an unknown flag exits 2 before
// the help). The steps that write the signing key produce a 0600 file with
// the key in it.
func TestCIExamples(t *testing.T) {
	github := readYAML(t, "../../examples/ci/github/reconciler.yml")
	gitlab := readYAML(t, "../../examples/ci/.gitlab-ci.yml")

	on, _ := github["on"].(map[string]any)
	for _, ev := range []string{"pull_request", "schedule"} {
		if _, ok := on[ev]; !ok {
			t.Errorf("the GitHub workflow does not run on %s: on = %v", ev, github["on"])
		}
	}
	jobs, _ := github["jobs"].(map[string]any)
	ghCommands := map[string][]ciCommand{}
	ghSteps := map[string][]map[string]any{}
	for name, j := range jobs {
		job, _ := j.(map[string]any)
		steps, _ := job["steps"].([]any)
		for _, s := range steps {
			step, _ := s.(map[string]any)
			ghSteps[name] = append(ghSteps[name], step)
			if script, ok := step["run"].(string); ok {
				ghCommands[name] = append(ghCommands[name], reconcilerLines(t, "github "+name, script)...)
			}
		}
		if cond, _ := job["if"].(string); cond == "" {
			t.Errorf("GitHub job %s has no if: it would run on every event", name)
		}
	}
	checkJob(t, "GitHub check", ghCommands["check"], [][]string{{"validate"}, {"policy", "test"}})
	checkJob(t, "GitHub reconcile", ghCommands["reconcile"], [][]string{{"once"}})
	if cond, _ := jobs["check"].(map[string]any)["if"].(string); !strings.Contains(cond, "pull_request") {
		t.Errorf("GitHub check job if = %q", cond)
	}
	if cond, _ := jobs["reconcile"].(map[string]any)["if"].(string); !strings.Contains(cond, "schedule") || strings.Contains(cond, "pull_request") {
		t.Errorf("GitHub reconcile job if = %q: it must run on the schedule and never for a pull request", cond)
	}

	glCommands := map[string][]ciCommand{}
	for name, j := range gitlab {
		job, ok := j.(map[string]any)
		if !ok || name == "default" || name == "variables" {
			continue
		}
		for _, key := range []string{"before_script", "script"} {
			lines, _ := job[key].([]any)
			for _, l := range lines {
				s, _ := l.(string)
				glCommands[name] = append(glCommands[name], reconcilerLines(t, "gitlab "+name, s)...)
			}
		}
	}
	checkJob(t, "GitLab check", glCommands["check"], [][]string{{"validate"}, {"policy", "test"}})
	checkJob(t, "GitLab reconcile", glCommands["reconcile"], [][]string{{"once"}})
	if rules := fmt.Sprint(gitlab["check"].(map[string]any)["rules"]); !strings.Contains(rules, `$CI_PIPELINE_SOURCE == "merge_request_event"`) {
		t.Errorf("GitLab check rules = %s", rules)
	}
	if rules := fmt.Sprint(gitlab["reconcile"].(map[string]any)["rules"]); !strings.Contains(rules, `$CI_PIPELINE_SOURCE == "schedule"`) || strings.Contains(rules, "merge_request") {
		t.Errorf("GitLab reconcile rules = %s", rules)
	}

	for _, cmds := range []map[string][]ciCommand{ghCommands, glCommands} {
		for _, list := range cmds {
			for _, c := range list {
				args := append(slices.Clone(c.args[1:]), "-h")
				code, _, errs := cli(t, args...)
				if code != exitOK || !strings.Contains(errs, "Usage: reconciler "+args[0]) {
					t.Errorf("%s: %q: exit %d, %s", c.where, c.args, code, errs)
				}
			}
		}
	}
	for _, c := range append(ghCommands["reconcile"], glCommands["reconcile"]...) {
		if !slices.Contains(c.args, "--cache-dir") || !slices.Contains(c.args, "--key") || !slices.Contains(c.args, "--identity") {
			t.Errorf("%s: %q: once needs --key, --identity and --cache-dir", c.where, c.args)
		}
	}

	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	pem := "-----BEGIN PRIVATE KEY-----\nTUlJQ0FOIFRISVMgQkUgQSBLRVk=\n-----END PRIVATE KEY-----"
	// GitHub: the step that writes the key, as the runner runs it (bash -e).
	var write string
	for _, step := range ghSteps["reconcile"] {
		if step["name"] == "Write the signing key" {
			write, _ = step["run"].(string)
		}
	}
	if write == "" {
		t.Fatal("the GitHub reconcile job has no step \"Write the signing key\"")
	}
	tmp := t.TempDir()
	runShell(t, write, "RUNNER_TEMP="+tmp, "RECONCILER_SIGNING_KEY="+pem)
	checkKeyFile(t, filepath.Join(tmp, "ledger.key"), pem+"\n")
	// GitLab: the reconcile job's script up to the reconciler line.
	var script []string
	for _, l := range gitlab["reconcile"].(map[string]any)["script"].([]any) {
		s := l.(string)
		if strings.HasPrefix(strings.TrimSpace(s), "reconciler ") {
			break
		}
		script = append(script, s)
	}
	keyFile := filepath.Join(tmp, "gitlab-key")
	runShell(t, strings.Join(script, "\n")+"\nmv \"$KEY_FILE\" "+keyFile+"\n",
		"TMPDIR="+tmp, "RECONCILER_SIGNING_KEY_B64="+base64.StdEncoding.EncodeToString([]byte(pem)))
	checkKeyFile(t, keyFile, pem)
	// Without the secret, the job says what is missing.
	cmd := exec.Command("bash", "-e", "-c", strings.Join(script, "\n"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "TMPDIR=" + tmp}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "RECONCILER_SIGNING_KEY_B64 is not set") {
		t.Errorf("the GitLab script without its key variable: %v, %s", err, out)
	}
}

func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

// reconcilerLines returns the reconciler command lines of a shell script,
// backslash continuations joined, split into words as the shell would
// (quotes removed; variables left as they are).
func reconcilerLines(t *testing.T, where, script string) []ciCommand {
	t.Helper()
	var out []ciCommand
	for _, line := range strings.Split(strings.ReplaceAll(script, "\\\n", " "), "\n") {
		words, err := shellWords(line)
		if err != nil {
			t.Errorf("%s: %q: %v", where, line, err)
			continue
		}
		if len(words) > 0 && words[0] == "reconciler" {
			out = append(out, ciCommand{where: where, args: words})
		}
	}
	return out
}

// shellWords splits a command line into words with sh's quoting rules for
// '...', "..." and backslashes; enough for the lines of a CI definition.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated '")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("$`\"\\", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated \"")
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			return words, nil
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// checkJob checks that a job's reconciler commands include each of want
// (a command and its subcommand words).
func checkJob(t *testing.T, job string, cmds []ciCommand, want [][]string) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, c := range cmds {
			if len(c.args) > len(w) && slices.Equal(c.args[1:1+len(w)], w) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s job runs no 'reconciler %s': %v", job, strings.Join(w, " "), cmds)
		}
	}
}

func runShell(t *testing.T, script string, env ...string) {
	t.Helper()
	cmd := exec.Command("bash", "-e", "-c", script)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s\n%s", err, out, script)
	}
}

func checkKeyFile(t *testing.T, path, want string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %04o, want 0600", path, fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(path); string(b) != want {
		t.Errorf("%s holds %q, want %q", path, b, want)
	}
}

// dockerInstr is one instruction of a Dockerfile, continuations joined.
type dockerInstr struct{ cmd, args string }

func readDockerfile(t *testing.T, path string) []dockerInstr {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []dockerInstr
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		cur += trimmed
		cmd, args, _ := strings.Cut(cur, " ")
		out = append(out, dockerInstr{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// TestDockerfile checks the image's logic without a Docker daemon (none
// runs here, and no base image could be pulled): the final stage exposes
// the port RECONCILER_LISTEN names, runs as a non-root user, and its
// HEALTHCHECK runs this binary's healthcheck, which, with the image's
// environment, asks that port on loopback; and .dockerignore leaves out
// what must not go into the build context but nothing the build needs.
func TestDockerfile(t *testing.T) {
	instrs := readDockerfile(t, "../../Dockerfile")
	last := 0
	for i, in := range instrs {
		if in.cmd == "FROM" {
			last = i
		}
	}
	final := instrs[last:]
	var expose, user, listen, binary, helper string
	var health, entry []string
	for _, in := range final {
		switch in.cmd {
		case "EXPOSE":
			expose = in.args
		case "USER":
			user = in.args
		case "ENV":
			for _, kv := range strings.Fields(in.args) {
				if v, ok := strings.CutPrefix(kv, "RECONCILER_LISTEN="); ok {
					listen = v
				}
			}
		case "COPY":
			// COPY [--from=...] SRC... DEST: DEST/ takes each source's name.
			f := slices.DeleteFunc(strings.Fields(in.args), func(a string) bool { return strings.HasPrefix(a, "--") })
			dest := f[len(f)-1]
			for _, src := range f[:len(f)-1] {
				to := dest
				if strings.HasSuffix(dest, "/") {
					to = dest + path.Base(src)
				}
				switch path.Base(src) {
				case "reconciler":
					binary = to
				case sandbox.HelperName:
					helper = to
				}
			}
		case "HEALTHCHECK":
			_, exe, ok := strings.Cut(in.args, "CMD ")
			if !ok || json.Unmarshal([]byte(exe), &health) != nil {
				t.Fatalf("HEALTHCHECK %s: want the exec form CMD [\"...\"]", in.args)
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &entry); err != nil {
				t.Fatalf("ENTRYPOINT %s: %v", in.args, err)
			}
		}
	}
	if expose != "8080" || listen != ":8080" {
		t.Errorf("EXPOSE %q, RECONCILER_LISTEN %q: want 8080 and :8080", expose, listen)
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Errorf("USER %q: want a non-root user", user)
	}
	// The sandbox's helper is where the reconciler looks for it.
	if binary == "" || helper != path.Join(path.Dir(binary), sandbox.HelperName) {
		t.Errorf("the image installs reconciler at %q and %s at %q: want it next to the reconciler", binary, sandbox.HelperName, helper)
	}
	if len(health) < 2 || health[0] != binary || len(entry) == 0 || entry[0] != binary || health[1] != "healthcheck" {
		t.Fatalf("HEALTHCHECK %q, ENTRYPOINT %q, binary %q: want the binary's healthcheck", health, entry, binary)
	}
	// The healthcheck with the image's environment asks loopback at the
	// exposed port; probe a server there when the port is free here.
	t.Setenv("RECONCILER_LISTEN", listen)
	if got := listenURL(defaultListen()); got != "http://127.0.0.1:"+expose {
		t.Errorf("the healthcheck in the image asks %s", got)
	}
	if ln, err := net.Listen("tcp", "127.0.0.1:"+expose); err != nil {
		t.Logf("port %s is taken here (%v): not probing it", expose, err)
	} else {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				io.WriteString(w, "ok\n")
				return
			}
			http.NotFound(w, r)
		})}
		go srv.Serve(ln)
		defer srv.Close()
		if code, out, errs := cli(t, health[1:]...); code != exitOK {
			t.Errorf("%q: exit %d, %s %s", health, code, out, errs)
		}
	}

	b, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	for _, p := range []string{".git/HEAD", "bin/reconciler", "reconciler", "ledgergen.test", "reconcile.test", "cmd/reconciler/reconciler.test", "cpu.prof", ".cache/go-build/x", "ledger.key"} {
		if !dockerIgnored(patterns, p) {
			t.Errorf(".dockerignore keeps %s in the build context", p)
		}
	}
	// Nothing the build reads: go.mod, go.sum and every tracked file but
	// the CI script and the Docker files themselves (the embedded example
	// included).
	tracked, err := exec.Command("git", "-C", "../..", "ls-files").Output()
	if err != nil {
		t.Skipf("git ls-files: %v", err)
	}
	for _, p := range strings.Fields(string(tracked)) {
		if strings.HasPrefix(p, ".ci/") || p == "Dockerfile" || p == ".dockerignore" {
			continue
		}
		if dockerIgnored(patterns, p) {
			t.Errorf(".dockerignore leaves out %s, which the build context needs", p)
		}
	}
}

// dockerIgnored reports whether patterns (.dockerignore's syntax: paths
// relative to the context root, a leading "/" ignored, "**" any number of
// directories, a directory excluding what is under it, "!" re-including)
// exclude path.
func dockerIgnored(patterns []string, path string) bool {
	ignored := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.Trim(strings.TrimPrefix(p, "!"), "/")
		if dockerMatch(p, path) {
			ignored = !neg
		}
	}
	return ignored
}

func dockerMatch(pattern, path string) bool {
	// path or any directory above it.
	for p := path; p != "." && p != ""; p = filepath.Dir(p) {
		if globMatch(strings.Split(pattern, "/"), strings.Split(p, "/")) {
			return true
		}
	}
	return false
}

func globMatch(pat, parts []string) bool {
	if len(pat) == 0 {
		return len(parts) == 0
	}
	if pat[0] == "**" {
		for i := 0; i <= len(parts); i++ {
			if globMatch(pat[1:], parts[i:]) {
				return true
			}
		}
		return false
	}
	if len(parts) == 0 {
		return false
	}
	ok, _ := filepath.Match(pat[0], parts[0])
	return ok && globMatch(pat[1:], parts[1:])
}

// TestREADMECommands checks the README's command list against the CLI:
// every command there exists, and every flag a line names is one of that
// command's flags.
func TestREADMECommands(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "## Commands\n\n```\n")
	if start < 0 {
		t.Fatal("README has no Commands block")
	}
	block := readme[start+len("## Commands\n\n```\n"):]
	block = block[:strings.Index(block, "```")]
	flagRE := regexp.MustCompile(`(?:^|[\s\[|])(-{1,2}[a-z][a-z-]*)`)
	word := regexp.MustCompile(`^[a-z]+$`)
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		line, _, _ = strings.Cut(line, "also:")
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "reconciler" {
			t.Errorf("README command line %q", line)
			continue
		}
		var cmd []string
		for _, w := range f[1:] {
			if !word.MatchString(w) {
				break
			}
			cmd = append(cmd, w)
		}
		code, _, help := cli(t, append(slices.Clone(cmd), "-h")...)
		if code != exitOK || !strings.Contains(help, "Usage: reconciler "+strings.Join(cmd, " ")) {
			t.Errorf("README: %q: 'reconciler %s -h' exits %d: %s", line, strings.Join(cmd, " "), code, help)
			continue
		}
		for _, m := range flagRE.FindAllStringSubmatch(line, -1) {
			name := strings.TrimLeft(m[1], "-")
			if !regexp.MustCompile(`\n\s+-` + regexp.QuoteMeta(name) + `[\s\n]`).MatchString(help) {
				t.Errorf("README: %q: %s has no flag -%s", line, strings.Join(cmd, " "), name)
			}
		}
		n++
	}
	if n < 15 {
		t.Errorf("only %d command lines in the README", n)
	}
	for _, c := range commands() {
		if !strings.Contains(block, "reconciler "+c.name) {
			t.Errorf("README's command list lacks %q", c.name)
		}
	}
}
