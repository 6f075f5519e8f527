package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/examples"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/signing"
)

// demo people.
const (
	teamName     = "Platform Team"
	teamEmail    = "platform@example.com"
	reviewerName = "Rita Reviewer"
	reviewerMail = "rita@example.com"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", "demo [--dir DIR]", stderr)
	dir := fs.String("dir", "", "where to create the demo repositories (default: a new temporary directory)")
	verbose := fs.Bool("v", false, "log every reconciler step")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	if _, err := exec.LookPath("git"); err != nil {
		return fail(stderr, fmt.Errorf("demo: git is not installed; it is needed for the file transport and the reviewer's merge"))
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "reconciler-demo-")
		if err != nil {
			return fail(stderr, err)
		}
		*dir = d
	}
	if err := runDemo(ctx, *dir, *verbose, stdout, stderr); err != nil {
		return fail(stderr, fmt.Errorf("demo: %w", err))
	}
	return exitOK
}

func runDemo(ctx context.Context, dir string, verbose bool, stdout, stderr io.Writer) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	origin := filepath.Join(dir, "origin.git")
	work := filepath.Join(dir, "work")
	keyFile := filepath.Join(dir, "reconciler.key")
	step := func(format string, args ...any) { fmt.Fprintf(stdout, "\n==> "+format+"\n", args...) }

	step("Creating the desired-state repository %s from examples/repo-layout", origin)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	signer, err := signing.GenerateKey(keyFile)
	if err != nil {
		return err
	}
	if err := copyFS(work, examples.RepoLayout()); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, ".reconciler", "keys", "reconciler.pub"), signer.PublicKeyPEM(), 0o644); err != nil {
		return err
	}
	// Rita signs her merges: her SSH key goes into reviewers.hcl, and the
	// sre group stops accepting unsigned merges. Without ssh-keygen the
	// demo keeps the example's unsigned merges (recorded as unsigned).
	ritaKey, err := reviewerSSHKey(dir, work)
	if err != nil {
		return err
	}
	if ritaKey != "" {
		step("%s's SSH signing key %s is her signing_key in reviewers.hcl; group sre accepts only signed merges", reviewerName, ritaKey+".pub")
	} else {
		step("ssh-keygen is not installed: %s will merge unsigned (group sre has accept_unsigned = true)", reviewerName)
	}
	team := gitEnv(teamName, teamEmail)
	for _, args := range [][]string{
		{"init", "-q", "--bare", "-b", "main", origin},
		{"-C", work, "init", "-q", "-b", "main"},
		{"-C", work, "add", "-A"},
		{"-C", work, "commit", "-q", "-m", "Add payments platform desired state"},
		{"-C", work, "remote", "add", "origin", origin},
		{"-C", work, "push", "-q", "origin", "main"},
	} {
		if _, err := git(team, args...); err != nil {
			return err
		}
	}

	logOut := io.Discard
	if verbose {
		logOut = stderr
	}
	newReconciler := func() (*reconcile.Reconciler, error) {
		return reconcile.New(ctx, reconcile.Config{
			Repo: origin, Branch: "main", Signer: signer,
			Identity: object.Signature{Name: "Reconciler", Email: "reconciler@example.com"},
			Logger:   slog.New(slog.NewTextHandler(logOut, nil)),
			CacheDir: filepath.Join(dir, "cache"),
			// One agent after another, so that the audit trail the demo
			// prints reads run by run.
			Concurrency: 1,
		})
	}

	step("Pass 1: reconciler once (runs the agents, opens proposals)")
	r, err := newReconciler()
	if err != nil {
		return err
	}
	if err := r.Reconcile(ctx); err != nil {
		return err
	}
	branches, err := git(nil, "--git-dir", origin, "for-each-ref", "--format=%(refname:short)", "refs/heads/agents/")
	if err != nil {
		return err
	}
	proposals := strings.Fields(branches)
	if len(proposals) == 0 {
		return fmt.Errorf("pass 1 opened no proposal")
	}
	for _, b := range proposals {
		msg, _ := git(nil, "--git-dir", origin, "log", "-1", "--format=%B", b)
		stat, _ := git(nil, "--git-dir", origin, "diff", "--stat", "main", b)
		fmt.Fprintf(stdout, "\n  %s\n%s\n%s\n", b, indent(msg, "    | "), indent(stat, "    "))
	}

	step("Pass 2: nothing changed, so nothing happens (no new branches, no new entries)")
	before, _ := git(nil, "--git-dir", origin, "rev-parse", ledger.Branch)
	if err := r.Reconcile(ctx); err != nil {
		return err
	}
	after, _ := git(nil, "--git-dir", origin, "rev-parse", ledger.Branch)
	fmt.Fprintf(stdout, "  agent-evidence unchanged: %v\n", before == after)

	how := "merges"
	if ritaKey != "" {
		how = "signs (git merge -S, gpg.format=ssh) and merges"
	}
	step("%s <%s> (group sre) reviews, %s each proposal with git", reviewerName, reviewerMail, how)
	rita := gitEnv(reviewerName, reviewerMail)
	if _, err := git(rita, "-C", work, "fetch", "-q", "origin"); err != nil {
		return err
	}
	for _, b := range proposals {
		merge := []string{"-C", work, "merge", "-q", "--no-ff", "-m", "Merge " + b + "\n\nReviewed-by: " + reviewerName + " <" + reviewerMail + ">", "origin/" + b}
		if ritaKey != "" {
			merge = append([]string{"-C", work, "-c", "gpg.format=ssh", "-c", "user.signingKey=" + ritaKey, "merge", "-S"}, merge[3:]...)
		}
		if _, err := git(rita, merge...); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "  merged %s\n", b)
	}
	if _, err := git(rita, "-C", work, "push", "-q", "origin", "main"); err != nil {
		return err
	}

	step("Pass 3: a restarted reconciler records the approvals and merges")
	if err := r.Close(); err != nil {
		return err
	}
	r, err = newReconciler()
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Reconcile(ctx); err != nil {
		return err
	}

	step("git log --oneline agent-evidence")
	out, err := git(nil, "--git-dir", origin, "log", "--oneline", ledger.Branch)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, out)

	step("reconciler ledger verify --repo %s", origin)
	if code := cmdLedgerVerify(ctx, []string{"--repo", origin}, stdout, stderr); code != exitOK {
		return fmt.Errorf("ledger verify failed")
	}

	fmt.Fprintf(stdout, "\nDone. Look around:\n  git --git-dir %s log --oneline --graph --all\n  git --git-dir %s show %s:ledger/000000000/000000000001.json\n  reconciler ledger log --repo %s\n(The demo repository, its working copy and the key are under %s.)\n",
		origin, origin, ledger.Branch, origin, dir)
	return nil
}

// gitEnv is a hermetic environment for the git CLI acting as a person.
func gitEnv(name, email string) []string {
	return append(os.Environ(),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME="+name, "GIT_AUTHOR_EMAIL="+email,
		"GIT_COMMITTER_NAME="+name, "GIT_COMMITTER_EMAIL="+email)
}

func git(env []string, args ...string) (string, error) {
	if env == nil {
		env = gitEnv("Demo", "demo@example.com")
	}
	cmd := exec.Command("git", args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix)
}

// copyFS copies fsys into dir, keeping executable bits.
func copyFS(dir string, fsys fs.FS) error {
	return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, ".sh") {
			mode = 0o755
		}
		return os.WriteFile(target, b, mode)
	})
}

// reviewerSSHKey makes the demo reviewer's SSH key with ssh-keygen, writes
// its public half into the working copy's reviewers.hcl as her signing_key
// and turns accept_unsigned off for her group. It returns the private key's
// path, or "" when ssh-keygen is not installed.
func reviewerSSHKey(dir, work string) (string, error) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		return "", nil
	}
	key := filepath.Join(dir, "rita_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", reviewerMail, "-f", key).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ssh-keygen: %w: %s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return "", err
	}
	p := filepath.Join(work, "reviewers.hcl")
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	s := strings.Replace(string(b), `member "rita" {`, `member "rita" {
    signing_key = "`+strings.TrimSpace(string(pub))+`"`, 1)
	s = strings.Replace(s, "accept_unsigned = true", "accept_unsigned = false", 1) // the sre group's
	if s == string(b) {
		return "", fmt.Errorf("reviewers.hcl of the example has no member rita")
	}
	return key, os.WriteFile(p, []byte(s), 0o644)
}
