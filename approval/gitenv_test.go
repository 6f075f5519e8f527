package approval

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// gitEnv is a hermetic environment for the git, ssh-keygen and gpg CLIs:
// no global or system git config, HOME and GNUPGHOME in temp dirs.
type gitEnv struct {
	t    testing.TB
	dir  string
	env  []string
	gpgs []string // GNUPGHOMEs whose agents to stop
}

func newGitEnv(t testing.TB) *gitEnv {
	t.Helper()
	for _, tool := range []string{"git", "ssh-keygen", "gpg"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	dir := t.TempDir() // short enough for gpg-agent's socket path
	e := &gitEnv{t: t, dir: dir}
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	e.env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=dependency-bumper",
		"GIT_AUTHOR_EMAIL=agent@reconciler.invalid",
		"GIT_COMMITTER_NAME=dependency-bumper",
		"GIT_COMMITTER_EMAIL=agent@reconciler.invalid",
		"LC_ALL=C",
	}
	t.Cleanup(func() {
		for _, g := range e.gpgs {
			cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
			cmd.Env = append(append([]string{}, e.env...), "GNUPGHOME="+g)
			_ = cmd.Run()
		}
	})
	return e
}

// run runs name in dir with the environment plus extra and returns stdout;
// it fails the test when the command fails.
func (e *gitEnv) run(dir string, extra []string, stdin []byte, name string, args ...string) string {
	e.t.Helper()
	out, stderr, err := e.try(dir, extra, stdin, name, args...)
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr)
	}
	return out
}

// try is run that returns the error instead of failing.
func (e *gitEnv) try(dir string, extra []string, stdin []byte, name string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(append([]string{}, e.env...), extra...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	err = cmd.Run()
	return o.String(), s.String(), err
}

// sshKey is a key made by ssh-keygen.
type sshKey struct {
	path        string // the private key file, for user.signingkey
	pub         string // the public key line
	fingerprint string // as ssh-keygen -lf prints it
}

func (e *gitEnv) sshKey(name, typ string, bits int) sshKey {
	e.t.Helper()
	path := filepath.Join(e.dir, name)
	args := []string{"-q", "-t", typ, "-N", "", "-C", name + "@example.com", "-f", path}
	if bits > 0 {
		args = append(args, "-b", strconv.Itoa(bits))
	}
	e.run(e.dir, nil, nil, "ssh-keygen", args...)
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		e.t.Fatal(err)
	}
	// "256 SHA256:... comment (ED25519)"
	fields := strings.Fields(e.run(e.dir, nil, nil, "ssh-keygen", "-lf", path+".pub"))
	return sshKey{path: path, pub: strings.TrimSpace(string(pub)), fingerprint: fields[1]}
}

// pgpKey is a key made by gpg in its own GNUPGHOME.
type pgpKey struct {
	home        string // GNUPGHOME holding the secret key
	fingerprint string // as gpg --fingerprint prints it, without spaces
	armored     string // gpg --armor --export
}

func (k pgpKey) env() []string { return []string{"GNUPGHOME=" + k.home} }

func (e *gitEnv) pgpKey(name string) pgpKey {
	e.t.Helper()
	return pgpKeyExpiring(e, name, "never")
}

// signSSH returns the git -c options that sign with an SSH key.
func signSSH(k sshKey) []string {
	return []string{"-c", "gpg.format=ssh", "-c", "user.signingkey=" + k.path}
}

// signPGP returns the git -c options that sign with an OpenPGP key (run
// with k.env()).
func signPGP(k pgpKey) []string {
	return []string{"-c", "gpg.format=openpgp", "-c", "user.signingkey=" + k.fingerprint}
}

// repo is a git repository in the environment.
type repo struct {
	e   *gitEnv
	dir string
}

func (e *gitEnv) repo() *repo {
	e.t.Helper()
	dir := filepath.Join(e.dir, "repo")
	e.run(e.dir, nil, nil, "git", "init", "-q", "-b", "main", dir)
	return &repo{e: e, dir: dir}
}

// git runs git in the repository with the -c options in opts first.
func (r *repo) git(extraEnv, opts []string, args ...string) string {
	r.e.t.Helper()
	return strings.TrimSpace(r.e.run(r.dir, extraEnv, nil, "git", append(opts, args...)...))
}

func (r *repo) catFile(typ, rev string) []byte {
	r.e.t.Helper()
	return []byte(r.e.run(r.dir, nil, nil, "git", "cat-file", typ, rev))
}

// write stores raw as a loose object of type typ without git's checks and
// returns its id.
func (r *repo) write(typ string, raw []byte) string {
	r.e.t.Helper()
	return strings.TrimSpace(r.e.run(r.dir, nil, raw, "git", "hash-object", "--literally", "-t", typ, "-w", "--stdin"))
}

// allowedSigners writes a gpg.ssh.allowedSignersFile listing keys.
func (r *repo) allowedSigners(keys ...sshKey) string {
	r.e.t.Helper()
	var b strings.Builder
	for _, k := range keys {
		b.WriteString("reviewer@example.com namespaces=\"git\" " + k.pub + "\n")
	}
	path := filepath.Join(r.e.dir, "allowed_signers")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		r.e.t.Fatal(err)
	}
	return path
}

// gitVerifies reports whether git verify-commit or verify-tag (verb)
// accepts id, with SSH keys from allowedSigners and OpenPGP keys from the
// GNUPGHOME in extraEnv.
func (r *repo) gitVerifies(verb, id, allowedSigners string, extraEnv []string) bool {
	r.e.t.Helper()
	_, _, err := r.e.try(r.dir, extraEnv, nil, "git", "-c", "gpg.ssh.allowedSignersFile="+allowedSigners, verb, id)
	return err == nil
}

// gitPayload is the payload git verifies for a commit or tag (verb
// verify-commit or verify-tag): git prints it with -v, whatever the outcome.
func (r *repo) gitPayload(verb, id string) string {
	r.e.t.Helper()
	out, _, _ := r.e.try(r.dir, nil, nil, "git", "-c", "gpg.ssh.allowedSignersFile=/dev/null", verb, "-v", "--raw", id)
	return out
}
