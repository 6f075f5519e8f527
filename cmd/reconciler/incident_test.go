package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// incidentModel is an OpenAI-compatible chat-completions server on
// 127.0.0.1, standing in for a hosted model, which cannot run here: it
// answers each POST /v1/chat/completions with the next body of
// examples/incident/conversation.json, as the file has it, and counts the
// calls.
type incidentModel struct {
	*httptest.Server
	mu        sync.Mutex
	responses []json.RawMessage
	calls     int
	firstUser string
}

func newIncidentModel(t *testing.T) *incidentModel {
	t.Helper()
	b, err := os.ReadFile("../../examples/incident/conversation.json")
	if err != nil {
		t.Fatal(err)
	}
	m := &incidentModel{}
	if err := json.Unmarshal(b, &m.responses); err != nil {
		t.Fatal(err)
	}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		defer m.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		var req struct {
			Messages []struct{ Role, Content string }
		}
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" || json.Unmarshal(body, &req) != nil || len(m.responses) == 0 {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"message":"not a request this conversation answers","type":"invalid_request_error"}}`)
			return
		}
		if m.calls++; m.calls == 1 && len(req.Messages) > 1 {
			m.firstUser = req.Messages[1].Content
		}
		w.Write(m.responses[0])
		m.responses = m.responses[1:]
	}))
	t.Cleanup(m.Close)
	return m
}

func (m *incidentModel) seen() (int, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls, m.firstUser
}

// TestIncidentFlowThroughTheDaemon is examples/incident/README.md as a
// user runs it: `reconciler run` with a webhook secret, Alertmanager's
// notification posted to /hooks/alertmanager with the secret as a bearer
// token, the model conversation served over HTTP, a reviewer's signed
// merge, the resolution; then `reconciler replay` and `reconciler ledger
// log` on the repository.
func TestIncidentFlowThroughTheDaemon(t *testing.T) {
	for _, tool := range []string{"git", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	var help syncBuffer
	run(context.Background(), []string{"run", "-h"}, &help, &help)
	if !strings.Contains(help.String(), "webhook-secret-file") {
		t.Skip("reconciler run has no --webhook-secret-file yet: the daemon (package server) is not wired into cmd/reconciler")
	}
	ctx := context.Background()
	dir := t.TempDir()
	key := filepath.Join(dir, "ledger.key")
	var out, errb syncBuffer
	if code := run(ctx, []string{"keygen", "--out", key}, &out, &errb); code != exitOK {
		t.Fatalf("keygen: %s", errb.String())
	}

	// The example repository, with Rita's SSH key as her signing_key and
	// only signed merges accepted (the example accepts unsigned ones for
	// the demo).
	ritaKey := filepath.Join(dir, "rita")
	if b, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rita", "-f", ritaKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, b)
	}
	ritaPub, err := os.ReadFile(ritaKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src")
	if err := os.CopyFS(src, os.DirFS("../../examples/repo-layout")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"tools/pin-images.sh", "tools/normalise-env.sh"} {
		os.Chmod(filepath.Join(src, s), 0o755)
	}
	reviewers := filepath.Join(src, "reviewers.hcl")
	b, _ := os.ReadFile(reviewers)
	rv := strings.ReplaceAll(string(b), "accept_unsigned = true", "accept_unsigned = false")
	rv = strings.Replace(rv, `member "rita" {`, `member "rita" {
    signing_key = "`+strings.TrimSpace(string(ritaPub))+`"`, 1)
	if err := os.WriteFile(reviewers, []byte(rv), 0o644); err != nil {
		t.Fatal(err)
	}
	bare := gittest.NewBare(t, src)

	secret := "incident-webhook-secret-7c1f0a9e"
	secretFile := filepath.Join(dir, "webhook-secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	model := newIncidentModel(t)
	t.Setenv("OPENAI_BASE_URL", model.URL+"/v1")
	t.Setenv("OPENAI_API_KEY", "sk-test-incident-daemon-0123456789abcdef")

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(runCtx, []string{"run", "--repo", bare, "--key", key, "--identity", "Reconciler <reconciler@example.com>",
			"--interval", "1s", "--listen", "127.0.0.1:0", "--cache-dir", filepath.Join(dir, "cache"),
			"--webhook-secret-file", secretFile, "--concurrency", "1"}, &out, &errb)
	}()
	base := waitFor(t, 30*time.Second, "the daemon to serve", func() (string, bool) {
		m := regexp.MustCompile(`reconciler: serving on (http://\S+)`).FindStringSubmatch(out.String())
		if m == nil {
			return errb.String(), false
		}
		return m[1], true
	})
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) int {
		resp, err := client.Get(base + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, 60*time.Second, "/readyz", func() (string, bool) { return errb.String(), get("/readyz") == http.StatusOK })

	post := func(file, token string) (int, string) {
		t.Helper()
		body, err := os.ReadFile(filepath.Join("../../examples/incident", file))
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, base+"/hooks/alertmanager", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "Alertmanager/0.27.0")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Without the secret, or with another: refused, nothing runs.
	for _, token := range []string{"", "not-the-secret"} {
		if code, body := post("alert-firing.json", token); code != http.StatusUnauthorized {
			t.Errorf("POST with token %q = %d %s, want 401", token, code, body)
		}
	}
	code, body := post("alert-firing.json", secret)
	if code != http.StatusAccepted || !strings.Contains(body, `"incident-responder"`) {
		t.Fatalf("POST alert-firing.json = %d %s, want 202 naming incident-responder", code, body)
	}

	entries := func() []map[string]any {
		var o, e bytes.Buffer
		if code := run(ctx, []string{"ledger", "log", "--repo", bare, "--format", "json"}, &o, &e); code != exitOK {
			t.Fatalf("ledger log: exit %d: %s", code, e.String())
		}
		var es []map[string]any
		sc := bufio.NewScanner(&o)
		sc.Buffer(nil, 1<<24)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("ledger log line %q: %v", sc.Text(), err)
			}
			es = append(es, m)
		}
		return es
	}
	find := func(es []map[string]any, event string) map[string]any {
		for _, m := range es {
			if m["event"] == event && m["agent"] == "incident-responder" {
				return m
			}
		}
		return nil
	}
	waitForEvent := func(event string) map[string]any {
		t.Helper()
		var m map[string]any
		waitFor(t, 90*time.Second, event, func() (string, bool) {
			m = find(entries(), event)
			return errb.String(), m != nil
		})
		return m
	}
	opened := waitForEvent("proposal.opened")
	runID, _ := opened["run_id"].(string)
	branch := "agents/incident-responder/" + runID
	if calls, first := model.seen(); calls != 4 || !strings.Contains(first, "bd10ced123010a59") || !strings.Contains(first, "PaymentsHighLatency") {
		t.Errorf("the model was called %d times (want 4); its first user message:\n%s", calls, first)
	}

	// Rita merges, signing the merge with her key.
	work := gittest.Clone(t, bare)
	merge := exec.Command("git", "-c", "gpg.format=ssh", "-c", "user.signingKey="+ritaKey,
		"merge", "-S", "-q", "--no-ff", "-m", "Merge "+branch, "origin/"+branch)
	merge.Dir, merge.Env = work, gittest.Env("Rita Reviewer", "rita@example.com")
	if b, err := merge.CombinedOutput(); err != nil {
		t.Fatalf("signed merge: %v: %s", err, b)
	}
	gittest.Git(t, work, "push", "-q", "origin", "main")
	waitForEvent("proposal.merged")

	// Alertmanager repeats the firing notification, then resolves it:
	// the repeat runs nothing, the resolution is recorded.
	if code, body := post("alert-firing.json", secret); code != http.StatusAccepted {
		t.Errorf("repeat POST = %d %s", code, body)
	}
	if code, body := post("alert-resolved.json", secret); code != http.StatusAccepted {
		t.Errorf("POST alert-resolved.json = %d %s", code, body)
	}
	waitForEvent("alert.resolved")
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("daemon exited %d: %s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop")
	}
	if calls, _ := model.seen(); calls != 4 {
		t.Errorf("the model was called %d times, want 4: a repeat or the resolution ran the agent", calls)
	}

	// reconciler replay reproduces the proposal without the model.
	var o, e bytes.Buffer
	if code := run(ctx, []string{"replay", runID, "--repo", bare}, &o, &e); code != exitOK || !strings.Contains(o.String(), "replay OK") {
		t.Fatalf("replay %s: exit %d: %s %s", runID, code, o.String(), e.String())
	}
	t.Logf("reconciler replay %s --repo R:\n%s", runID, o.String())

	// reconciler ledger log: the alert, the run, the proposal, its
	// approval and merge, the resolution, in that order.
	o.Reset()
	e.Reset()
	if code := run(ctx, []string{"ledger", "log", "--repo", bare, "--agent", "incident-responder"}, &o, &e); code != exitOK {
		t.Fatalf("ledger log: exit %d: %s", code, e.String())
	}
	t.Logf("reconciler ledger log --repo R --agent incident-responder:\n%s", o.String())
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(o.String()), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 {
			order = append(order, f[3])
		}
	}
	want := []string{"run.started", "run.finished", "policy.decision", "proposal.opened", "proposal.approved", "proposal.merged", "alert.resolved"}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("incident-responder's entries are %q, want %q", order, want)
	}
	for _, s := range []string{runID, "PaymentsHighLatency", branch} {
		if !strings.Contains(o.String(), s) {
			t.Errorf("ledger log lacks %q", s)
		}
	}
	// reconciler ledger show RUN_ID --format json: the run's entries in
	// full, the notification that started it included.
	o.Reset()
	e.Reset()
	if code := run(ctx, []string{"ledger", "show", runID, "--repo", bare, "--format", "json"}, &o, &e); code != exitOK {
		t.Fatalf("ledger show: exit %d: %s", code, e.String())
	}
	for _, s := range []string{"PaymentsHighLatency", "bd10ced123010a59", "payments-staging", head(opened)} {
		if !strings.Contains(o.String(), s) {
			t.Errorf("ledger show %s lacks %q", runID, s)
		}
	}
	// The text form names the notification too.
	o.Reset()
	e.Reset()
	if code := run(ctx, []string{"ledger", "show", runID, "--repo", bare}, &o, &e); code != exitOK {
		t.Fatalf("ledger show: exit %d: %s", code, e.String())
	}
	for _, s := range []string{"alert:", "firing, group", "bd10ced123010a59", `alertname="PaymentsHighLatency"`} {
		if !strings.Contains(o.String(), s) {
			t.Errorf("ledger show %s (text) lacks %q:\n%s", runID, s, o.String())
		}
	}

	es := entries()
	started := find(es, "run.started")
	if al, _ := started["alert"].(map[string]any); al == nil || al["group_key"] != `{}/{alertname="PaymentsHighLatency"}:{alertname="PaymentsHighLatency", service="payments-api"}` {
		t.Errorf("run.started alert = %v", started["alert"])
	}
	approved := find(es, "proposal.approved")
	if a, _ := approved["approval"].(map[string]any); a == nil || a["method"] != "ssh" || a["member"] != "rita" || approved["run_id"] != runID {
		t.Errorf("proposal.approved = %v", approved)
	}
	if m := find(es, "proposal.merged"); m["run_id"] != runID {
		t.Errorf("proposal.merged = %v", m)
	}
	o.Reset()
	e.Reset()
	if code := run(ctx, []string{"ledger", "verify", "--repo", bare}, &o, &e); code != exitOK {
		t.Errorf("ledger verify: exit %d: %s %s", code, o.String(), e.String())
	}
	if n := len(es); n == 0 || !strings.Contains(o.String(), fmt.Sprintf("%d entries", n)) {
		t.Errorf("ledger verify: %s", o.String())
	}
}

// head is a proposal entry's head commit.
func head(m map[string]any) string {
	p, _ := m["proposal"].(map[string]any)
	h, _ := p["head"].(string)
	return h
}

// waitFor polls cond until it holds or d passes, then fails naming what it
// waited for with cond's last note.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (string, bool)) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		note, ok := cond()
		if ok {
			return note
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s: %s", d, what, note)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestIncidentExampleIsWhatAlertmanagerSends runs a real Alertmanager
// (Debian's prometheus-alertmanager, or upstream's alertmanager) with
// examples/incident/alertmanager.yml, its timings shortened and its
// receiver pointed at a server on 127.0.0.1, fires and resolves the
// example's alert through Alertmanager's API, and checks that what it
// delivers is alert-firing.json and alert-resolved.json byte for byte,
// with the secret from credentials_file as a bearer token.
func TestIncidentExampleIsWhatAlertmanagerSends(t *testing.T) {
	bin := ""
	for _, name := range []string{"prometheus-alertmanager", "alertmanager"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" && os.Getenv("CI") != "" {
		t.Fatal("Alertmanager is not installed, and CI must run this test: .ci/run installs Debian's prometheus-alertmanager")
	}
	if bin == "" {
		t.Skip("Alertmanager is not installed (apt-get install prometheus-alertmanager): the example's notifications are not checked against a real one")
	}
	type delivery struct {
		auth, agent string
		body        []byte
	}
	got := make(chan delivery, 8)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/hooks/alertmanager" {
			// Never block: Alertmanager may deliver again (a retry, the
			// group interval) while the test is not reading, and a
			// blocked handler would hang hook.Close.
			select {
			case got <- delivery{r.Header.Get("Authorization"), r.Header.Get("User-Agent"), b}:
			default:
			}
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer hook.Close()

	dir := t.TempDir()
	const secret = "am-conformance-secret-51d2"
	cred := filepath.Join(dir, "reconciler-webhook")
	if err := os.WriteFile(cred, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../examples/incident/alertmanager.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	for old, new := range map[string]string{
		"group_wait: 30s":                              "group_wait: 1s",
		"group_interval: 5m":                           "group_interval: 1s",
		"http://reconciler:8080/hooks/alertmanager":    hook.URL + "/hooks/alertmanager",
		"/etc/alertmanager/secrets/reconciler-webhook": cred,
	} {
		if !strings.Contains(cfg, old) {
			t.Fatalf("alertmanager.yml has no %q", old)
		}
		cfg = strings.ReplaceAll(cfg, old, new)
	}
	cfgFile := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var amLog syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	am := exec.CommandContext(ctx, bin, "--config.file="+cfgFile, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=", "--web.external-url=http://alertmanager:9093")
	am.Stdout, am.Stderr = &amLog, &amLog
	if err := am.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); am.Wait() }()
	waitFor(t, 30*time.Second, "Alertmanager to be ready", func() (string, bool) {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return amLog.String(), false
		}
		resp.Body.Close()
		return amLog.String(), resp.StatusCode == http.StatusOK
	})

	for _, file := range []string{"alert-firing.json", "alert-resolved.json"} {
		want, err := os.ReadFile(filepath.Join("../../examples/incident", file))
		if err != nil {
			t.Fatal(err)
		}
		// The alert as Prometheus posts it to Alertmanager's API.
		var n struct {
			Alerts []struct {
				Labels, Annotations            map[string]string
				StartsAt, EndsAt, GeneratorURL string
			}
		}
		if err := json.Unmarshal(want, &n); err != nil || len(n.Alerts) != 1 {
			t.Fatalf("%s: %v", file, err)
		}
		a := n.Alerts[0]
		post := map[string]any{"labels": a.Labels, "annotations": a.Annotations, "startsAt": a.StartsAt, "generatorURL": a.GeneratorURL}
		if !strings.HasPrefix(a.EndsAt, "0001-") {
			post["endsAt"] = a.EndsAt
		}
		body, _ := json.Marshal([]any{post})
		resp, err := http.Post("http://"+addr+"/api/v2/alerts", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST /api/v2/alerts = %d", resp.StatusCode)
		}
		select {
		case d := <-got:
			if d.auth != "Bearer "+secret || !strings.HasPrefix(d.agent, "Alertmanager/") {
				t.Errorf("%s: delivered with Authorization %q, User-Agent %q", file, d.auth, d.agent)
			}
			if !bytes.Equal(d.body, want) {
				t.Errorf("Alertmanager delivered\n%s\nexamples/incident/%s is\n%s", d.body, file, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("Alertmanager delivered nothing for %s: %s", file, amLog.String())
		}
	}
}
