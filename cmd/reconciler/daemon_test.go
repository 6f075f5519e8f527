package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
)

const daemonSecret = "daemon-test-secret"

// onDemandAgent is an exec agent that runs only when asked.
const onDemandAgent = `agent "on-demand" {
  provider = provider.exec.local
  command  = ["sh", "tools/on-demand.sh"]
  trigger {
    manual = true
  }
  scope {
    paths = ["config/*.env"]
  }
}
`

// daemonRepo is examples/repo-layout with the on-demand agent, as a bare
// repository on a local path.
func daemonRepo(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../../examples/repo-layout")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agents", "on-demand.hcl"), []byte(onDemandAgent), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tools", "on-demand.sh"), []byte("#!/bin/sh\nset -eu\ndate +%s%N >> config/payments-api.env\necho 'Note the time'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return gittest.NewBare(t, dir)
}

// secretFile writes the daemon's secret file, 0600.
func secretFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "webhook-secret")
	if err := os.WriteFile(p, []byte(daemonSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// hookDaemon is `reconciler run` started in process, with the hooks.
type hookDaemon struct {
	t        *testing.T
	base     string
	out, err *syncBuffer
	cancel   context.CancelFunc
	done     chan int
}

func startHookDaemon(t *testing.T, args ...string) *hookDaemon {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "ledger.key")
	d := &hookDaemon{t: t, out: &syncBuffer{}, err: &syncBuffer{}, done: make(chan int, 1)}
	if code := run(context.Background(), []string{"keygen", "--out", key}, d.out, d.err); code != exitOK {
		t.Fatalf("keygen: %s", d.err.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() {
		d.done <- run(ctx, append([]string{"run", "--key", key, "--listen", "127.0.0.1:0", "--cache-dir", filepath.Join(dir, "cache")}, args...), d.out, d.err)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for d.base == "" {
		if m := regexp.MustCompile(`serving on (http://\S+)`).FindStringSubmatch(d.out.String()); m != nil {
			d.base = m[1]
			break
		}
		select {
		case code := <-d.done:
			t.Fatalf("run exited %d before serving: %s", code, d.err.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not start: %s", d.err.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() { d.stop() })
	return d
}

// stop ends the daemon and returns its exit code.
func (d *hookDaemon) stop() int {
	d.cancel()
	select {
	case code := <-d.done:
		d.done <- code
		return code
	case <-time.After(30 * time.Second):
		d.t.Fatal("daemon did not stop after cancellation")
		return -1
	}
}

func (d *hookDaemon) get(path string) (int, string) {
	d.t.Helper()
	resp, err := http.Get(d.base + path)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (d *hookDaemon) post(path string, body []byte, headers ...string) (int, string) {
	d.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, d.base+path, bytes.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitUntil polls cond every 50ms for up to d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// passes reads reconciler_reconcile_duration_seconds_count from /metrics.
func (d *hookDaemon) passes() int {
	d.t.Helper()
	_, m := d.get("/metrics")
	sm := regexp.MustCompile(`(?m)^reconciler_reconcile_duration_seconds_count (\d+)$`).FindStringSubmatch(m)
	if sm == nil {
		d.t.Fatalf("/metrics lacks reconciler_reconcile_duration_seconds_count")
	}
	n, _ := strconv.Atoi(sm[1])
	return n
}

// ledgerEntries reads the ledger of the bare repository.
func ledgerEntries(t *testing.T, bare string) []ledger.Entry {
	t.Helper()
	repo, err := gitstore.Open(context.Background(), bare, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	es, err := ledger.New(repo, ledger.Options{}).Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// started returns the run.started entries of agent with trigger id.
func started(t *testing.T, bare, agent, trigger string) []ledger.Entry {
	var out []ledger.Entry
	for _, e := range ledgerEntries(t, bare) {
		if e.Type == ledger.RunStarted && e.Agent == agent && e.Trigger == trigger {
			out = append(out, e)
		}
	}
	return out
}

// errorLines returns stderr's error-level log lines.
func errorLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out
}

// The daemon goes unready when its remote is moved away, logs the failure
// once at error level however many passes fail, keeps serving /healthz,
// and is ready again when the remote is back.
func TestDaemonRemoteMovedAwayAndBack(t *testing.T) {
	bare := daemonRepo(t)
	d := startHookDaemon(t, "--repo", bare, "--interval", "1s")
	waitUntil(t, 60*time.Second, "/readyz 200", func() bool { c, _ := d.get("/readyz"); return c == http.StatusOK })

	if err := os.Rename(bare, bare+".away"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "/readyz 503", func() bool { c, _ := d.get("/readyz"); return c == http.StatusServiceUnavailable })
	_, body := d.get("/readyz")
	if !strings.Contains(body, "fetch") {
		t.Errorf("/readyz body %q lacks the cause", body)
	}
	from := d.passes()
	waitUntil(t, 30*time.Second, "three more failed passes", func() bool { return d.passes() >= from+3 })
	if c, _ := d.get("/healthz"); c != http.StatusOK {
		t.Errorf("/healthz = %d while the remote is away", c)
	}
	errs := errorLines(d.err.String())
	if len(errs) != 1 || !strings.Contains(errs[0], "err=") || !strings.Contains(errs[0], "fetch") {
		t.Errorf("after %d failed passes, error-level lines = %q; want the failure once, with its cause", d.passes()-from+1, errs)
	}

	if err := os.Rename(bare+".away", bare); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "/readyz 200 again", func() bool { c, _ := d.get("/readyz"); return c == http.StatusOK })
	if !strings.Contains(d.err.String(), "succeeded again") {
		t.Errorf("the recovery was not logged: %s", d.err.String())
	}
	if code := d.stop(); code != exitOK {
		t.Errorf("run exited %d: %s", code, d.err.String())
	}
}

// `reconciler trigger` asks the daemon for a manual run and prints the
// request id; the daemon runs the agent with trigger manual:ID. Refusals
// exit 1 with the daemon's message; usage errors exit 2. An alert for the
// example's incident-responder starts it.
func TestTriggerCommand(t *testing.T) {
	bare := daemonRepo(t)
	secret := secretFile(t)
	d := startHookDaemon(t, "--repo", bare, "--interval", "1h", "--webhook-secret-file", secret)
	waitUntil(t, 60*time.Second, "/readyz 200", func() bool { c, _ := d.get("/readyz"); return c == http.StatusOK })

	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"trigger", "on-demand", "--addr", d.base, "--webhook-secret-file", secret, "--by", "rita", "--reason", "after the deploy"}, &out, &errb)
	id := strings.TrimSpace(out.String())
	if code != exitOK || !strings.HasPrefix(id, "req-") {
		t.Fatalf("trigger = %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	waitUntil(t, 60*time.Second, "the manual run", func() bool { return len(started(t, bare, "on-demand", "manual:"+id)) == 1 })
	if rn := started(t, bare, "on-demand", "manual:"+id)[0]; rn.Request == nil || rn.Request.By != "rita" || rn.Request.Reason != "after the deploy" {
		t.Errorf("the run's request = %+v", rn.Request)
	}

	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"trigger", "--format", "json", "--id", "chosen-1", "--addr", d.base, "--webhook-secret-file", secret, "on-demand"}, &out, &errb); code != exitOK {
		t.Fatalf("trigger --format json = %d: %s", code, errb.String())
	}
	var acc struct{ Request, Agent string }
	if err := json.Unmarshal(out.Bytes(), &acc); err != nil || acc.Request != "chosen-1" || acc.Agent != "on-demand" {
		t.Errorf("json answer %q (%v)", out.String(), err)
	}

	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("not-the-secret"), 0o600)
	open := filepath.Join(t.TempDir(), "open")
	os.WriteFile(open, []byte(daemonSecret), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown agent", []string{"trigger", "nobody", "--addr", d.base, "--webhook-secret-file", secret}, exitFail, "404 Not Found: no such agent"},
		{"no manual trigger", []string{"trigger", "env-normaliser", "--addr", d.base, "--webhook-secret-file", secret}, exitFail, "trigger { manual = true }"},
		{"wrong secret", []string{"trigger", "on-demand", "--addr", d.base, "--webhook-secret-file", wrong}, exitFail, "401 Unauthorized"},
		{"secret readable by others", []string{"trigger", "on-demand", "--addr", d.base, "--webhook-secret-file", open}, exitFail, "chmod 600"},
		{"bad id", []string{"trigger", "on-demand", "--id", "a/b", "--addr", d.base, "--webhook-secret-file", secret}, exitFail, "400 Bad Request"},
		{"no agent", []string{"trigger", "--addr", d.base, "--webhook-secret-file", secret}, exitUsage, "one agent name"},
		{"two agents", []string{"trigger", "a", "b", "--addr", d.base, "--webhook-secret-file", secret}, exitUsage, "one agent name"},
		{"no secret", []string{"trigger", "on-demand", "--addr", d.base}, exitUsage, "--webhook-secret-file is required"},
		{"bad addr", []string{"trigger", "on-demand", "--addr", "ftp://x", "--webhook-secret-file", secret}, exitUsage, "--addr"},
		{"bad format", []string{"trigger", "on-demand", "--format", "xml", "--webhook-secret-file", secret}, exitUsage, "--format"},
		{"repo and addr", []string{"trigger", "on-demand", "--repo", bare, "--addr", d.base}, exitUsage, "--repo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(errb.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errb.String(), tc.code, tc.want)
			}
			if strings.Contains(errb.String(), daemonSecret) {
				t.Errorf("stderr shows the secret")
			}
		})
	}

	// An alert for the example's incident-responder (a model agent: with
	// no model reachable its run fails, but it starts, with the alert).
	alert := []byte(`{"version":"4","status":"firing","receiver":"reconciler","groupKey":"{}:{alertname=\"PaymentsHighLatency\"}","groupLabels":{"alertname":"PaymentsHighLatency"},"commonLabels":{"alertname":"PaymentsHighLatency","severity":"critical","service":"payments-api"},"commonAnnotations":{"summary":"p99 latency above 2s"},"externalURL":"http://127.0.0.1:9093","alerts":[{"status":"firing","labels":{"alertname":"PaymentsHighLatency","severity":"critical","service":"payments-api"},"annotations":{"summary":"p99 latency above 2s"},"startsAt":"2026-11-17T09:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"a1b2c3d4e5f60718"}],"truncatedAlerts":0}`)
	if c, body := d.post("/hooks/alertmanager", alert, "Authorization", "Bearer "+daemonSecret, "Content-Type", "application/json"); c != http.StatusAccepted || !strings.Contains(body, `"incident-responder"`) {
		t.Fatalf("alert: %d %s", c, body)
	}
	trigger := ledger.AlertTrigger(`{}:{alertname="PaymentsHighLatency"}`, []string{"a1b2c3d4e5f60718"})
	waitUntil(t, 60*time.Second, "incident-responder's run", func() bool { return len(started(t, bare, "incident-responder", trigger)) == 1 })
	if c, body := d.post("/hooks/alertmanager", alert, "Authorization", "Bearer wrong", "Content-Type", "application/json"); c != http.StatusUnauthorized {
		t.Errorf("alert with a wrong secret: %d %s", c, body)
	}
}

// run refuses a secret file that others can read, or that is empty, with
// a message that says how to fix it, before it serves.
func TestRunRefusesBadSecretFile(t *testing.T) {
	bare := daemonRepo(t)
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte(daemonSecret), 0o644)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	key := filepath.Join(dir, "ledger.key")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"keygen", "--out", key}, &out, &errb); code != exitOK {
		t.Fatal(errb.String())
	}
	for file, want := range map[string]string{open: "chmod 600", empty: "is empty", filepath.Join(dir, "missing"): "no such file"} {
		out.Reset()
		errb.Reset()
		code := run(context.Background(), []string{"run", "--repo", bare, "--key", key, "--listen", "127.0.0.1:0", "--cache-dir", filepath.Join(dir, "cache"), "--webhook-secret-file", file}, &out, &errb)
		if code != exitFail || !strings.Contains(errb.String(), want) || strings.Contains(out.String(), "serving") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1 and %q", file, code, out.String(), errb.String(), want)
		}
	}
}

// A manual run accepted (202) by a daemon that is then killed (SIGKILL)
// before any pass could answer it (its remote was away) is run by the
// next daemon on the same cache, from the persisted queue.
func TestDaemonRestartRunsAcceptedRequest(t *testing.T) {
	bin := procBinary(t)
	bare := daemonRepo(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "ledger.key")
	env := procEnv()
	if res := runProc(context.Background(), bin, env, "keygen", "--out", key); res.code != 0 {
		t.Fatalf("keygen: %s", res)
	}
	secret := secretFile(t)
	cache := filepath.Join(dir, "cache")
	start := func() (*exec.Cmd, *syncBuffer, string) {
		cmd := exec.Command(bin, "run", "--repo", bare, "--key", key, "--cache-dir", cache, "--listen", "127.0.0.1:0", "--interval", "1h", "--webhook-secret-file", secret)
		cmd.Env = env
		out, errb := &syncBuffer{}, &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, errb
		// Its own process group, killed whole at the end: a git-receive-pack
		// the daemon started would otherwise go on writing into the
		// repository while the test's directories are removed.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
		var base string
		waitUntil(t, 30*time.Second, "the daemon to serve", func() bool {
			m := regexp.MustCompile(`serving on (http://\S+)`).FindStringSubmatch(out.String())
			if m != nil {
				base = m[1]
			}
			return base != ""
		})
		return cmd, errb, base
	}
	get := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cmd, errb, base := start()
	waitUntil(t, 60*time.Second, "/readyz 200", func() bool { return get(base+"/readyz") == http.StatusOK })
	if err := os.Rename(bare, bare+".away"); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/agents/on-demand/runs", strings.NewReader(`{"id":"survives-kill"}`))
	req.Header.Set("Authorization", "Bearer "+daemonSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("manual run: %d", resp.StatusCode)
	}
	waitUntil(t, 30*time.Second, "the woken pass to fail", func() bool { return get(base+"/readyz") == http.StatusServiceUnavailable })
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the daemon and what it started, as a container is killed
	cmd.Wait()
	if len(started(t, bare+".away", "on-demand", "manual:survives-kill")) != 0 {
		t.Fatalf("the request ran before the kill: %s", errb.String())
	}

	if err := os.Rename(bare+".away", bare); err != nil {
		t.Fatal(err)
	}
	_, errb2, _ := start()
	waitUntil(t, 60*time.Second, "the accepted request to run after the restart", func() bool {
		return len(started(t, bare, "on-demand", "manual:survives-kill")) == 1
	})
	if !strings.Contains(errb2.String(), "trigger queue loaded") {
		t.Errorf("the restarted daemon did not say it loaded the queue: %s", errb2.String())
	}
}

// trigger --repo runs one pass here with the request: the agent runs with
// trigger manual:ID; an agent without a manual trigger is dropped (exit 1,
// with the reason).
func TestTriggerLocalPass(t *testing.T) {
	bare := daemonRepo(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "ledger.key")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"keygen", "--out", key}, &out, &errb); code != exitOK {
		t.Fatal(errb.String())
	}
	out.Reset()
	args := []string{"--repo", bare, "--key", key, "--cache-dir", filepath.Join(dir, "cache")}
	if code := run(context.Background(), append([]string{"trigger", "on-demand", "--id", "local-1", "--by", "sam"}, args...), &out, &errb); code != exitOK {
		t.Fatalf("trigger --repo = %d: %s", code, errb.String())
	}
	if strings.TrimSpace(out.String()) != "local-1" || !strings.Contains(errb.String(), "agent on-demand: started run") {
		t.Errorf("stdout %q, stderr %q", out.String(), errb.String())
	}
	if rs := started(t, bare, "on-demand", "manual:local-1"); len(rs) != 1 || rs[0].Request == nil || rs[0].Request.By != "sam" {
		t.Errorf("runs for manual:local-1: %+v", rs)
	}
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), append([]string{"trigger", "env-normaliser", "--format", "json"}, args...), &out, &errb); code != exitFail || !strings.Contains(out.String(), `"state": "dropped"`) {
		t.Errorf("agent without a manual trigger: exit %d, stdout %q, stderr %q; want 1 and a dropped outcome", code, out.String(), errb.String())
	}
}

// With --notify-url-file the daemon posts to the webhook what needs a
// person: here the proposal a manual run opened. The URL (a secret) is
// never logged.
func TestRunNotifyURLFile(t *testing.T) {
	got := make(chan string, 16)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.URL.Path + " " + string(b)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	hook := "http://" + ln.Addr().String() + "/services/T000/B000/XXXXSECRETXXXX"
	urlFile := filepath.Join(t.TempDir(), "notify-url")
	os.WriteFile(urlFile, []byte(hook+"\n"), 0o600)

	bare := daemonRepo(t)
	secret := secretFile(t)
	d := startHookDaemon(t, "--repo", bare, "--interval", "1h", "--webhook-secret-file", secret, "--notify-url-file", urlFile)
	waitUntil(t, 60*time.Second, "/readyz 200", func() bool { c, _ := d.get("/readyz"); return c == http.StatusOK })
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"trigger", "on-demand", "--addr", d.base, "--webhook-secret-file", secret}, &out, &errb); code != exitOK {
		t.Fatalf("trigger: %d %s", code, errb.String())
	}
	deadline := time.After(60 * time.Second)
	for {
		select {
		case m := <-got:
			if !strings.HasPrefix(m, "/services/T000/B000/XXXXSECRETXXXX ") {
				t.Fatalf("posted to %q", m)
			}
			if strings.Contains(m, "on-demand") {
				if strings.Contains(d.err.String(), "XXXXSECRETXXXX") {
					t.Errorf("the log shows the webhook URL: %s", d.err.String())
				}
				return
			}
		case <-deadline:
			t.Fatalf("no notification about on-demand's proposal; log: %s", d.err.String())
		}
	}
}

// run starts and serves while its remote is unreachable: /healthz 200,
// /readyz 503 with the cause, until it is stopped.
func TestRunServesWhileRemoteUnreachable(t *testing.T) {
	d := startHookDaemon(t, "--repo", "http://127.0.0.1:1/unreachable.git", "--interval", "1s")
	waitUntil(t, 30*time.Second, "a failed pass", func() bool { return d.passes() > 0 })
	if c, _ := d.get("/healthz"); c != http.StatusOK {
		t.Errorf("/healthz = %d", c)
	}
	if c, body := d.get("/readyz"); c != http.StatusServiceUnavailable || !strings.Contains(body, "127.0.0.1:1") {
		t.Errorf("/readyz = %d %q, want 503 with the cause", c, body)
	}
	if code := d.stop(); code != exitOK {
		t.Errorf("run exited %d: %s", code, d.err.String())
	}
}
