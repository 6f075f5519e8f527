// Package giteatest runs a real Gitea server on 127.0.0.1 for tests: the
// Gitea binary .ci/gitea builds from Gitea's Go module (cached outside the
// clone, keyed by version), started in a temporary directory with its own
// SQLite database, and stopped when the test ends.
//
// Start skips the test when the binary is absent (it fails instead when CI
// is set to true: CI builds it), so that `go test ./...` on a machine
// without the cache still passes with a clear message. The first Start of a
// binary prepares a template (migrated database, users and their tokens)
// next to the binary; every later Start copies it and starts the web server
// alone, which takes well under two seconds.
//
// Helpers fail the test (t.Fatal) on error, so call them from the test's
// goroutine only. Tokens are secrets of throw-away servers: they may appear
// in test failures, never in anything a test writes elsewhere.
package giteatest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the Gitea version .ci/gitea builds and the tests run.
const Version = "1.26.0"

// templateVersion names the layout of the prepared template: bump it when
// the users, their scopes or the app.ini the template is made with change.
const templateVersion = "t1"

// Logins of the users every server has.
const (
	AdminLogin    = "gitea-admin"
	BotLogin      = "reconciler-bot"
	RitaLogin     = "rita"
	SamLogin      = "sam"
	OutsiderLogin = "outsider"
)

// User is a Gitea account of the test server, with a password (for basic
// auth) and an API token with every repository, issue and user scope.
type User struct {
	Login, Password, Email, Token string
}

// Server is a running Gitea.
type Server struct {
	// URL is the server's root, http://127.0.0.1:PORT, without a trailing
	// slash; the API is at URL + "/api/v1".
	URL string
	// Dir is the server's work path: app.ini, gitea.db, repos/, log/.
	Dir string
	// Admin is the site administrator; Bot the reconciler's account;
	// Rita and Sam reviewers; Outsider a user no reviewers.hcl names.
	Admin, Bot, Rita, Sam, Outsider User

	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
	http *http.Client
}

// Binary returns the Gitea binary to run and the options/ directory (its
// locales) it needs: $RECONCILER_GITEA (options/ beside it), or the one
// .ci/gitea built in ${XDG_CACHE_HOME:-$HOME/.cache}/reconciler-ci. The
// error says how to build it when it is absent.
func Binary() (bin, options string, err error) {
	bin = os.Getenv("RECONCILER_GITEA")
	if bin == "" {
		cache := os.Getenv("RECONCILER_GITEA_CACHE")
		if cache == "" {
			base := os.Getenv("XDG_CACHE_HOME")
			if base == "" {
				home, herr := os.UserHomeDir()
				if herr != nil {
					return "", "", fmt.Errorf("find the gitea cache: %w", herr)
				}
				base = filepath.Join(home, ".cache")
			}
			cache = filepath.Join(base, "reconciler-ci")
		}
		bin = filepath.Join(cache, "gitea-"+Version, "gitea")
	}
	fi, err := os.Stat(bin)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", "", fmt.Errorf("no gitea binary at %s: build it with .ci/gitea (about 7 minutes, once), or set RECONCILER_GITEA", bin)
	}
	options = filepath.Join(filepath.Dir(bin), "options")
	if _, err := os.Stat(filepath.Join(options, "locale")); err != nil {
		return "", "", fmt.Errorf("gitea binary %s has no options/locale beside it: rebuild with .ci/gitea", bin)
	}
	return bin, options, nil
}

// Start starts a Gitea with the users of Server on a free port of
// 127.0.0.1 and stops it when the test ends. It skips the test when no
// binary is built, and fails it instead under CI=true.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, options, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("gitea: %v", err)
		}
		t.Skipf("gitea: %v", err)
	}
	tmpl, err := template(bin, options)
	if err != nil {
		t.Fatalf("gitea: prepare template: %v", err)
	}
	dir := t.TempDir()
	if err := copyFile(filepath.Join(tmpl.dir, "gitea.db"), filepath.Join(dir, "gitea.db")); err != nil {
		t.Fatalf("gitea: %v", err)
	}
	s := &Server{Dir: dir, t: t, http: &http.Client{Timeout: 60 * time.Second}}
	s.Admin, s.Bot, s.Rita, s.Sam, s.Outsider = tmpl.users[AdminLogin], tmpl.users[BotLogin], tmpl.users[RitaLogin], tmpl.users[SamLogin], tmpl.users[OutsiderLogin]
	var last error
	for range 3 {
		if last = s.start(bin, options, tmpl.secrets); last == nil {
			t.Cleanup(s.stop)
			return s
		}
		if !errors.Is(last, errPortTaken) {
			break
		}
	}
	t.Fatalf("gitea: %v", last)
	return nil
}

var errPortTaken = errors.New("port taken")

// start writes app.ini for a free port and starts gitea web in s.Dir,
// waiting until its API answers.
func (s *Server) start(bin, options string, sec secrets) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	if err := writeIni(s.Dir, port, sec); err != nil {
		return err
	}
	if err := linkOptions(s.Dir, options); err != nil {
		return err
	}
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd, done, err := run(bin, s.Dir, "web")
	if err != nil {
		return err
	}
	if err := waitReady(s.http, s.URL, done, 60*time.Second); err != nil {
		stopCmd(cmd, done)
		out := tail(filepath.Join(s.Dir, "gitea.out"), 4000)
		if strings.Contains(out, "address already in use") {
			return fmt.Errorf("%w: %d", errPortTaken, port)
		}
		return fmt.Errorf("start gitea web: %w\n%s", err, out)
	}
	s.cmd, s.done = cmd, done
	return nil
}

func (s *Server) stop() {
	stopCmd(s.cmd, s.done)
	if s.t.Failed() {
		s.t.Logf("gitea log (last lines):\n%s", tail(filepath.Join(s.Dir, "gitea.out"), 3000))
	}
}

// secrets are the keys of the template's app.ini, which its database was
// made with.
type secrets struct {
	SecretKey     string `json:"secret_key"`
	InternalToken string `json:"internal_token"`
}

type prepared struct {
	dir     string
	users   map[string]User
	secrets secrets
}

var (
	tmplMu   sync.Mutex
	tmplDone = map[string]*prepared{}
)

// template returns the prepared template of bin: a migrated database with
// the users and their tokens. It is kept next to the binary (or in the
// temporary directory when that is not writable), keyed by the binary's
// size and time and templateVersion, and made once: by the first process
// to need it, in a directory renamed into place.
func template(bin, options string) (*prepared, error) {
	tmplMu.Lock()
	defer tmplMu.Unlock()
	fi, err := os.Stat(bin)
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("template-%s-%d-%d", templateVersion, fi.Size(), fi.ModTime().Unix())
	if p, ok := tmplDone[key]; ok {
		return p, nil
	}
	parent := filepath.Dir(bin)
	if f, err := os.CreateTemp(parent, ".probe-*"); err != nil {
		parent = filepath.Join(os.TempDir(), "giteatest")
		if err := os.MkdirAll(parent, 0o700); err != nil {
			return nil, err
		}
	} else {
		f.Close()
		os.Remove(f.Name())
	}
	final := filepath.Join(parent, key)
	if p, err := loadTemplate(final); err == nil {
		tmplDone[key] = p
		return p, nil
	}
	work, err := os.MkdirTemp(parent, ".tmp-"+key+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := makeTemplate(work, bin, options); err != nil {
		return nil, err
	}
	// Only what Start copies: the server's own files stay behind.
	keep := filepath.Join(work, "keep")
	if err := os.Mkdir(keep, 0o700); err != nil {
		return nil, err
	}
	for _, f := range []string{"gitea.db", "template.json"} {
		if err := os.Rename(filepath.Join(work, f), filepath.Join(keep, f)); err != nil {
			return nil, err
		}
	}
	if err := os.Rename(keep, final); err != nil {
		// Another process made it first: use theirs.
		if _, lerr := loadTemplate(final); lerr != nil {
			return nil, fmt.Errorf("install template %s: %w", final, err)
		}
	}
	p, err := loadTemplate(final)
	if err != nil {
		return nil, err
	}
	tmplDone[key] = p
	return p, nil
}

type templateFile struct {
	Secrets secrets         `json:"secrets"`
	Users   map[string]User `json:"users"`
}

func loadTemplate(dir string) (*prepared, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "template.json"))
	if err != nil {
		return nil, err
	}
	var tf templateFile
	if err := json.Unmarshal(raw, &tf); err != nil {
		return nil, fmt.Errorf("template %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "gitea.db")); err != nil {
		return nil, err
	}
	for _, l := range []string{AdminLogin, BotLogin, RitaLogin, SamLogin, OutsiderLogin} {
		if tf.Users[l].Token == "" {
			return nil, fmt.Errorf("template %s: no token for %s", dir, l)
		}
	}
	return &prepared{dir: dir, users: tf.Users, secrets: tf.Secrets}, nil
}

// makeTemplate migrates a database in dir, creates the administrator with
// the CLI, and the other users and every user's token through the API of
// a server started on it, then stops it.
func makeTemplate(dir, bin, options string) error {
	sec := secrets{SecretKey: randomHex(32), InternalToken: randomHex(40)}
	port, err := freePort()
	if err != nil {
		return err
	}
	if err := writeIni(dir, port, sec); err != nil {
		return err
	}
	if err := linkOptions(dir, options); err != nil {
		return err
	}
	if err := runWait(bin, dir, "migrate"); err != nil {
		return err
	}
	admin := User{Login: AdminLogin, Password: randomHex(12), Email: AdminLogin + "@example.test"}
	if err := runWait(bin, dir, "admin", "user", "create", "--admin", "--username", admin.Login,
		"--password", admin.Password, "--email", admin.Email, "--must-change-password=false"); err != nil {
		return err
	}
	cmd, done, err := run(bin, dir, "web")
	if err != nil {
		return err
	}
	defer stopCmd(cmd, done)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Timeout: 60 * time.Second}
	if err := waitReady(client, base, done, 120*time.Second); err != nil {
		return fmt.Errorf("start gitea web: %w\n%s", err, tail(filepath.Join(dir, "gitea.out"), 4000))
	}
	s := &Server{URL: base, http: client}
	users := map[string]User{}
	for _, login := range []string{AdminLogin, BotLogin, RitaLogin, SamLogin, OutsiderLogin} {
		u := admin
		if login != AdminLogin {
			u = User{Login: login, Password: randomHex(12), Email: login + "@example.test"}
			in := map[string]any{"username": u.Login, "email": u.Email, "password": u.Password, "must_change_password": false}
			if _, err := s.do(admin, true, "POST", "/admin/users", in, nil); err != nil {
				return fmt.Errorf("create user %s: %w", login, err)
			}
		}
		tok, err := s.createToken(u, "tests", "all")
		if err != nil {
			return err
		}
		u.Token = tok
		users[login] = u
	}
	raw, err := json.Marshal(templateFile{Secrets: sec, Users: users})
	if err != nil {
		return err
	}
	stopCmd(cmd, done)
	return os.WriteFile(filepath.Join(dir, "template.json"), raw, 0o600)
}

// createToken creates an API token of u with scopes, through the API with
// u's basic auth (as Gitea requires), and returns it.
func (s *Server) createToken(u User, name string, scopes ...string) (string, error) {
	var out struct {
		Sha1 string `json:"sha1"`
	}
	in := map[string]any{"name": name, "scopes": scopes}
	if _, err := s.do(u, true, "POST", "/users/"+url.PathEscape(u.Login)+"/tokens", in, &out); err != nil {
		return "", fmt.Errorf("create token of %s: %w", u.Login, err)
	}
	if out.Sha1 == "" {
		return "", fmt.Errorf("create token of %s: empty token in the answer", u.Login)
	}
	return out.Sha1, nil
}

func writeIni(dir string, port int, sec secrets) error {
	ini := fmt.Sprintf(`APP_NAME = reconciler tests
RUN_MODE = prod
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true
WORK_PATH = %[1]s

[database]
DB_TYPE = sqlite3
PATH = %[1]s/gitea.db

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = %[2]d
ROOT_URL = http://127.0.0.1:%[2]d/
APP_DATA_PATH = %[1]s/data
OFFLINE_MODE = true
DISABLE_SSH = true
START_SSH_SERVER = false
LFS_START_SERVER = false

[security]
INSTALL_LOCK = true
SECRET_KEY = %[3]s
INTERNAL_TOKEN = %[4]s
PASSWORD_HASH_ALGO = pbkdf2$1000$50
MIN_PASSWORD_LENGTH = 8
PASSWORD_COMPLEXITY = off

[oauth2]
ENABLED = false

[repository]
ROOT = %[1]s/repos
DEFAULT_BRANCH = main

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
DEFAULT_KEEP_EMAIL_PRIVATE = false
ENABLE_NOTIFY_MAIL = false

[mailer]
ENABLED = false

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[queue]
TYPE = channel

[cron]
ENABLED = false

[cron.update_checker]
ENABLED = false

[webhook]
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 10

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[log]
MODE = console
LEVEL = Warn
ROOT_PATH = %[1]s/log

[api]
ENABLE_SWAGGER = false
`, dir, port, sec.SecretKey, sec.InternalToken)
	return os.WriteFile(filepath.Join(dir, "app.ini"), []byte(ini), 0o600)
}

// linkOptions makes the module's options/ (locales) Gitea's custom options
// of work path dir: without the bindata tag it reads them from disk.
func linkOptions(dir, options string) error {
	link := filepath.Join(dir, "options")
	if _, err := os.Lstat(link); err == nil {
		return nil
	}
	return os.Symlink(options, link)
}

// run starts gitea with args in work path dir, its output in dir/gitea.out;
// done is closed when it exits.
func run(bin, dir string, args ...string) (*exec.Cmd, chan struct{}, error) {
	out, err := os.OpenFile(filepath.Join(dir, "gitea.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, append([]string{"--config", filepath.Join(dir, "app.ini"), "--work-path", dir}, args...)...)
	cmd.Dir = dir
	cmd.Env = giteaEnv(dir)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, nil, fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		out.Close()
		close(done)
	}()
	return cmd, done, nil
}

// runWait runs gitea with args to the end.
func runWait(bin, dir string, args ...string) error {
	cmd := exec.Command(bin, append([]string{"--config", filepath.Join(dir, "app.ini"), "--work-path", dir}, args...)...)
	cmd.Dir = dir
	cmd.Env = giteaEnv(dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("gitea %s: %w\n%s", strings.Join(args[:min(3, len(args))], " "), err, out)
	}
	return nil
}

// giteaEnv is a small environment: Gitea's git commands read no global
// or system configuration of the machine.
func giteaEnv(dir string) []string {
	env := []string{"HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C", "USER=root"}
	for _, k := range []string{"PATH", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func stopCmd(cmd *exec.Cmd, done chan struct{}) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// waitReady polls the API's version until it answers, the process exits
// or timeout passes.
func waitReady(c *http.Client, base string, done chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get(base + "/api/v1/version")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			return errors.New("gitea exited before answering")
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer from %s within %s", base, timeout)
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// APIError is a non-2xx answer of the API.
type APIError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, strings.TrimSpace(e.Body))
}

// do calls the API at path (below /api/v1) as u, with basic auth when
// basic is set and u's token otherwise, sending in as JSON when not nil
// and decoding the answer into out when not nil. A non-2xx answer is an
// *APIError.
func (s *Server) do(u User, basic bool, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.URL+"/api/v1"+path, body)
	if err != nil {
		return 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case basic:
		req.SetBasicAuth(u.Login, u.Password)
	case u.Token != "":
		req.Header.Set("Authorization", "token "+u.Token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, &APIError{Method: method, Path: path, Status: resp.StatusCode, Body: string(raw)}
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// Do calls the API at path (below /api/v1) as u with u's token; see do.
// It returns the error instead of failing the test.
func (s *Server) Do(u User, method, path string, in, out any) error {
	_, err := s.do(u, false, method, path, in, out)
	return err
}

// API calls the API as Do does and fails the test on error.
func (s *Server) API(u User, method, path string, in, out any) {
	s.t.Helper()
	if err := s.Do(u, method, path, in, out); err != nil {
		s.t.Fatal(err)
	}
}

// CreateUser creates one more user, login, with an API token of every
// scope.
func (s *Server) CreateUser(login string) User {
	s.t.Helper()
	u := User{Login: login, Password: randomHex(12), Email: login + "@example.test"}
	in := map[string]any{"username": u.Login, "email": u.Email, "password": u.Password, "must_change_password": false}
	if _, err := s.do(s.Admin, true, "POST", "/admin/users", in, nil); err != nil {
		s.t.Fatalf("create user %s: %v", login, err)
	}
	tok, err := s.createToken(u, "tests", "all")
	if err != nil {
		s.t.Fatal(err)
	}
	u.Token = tok
	return u
}
