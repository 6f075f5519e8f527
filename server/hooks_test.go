package server_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/time/rate"

	"github.com/agentgitops/reconciler/server"
)

// hookServer is a server whose loop does not run (so the queue's content
// is what the hooks left), on a reconciler that has loaded the spec, its
// routes served on 127.0.0.1.
type hookServer struct {
	*server.Server
	url string
	dir string // the queue's directory
}

func newHookServer(t *testing.T, edit func(*server.Config)) *hookServer {
	t.Helper()
	e := newEnv(t)
	r := e.reconciler("", nil)
	if _, err := r.Pass(context.Background(), nil); err != nil {
		t.Fatalf("pass: %v", err)
	}
	dir := t.TempDir()
	cfg := server.Config{Reconciler: r, Interval: 1 << 40, Secret: server.NewSecret(testSecret), QueueDir: dir}
	if edit != nil {
		edit(&cfg)
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &hookServer{Server: s, url: serve(t, s.Handler()), dir: dir}
}

// ids returns the ids of the queued requests.
func (h *hookServer) ids() []string {
	var out []string
	for _, r := range h.Queued() {
		out = append(out, r.ID)
	}
	return out
}

// persisted returns the ids in the queue's file.
func (h *hookServer) persisted(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.dir, server.QueueFile))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Requests []struct{ ID string } }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("queue file: %v", err)
	}
	var out []string
	for _, r := range f.Requests {
		out = append(out, r.ID)
	}
	return out
}

var bearer = []string{"Authorization", "Bearer " + testSecret, "Content-Type", "application/json"}

// The eight deliveries Alertmanager 0.27.0 sent (captured on the wire):
// the firing and resolved notifications of frontend and checkoutservice
// match paged's on_alert trigger and are queued (202, the agent named),
// each once, with the notification's trigger id and status as the request
// id; the others match no agent (200, an empty list) and queue nothing.
// A repeat of a delivery is the same request, not queued twice.
func TestHookAlertmanagerCapturedDeliveries(t *testing.T) {
	dir := shared(t, "alertmanager/faultline-captured/wire-bodies")
	h := newHookServer(t, nil)
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != 8 {
		t.Fatalf("%d captured deliveries in %s, want 8", len(files), dir)
	}
	var want []string
	for _, f := range files {
		body := readFile(t, f)
		al, err := server.ParseAlertmanager(body)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		match := regexp.MustCompile(`frontend|checkoutservice`).MatchString(filepath.Base(f))
		for range 2 { // the second is Alertmanager's repeat
			res := post(t, h.url+"/hooks/alertmanager", body, bearer...)
			var got server.AlertAccepted
			res.decode(t, &got)
			switch {
			case match && (res.code != http.StatusAccepted || !slices.Equal(got.Agents, []string{"paged"}) || got.Request != server.AlertRequestID(al)):
				t.Errorf("%s: %d %s, want 202 for paged with request %s", f, res.code, res.body, server.AlertRequestID(al))
			case !match && (res.code != http.StatusOK || got.Agents == nil || len(got.Agents) != 0 || got.Request != ""):
				t.Errorf("%s: %d %s, want 200 with no agent", f, res.code, res.body)
			}
		}
		if match {
			want = append(want, al.Trigger()+":"+al.Status)
		}
	}
	if got := h.ids(); !slices.Equal(got, want) {
		t.Errorf("queued %v, want %v", got, want)
	}
	if got := h.persisted(t); !slices.Equal(got, want) {
		t.Errorf("persisted %v, want %v", got, want)
	}
	// What is queued is the notification as Alertmanager sent it.
	q := h.Queued()[0]
	if q.Alert == nil || q.Alert.Receiver != "faultline" || q.Alert.Status != "firing" || q.Alert.ExternalURL != "http://1a9e6cfeb2bd:9093" ||
		q.Alert.GroupLabels["service_name"] != "frontend" || len(q.Alert.Alerts) != 1 || q.Alert.Alerts[0].Fingerprint != "0eeee852e85422ff" ||
		q.Alert.Alerts[0].Annotations["summary"] != "frontend error rate above 5%" || !q.Alert.Alerts[0].EndsAt.IsZero() ||
		q.Alert.Alerts[0].StartsAt.Format("2006-01-02T15:04:05.000Z07:00") != "2026-08-24T10:34:30.583Z" ||
		!strings.HasPrefix(q.Alert.Alerts[0].GeneratorURL, "http://0345b24dba28:9090/graph?g0.expr=") {
		t.Errorf("queued notification = %+v", q.Alert)
	}
}

// Every field of Alertmanager's documented v4 payload is decoded; an
// older payload without per-alert status and fingerprint (as
// prometheus-msteams' test data has it) is tolerated.
func TestHookAlertmanagerDocumentedPayload(t *testing.T) {
	doc := string(readFile(t, shared(t, "alertmanager/alertmanager-docs/webhook_config-section.md")))
	start := strings.Index(doc, "\"version\": \"4\"")
	if start < 0 {
		t.Fatal("the documented payload is not in webhook_config-section.md")
	}
	block := doc[start:]
	block = block[:strings.Index(block, "```")]
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(\w+)":`).FindAllStringSubmatch(block, -1) {
		documented[m[1]] = true
	}
	if len(documented) < 15 {
		t.Fatalf("found %d documented fields: %v", len(documented), documented)
	}
	// Build a payload with every documented field from the captured one.
	var p map[string]any
	if err := json.Unmarshal(readFile(t, shared(t, "alertmanager/faultline-captured/wire-bodies/01-firing-frontend.json")), &p); err != nil {
		t.Fatal(err)
	}
	p["notification_reason"] = "new alert"
	for f := range documented {
		_, top := p[f]
		_, inAlert := p["alerts"].([]any)[0].(map[string]any)[f]
		if !top && !inAlert {
			t.Errorf("documented field %q is missing from the captured delivery", f)
		}
	}
	b, _ := json.Marshal(p)
	al, err := server.ParseAlertmanager(b)
	if err != nil {
		t.Fatal(err)
	}
	if al.GroupKey != `{}:{alertname="ServiceHighErrorRate", service_name="frontend"}` || al.CommonLabels["severity"] != "critical" || al.CommonAnnotations["description"] == "" {
		t.Errorf("decoded %+v", al)
	}

	old, err := server.ParseAlertmanager(readFile(t, shared(t, "alertmanager/prometheus-msteams/prom_post_request.json")))
	if err != nil {
		t.Fatalf("older payload: %v", err)
	}
	if len(old.Alerts) != 1 || old.Alerts[0].Status != "firing" || old.Alerts[0].Labels["instance"] != "instance-with-hyphen_and_underscore" {
		t.Errorf("older payload decoded as %+v", old)
	}
}

// GitHub's documented test vector and the seven deliveries GitHub sent to
// Cogni's capture service, with their real signatures: each verifies, and
// none is a push, so each is answered 200 without waking the loop. The same
// bodies with a signature by another secret are refused 401.
func TestHookGitHubCapturedSignatures(t *testing.T) {
	var vectors struct {
		Doc struct {
			Secret, Payload string
			Sig             string `json:"X-Hub-Signature-256"`
		} `json:"github_docs_test_vector"`
		Captured struct {
			Secret string
			Files  []string
		} `json:"github_captured_deliveries"`
	}
	vf := shared(t, "github-webhooks/signature-vectors.json")
	if err := json.Unmarshal(readFile(t, vf), &vectors); err != nil {
		t.Fatal(err)
	}
	if sig := strings.TrimPrefix(vectors.Doc.Sig, "sha256="); !server.NewSecret(vectors.Doc.Secret).VerifyHMAC([]byte(vectors.Doc.Payload), sig) {
		t.Errorf("GitHub's documented vector does not verify")
	}
	if server.NewSecret(vectors.Doc.Secret+"x").VerifyHMAC([]byte(vectors.Doc.Payload), strings.TrimPrefix(vectors.Doc.Sig, "sha256=")) {
		t.Errorf("GitHub's documented vector verifies with another secret")
	}
	h := newHookServer(t, func(c *server.Config) { c.Secret = server.NewSecret(vectors.Captured.Secret) })
	if len(vectors.Captured.Files) != 7 {
		t.Fatalf("%d captured GitHub deliveries, want 7", len(vectors.Captured.Files))
	}
	for _, f := range vectors.Captured.Files {
		var d struct {
			Headers map[string]string
			Body    string `json:"body_raw_base64"`
		}
		if err := json.Unmarshal(readFile(t, filepath.Join(filepath.Dir(vf), f)), &d); err != nil {
			t.Fatal(err)
		}
		body, err := base64.StdEncoding.DecodeString(d.Body)
		if err != nil {
			t.Fatal(err)
		}
		event := d.Headers["x-github-event"]
		res := post(t, h.url+"/hooks/git", body, "Content-Type", "application/json", "X-GitHub-Event", event, "X-Hub-Signature-256", d.Headers["x-hub-signature-256"])
		var got server.GitEvent
		res.decode(t, &got)
		if res.code != http.StatusOK || got.Sender != "github" || got.Event != event || got.Reconcile {
			t.Errorf("%s: %d %s, want 200 for a %s event", f, res.code, res.body, event)
		}
		res = post(t, h.url+"/hooks/git", body, "Content-Type", "application/json", "X-GitHub-Event", event, "X-Hub-Signature-256", "sha256="+hmacHex("another secret", body))
		if res.code != http.StatusUnauthorized {
			t.Errorf("%s signed with another secret: %d %s, want 401", f, res.code, res.body)
		}
		res.jsonError(t)
	}
	if len(h.Queued()) != 0 {
		t.Errorf("git hooks queued %v", h.ids())
	}
}

func hmacHex(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Gitea's signature vectors (go-playground/webhooks' test table): the
// push is accepted and reconciles (202), the pull request and review
// events are answered 200 without effect; a signature of another secret,
// or none, is refused 401.
func TestHookGiteaSignatureVectors(t *testing.T) {
	vf := shared(t, "gitea/webhooks/signature-vectors.json")
	var vectors struct {
		Secret  string
		Vectors []struct {
			File  string
			Event string `json:"X-Gitea-Event"`
			Sig   string `json:"X-Gitea-Signature"`
		}
	}
	if err := json.Unmarshal(readFile(t, vf), &vectors); err != nil {
		t.Fatal(err)
	}
	h := newHookServer(t, func(c *server.Config) { c.Secret = server.NewSecret(vectors.Secret) })
	pushes := 0
	for _, v := range vectors.Vectors {
		body := readFile(t, filepath.Join(filepath.Dir(vf), v.File))
		res := post(t, h.url+"/hooks/git", body, "Content-Type", "application/json", "X-Gitea-Event", v.Event, "X-Gitea-Signature", v.Sig)
		var got server.GitEvent
		res.decode(t, &got)
		want := http.StatusOK
		if v.Event == "push" {
			want = http.StatusAccepted
			pushes++
		}
		if res.code != want || got.Sender != "gitea" || got.Event != v.Event || got.Reconcile != (v.Event == "push") {
			t.Errorf("%s: %d %s, want %d", v.File, res.code, res.body, want)
		}
		for _, bad := range [][]string{
			{"X-Gitea-Signature", hmacHex("another secret", body)},
			{"X-Gitea-Signature", v.Sig[:len(v.Sig)-2]},
			{"X-Gitea-Event", v.Event},
		} {
			res := post(t, h.url+"/hooks/git", body, append([]string{"Content-Type", "application/json", "X-Gitea-Event", v.Event}, bad...)...)
			if res.code != http.StatusUnauthorized {
				t.Errorf("%s with %s %q: %d %s, want 401", v.File, bad[0], bad[1], res.code, res.body)
			}
			res.jsonError(t)
		}
	}
	if pushes != 1 {
		t.Errorf("%d push vectors, want 1", pushes)
	}
	// Gitea's documented push, signed as Gitea signs.
	doc := readFile(t, shared(t, "gitea/webhooks/gitea-docs/push-example.json"))
	res := post(t, h.url+"/hooks/git", doc, "Content-Type", "application/json", "X-Gitea-Event", "push", "X-GitHub-Event", "push", "X-Gitea-Signature", hmacHex(vectors.Secret, doc))
	if res.code != http.StatusAccepted {
		t.Errorf("Gitea's documented push: %d %s, want 202", res.code, res.body)
	}
}

// GitHub's push payloads (octokit/webhooks), signed with the secret as
// GitHub signs, reconcile (202); a ping does nothing (200); GitLab's push
// with its token reconciles, with another token is refused.
func TestHookGitPushes(t *testing.T) {
	h := newHookServer(t, nil)
	files, _ := filepath.Glob(filepath.Join(shared(t, "github-webhooks/octokit-webhooks/push"), "*.json"))
	if len(files) == 0 {
		t.Fatal("no octokit push payloads")
	}
	for _, f := range append(files, shared(t, "github-webhooks/go-playground-webhooks/push.json")) {
		body := readFile(t, f)
		res := post(t, h.url+"/hooks/git", body, "Content-Type", "application/json", "X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+hmacHex(testSecret, body))
		if res.code != http.StatusAccepted {
			t.Errorf("%s: %d %s, want 202", f, res.code, res.body)
		}
		res = post(t, h.url+"/hooks/git", body, "Content-Type", "application/json", "X-GitHub-Event", "push", "X-Hub-Signature-256", hmacHex(testSecret, body))
		if res.code != http.StatusUnauthorized {
			t.Errorf("%s with a signature lacking sha256=: %d, want 401", f, res.code)
		}
	}
	ping := readFile(t, shared(t, "github-webhooks/octokit-webhooks/ping/payload.json"))
	if res := post(t, h.url+"/hooks/git", ping, "X-GitHub-Event", "ping", "X-Hub-Signature-256", "sha256="+hmacHex(testSecret, ping)); res.code != http.StatusOK || !strings.Contains(res.body, `"reconcile": false`) {
		t.Errorf("ping: %d %s, want 200", res.code, res.body)
	}
	gl := []byte(`{"object_kind":"push","ref":"refs/heads/main","checkout_sha":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}`)
	if res := post(t, h.url+"/hooks/git", gl, "X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", testSecret); res.code != http.StatusAccepted {
		t.Errorf("GitLab push: %d %s, want 202", res.code, res.body)
	}
	if res := post(t, h.url+"/hooks/git", gl, "X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", testSecret+"x"); res.code != http.StatusUnauthorized {
		t.Errorf("GitLab push with another token: %d %s, want 401", res.code, res.body)
	}
	if res := post(t, h.url+"/hooks/git", []byte("{"), "X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", testSecret); res.code != http.StatusBadRequest {
		t.Errorf("GitLab push with malformed JSON: %d %s, want 400", res.code, res.body)
	}
	if len(h.Queued()) != 0 {
		t.Errorf("git pushes queued requests %v", h.ids())
	}
}

// What the hooks refuse, with the status code and a JSON error body, and
// nothing queued.
func TestHookRefusals(t *testing.T) {
	firing := []byte(`{"version":"4","status":"firing","receiver":"r","groupKey":"{}:{alertname=\"ServiceHighErrorRate\"}","groupLabels":{},"commonLabels":{"alertname":"ServiceHighErrorRate","service_name":"frontend"},"alerts":[{"status":"firing","labels":{"alertname":"ServiceHighErrorRate","service_name":"frontend"},"fingerprint":"0123456789abcdef"}]}`)
	h := newHookServer(t, func(c *server.Config) { c.Limits.MaxBody = 64 << 10 })
	am := h.url + "/hooks/alertmanager"
	runs := h.url + "/api/v1/agents/on-demand/runs"
	for _, tc := range []struct {
		name    string
		method  string
		url     string
		body    []byte
		headers []string
		code    int
	}{
		{"no secret", "POST", am, firing, []string{"Content-Type", "application/json"}, 401},
		{"wrong secret", "POST", am, firing, []string{"Authorization", "Bearer not-" + testSecret}, 401},
		{"basic auth", "POST", am, firing, []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+testSecret))}, 401},
		{"secret as prefix", "POST", am, firing, []string{"Authorization", "Bearer " + testSecret[:len(testSecret)-1]}, 401},
		{"oversized body", "POST", am, append(firing[:len(firing)-1:len(firing)-1], []byte(`,"x":"`+strings.Repeat("a", 64<<10)+`"}`)...), bearer, 413},
		{"malformed JSON", "POST", am, firing[:len(firing)-3], bearer, 400},
		{"two JSON values", "POST", am, append(append([]byte{}, firing...), firing...), bearer, 400},
		{"not an object", "POST", am, []byte(`[1,2]`), bearer, 400},
		{"wrong version", "POST", am, bytes.Replace(firing, []byte(`"version":"4"`), []byte(`"version":"3"`), 1), bearer, 400},
		{"wrong status", "POST", am, bytes.Replace(firing, []byte(`"status":"firing","receiver"`), []byte(`"status":"burning","receiver"`), 1), bearer, 400},
		{"wrong type", "POST", am, bytes.Replace(firing, []byte(`"groupLabels":{}`), []byte(`"groupLabels":[]`), 1), bearer, 400},
		{"form body", "POST", am, firing, []string{"Authorization", "Bearer " + testSecret, "Content-Type", "application/x-www-form-urlencoded"}, 415},
		{"GET", "GET", am, nil, bearer, 405},
		{"PUT", "PUT", am, firing, bearer, 405},
		{"run: no secret", "POST", runs, []byte(`{}`), nil, 401},
		{"run: wrong secret", "POST", runs, []byte(`{}`), []string{"Authorization", "Bearer x"}, 401},
		{"run: unknown field", "POST", runs, []byte(`{"agent":"other"}`), bearer, 400},
		{"run: malformed", "POST", runs, []byte(`{"reason":`), bearer, 400},
		{"run: bad id", "POST", runs, []byte(`{"id":"../etc"}`), bearer, 400},
		{"run: control characters", "POST", runs, []byte(`{"by":"a\u001b[31mb"}`), bearer, 400},
		{"run: unknown agent", "POST", h.url + "/api/v1/agents/nobody/runs", nil, bearer, 404},
		{"run: no manual trigger", "POST", h.url + "/api/v1/agents/steady/runs", nil, bearer, 409},
		{"run: GET", "GET", runs, nil, bearer, 405},
		{"git: no signature", "POST", h.url + "/hooks/git", []byte(`{}`), []string{"X-GitHub-Event", "push"}, 401},
		{"git: bearer is no signature", "POST", h.url + "/hooks/git", []byte(`{}`), []string{"X-GitHub-Event", "push", "Authorization", "Bearer " + testSecret}, 401},
		{"no route", "POST", h.url + "/hooks/other", nil, bearer, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.url, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i+1 < len(tc.headers); i += 2 {
				req.Header.Set(tc.headers[i], tc.headers[i+1])
			}
			res := do(t, req)
			if res.code != tc.code {
				t.Errorf("%d %s, want %d", res.code, res.body, tc.code)
			}
			if msg := res.jsonError(t); strings.Contains(msg, testSecret) {
				t.Errorf("the error shows the secret: %s", msg)
			}
			if res.code == 405 && res.header.Get("Allow") == "" {
				t.Errorf("405 without Allow")
			}
			if q := h.Queued(); len(q) != 0 {
				t.Errorf("queued %v", h.ids())
			}
		})
	}
	// The same notification with the right secret is queued: the
	// refusals above were for what they say.
	if res := post(t, am, firing, bearer...); res.code != http.StatusAccepted || len(h.Queued()) != 1 {
		t.Errorf("the valid notification: %d %s, queue %v", res.code, res.body, h.ids())
	}
}

// Without a secret the hook and API routes answer 403 and queue nothing;
// the probes and status still serve.
func TestHookWithoutSecret(t *testing.T) {
	h := newHookServer(t, func(c *server.Config) { c.Secret = server.Secret{} })
	for _, path := range []string{"/hooks/alertmanager", "/hooks/git", "/api/v1/agents/on-demand/runs"} {
		res := post(t, h.url+path, []byte(`{}`), "Authorization", "Bearer ", "X-Gitlab-Token", "", "X-Gitea-Signature", hmacHex("", []byte(`{}`)))
		if res.code != http.StatusForbidden {
			t.Errorf("%s: %d %s, want 403", path, res.code, res.body)
		}
		res.jsonError(t)
	}
	if len(h.Queued()) != 0 {
		t.Errorf("queued %v", h.ids())
	}
	for _, path := range []string{"/healthz", "/api/v1/status"} {
		if res := get(t, h.url+path); res.code != http.StatusOK {
			t.Errorf("%s: %d", path, res.code)
		}
	}
}

// A flood is cut at the route's rate: the first Burst requests are
// queued, the rest refused 429 with Retry-After, and exactly those
// accepted are in the queue. Another route keeps its own budget.
func TestHookFlood(t *testing.T) {
	h := newHookServer(t, func(c *server.Config) { c.Limits.Rate, c.Limits.Burst = rate.Limit(0.001), 5 })
	accepted, limited := 0, 0
	for i := range 50 {
		res := post(t, h.url+"/api/v1/agents/on-demand/runs", []byte(`{"id":"flood-`+string(rune('a'+i%26))+string(rune('a'+i/26))+`"}`), bearer...)
		switch res.code {
		case http.StatusAccepted:
			accepted++
		case http.StatusTooManyRequests:
			limited++
			if res.header.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
			res.jsonError(t)
		default:
			t.Fatalf("request %d: %d %s", i, res.code, res.body)
		}
	}
	if accepted != 5 || limited != 45 {
		t.Errorf("accepted %d, limited %d; want 5 and 45", accepted, limited)
	}
	if n := len(h.Queued()); n != accepted {
		t.Errorf("%d queued, want %d", n, accepted)
	}
	if n := len(h.persisted(t)); n != accepted {
		t.Errorf("%d persisted, want %d", n, accepted)
	}
	if res := post(t, h.url+"/hooks/alertmanager", []byte(`{`), bearer...); res.code != http.StatusBadRequest {
		t.Errorf("alertmanager after the flood on runs: %d, want 400 (its own budget)", res.code)
	}
}

// Manual runs: 202 with the request id (the caller's or a random one);
// the same id again is the same request; a full queue answers 503 with
// Retry-After and queues nothing.
func TestHookManualRun(t *testing.T) {
	h := newHookServer(t, func(c *server.Config) { c.Limits.MaxQueue = 3 })
	runs := h.url + "/api/v1/agents/on-demand/runs"
	res := post(t, runs, []byte(`{"id":"deploy-42","by":"rita","reason":"after the deploy"}`), bearer...)
	var acc server.RunAccepted
	res.decode(t, &acc)
	if res.code != http.StatusAccepted || acc.Request != "deploy-42" || acc.Agent != "on-demand" {
		t.Fatalf("%d %s", res.code, res.body)
	}
	if res := post(t, runs, []byte(`{"id":"deploy-42","by":"rita","reason":"after the deploy"}`), bearer...); res.code != http.StatusAccepted {
		t.Errorf("repeat: %d %s", res.code, res.body)
	}
	res = post(t, runs, nil, "Authorization", "Bearer "+testSecret)
	res.decode(t, &acc)
	if res.code != http.StatusAccepted || !strings.HasPrefix(acc.Request, "req-") {
		t.Fatalf("no body: %d %s", res.code, res.body)
	}
	q := h.Queued()
	if len(q) != 2 || q[0].ID != "deploy-42" || q[0].Agent != "on-demand" || q[0].By != "rita" || q[0].Reason != "after the deploy" || q[0].Alert != nil || q[0].Received.IsZero() || q[1].ID != acc.Request {
		t.Errorf("queue = %+v", q)
	}
	post(t, runs, []byte(`{"id":"third"}`), bearer...)
	res = post(t, runs, []byte(`{"id":"fourth"}`), bearer...)
	if res.code != http.StatusServiceUnavailable || res.header.Get("Retry-After") == "" {
		t.Errorf("full queue: %d %s (Retry-After %q), want 503 with Retry-After", res.code, res.body, res.header.Get("Retry-After"))
	}
	if got := h.persisted(t); !slices.Equal(got, []string{"deploy-42", acc.Request, "third"}) {
		t.Errorf("persisted %v", got)
	}
}

// Before a spec has loaded (the remote was never reachable) a request
// cannot be checked: 503 with Retry-After, nothing queued.
func TestHookBeforeSpec(t *testing.T) {
	e := newEnv(t)
	e.url = "http://127.0.0.1:1/unreachable.git"
	r := e.reconciler("", nil)
	s, err := server.New(server.Config{Reconciler: r, Interval: 1 << 40, Secret: server.NewSecret(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, s.Handler())
	for _, path := range []string{"/api/v1/agents/on-demand/runs", "/hooks/alertmanager"} {
		body := []byte(`{}`)
		if path == "/hooks/alertmanager" {
			body = []byte(`{"version":"4","status":"firing","groupKey":"g","alerts":[]}`)
		}
		res := post(t, url+path, body, bearer...)
		if res.code != http.StatusServiceUnavailable || res.header.Get("Retry-After") == "" {
			t.Errorf("%s: %d %s, want 503 with Retry-After", path, res.code, res.body)
		}
	}
	if len(s.Queued()) != 0 {
		t.Errorf("queued %v", s.Queued())
	}
}

// ParseAlertmanager refuses what is not a v4 notification, and never
// panics.
func FuzzParseAlertmanager(f *testing.F) {
	if files, _ := filepath.Glob("../../shared/conformance/alertmanager/faultline-captured/wire-bodies/*.json"); len(files) > 0 {
		for _, p := range files {
			b, _ := os.ReadFile(p)
			f.Add(b)
		}
	}
	f.Add([]byte(`{"version":"4","status":"resolved","groupKey":"k","alerts":[{"status":"resolved","fingerprint":"f"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		al, err := server.ParseAlertmanager(b)
		if err != nil {
			return
		}
		if al.GroupKey == "" || (al.Status != "firing" && al.Status != "resolved") {
			t.Fatalf("accepted %+v", al)
		}
		for _, it := range al.Alerts {
			if it.Status != "firing" && it.Status != "resolved" {
				t.Fatalf("accepted alert %+v", it)
			}
		}
		if !strings.HasPrefix(server.AlertRequestID(al), al.Trigger()+":") {
			t.Fatal("request id does not start with the trigger")
		}
	})
}

// /hooks/forge takes Gitea's and GitHub's pull request, review and push
// events, signed as on /hooks/git (the captured deliveries and Gitea's
// vectors with their real secrets): each wakes the loop (202), a ping
// does nothing (200), and a signature of another secret, none, or
// GitLab's token is refused (401), with nothing queued.
func TestHookForgeEvents(t *testing.T) {
	vf := shared(t, "gitea/webhooks/signature-vectors.json")
	var gitea struct {
		Secret  string
		Vectors []struct {
			File  string
			Event string `json:"X-Gitea-Event"`
			Sig   string `json:"X-Gitea-Signature"`
		}
	}
	if err := json.Unmarshal(readFile(t, vf), &gitea); err != nil {
		t.Fatal(err)
	}
	h := newHookServer(t, func(c *server.Config) { c.Secret = server.NewSecret(gitea.Secret) })
	woke := 0
	for _, v := range gitea.Vectors {
		body := readFile(t, filepath.Join(filepath.Dir(vf), v.File))
		res := post(t, h.url+"/hooks/forge", body, "Content-Type", "application/json", "X-Gitea-Event", v.Event, "X-Gitea-Signature", v.Sig)
		var got server.GitEvent
		res.decode(t, &got)
		if res.code != http.StatusAccepted || !got.Reconcile || got.Sender != "gitea" {
			t.Errorf("gitea %s (%s): %d %s, want 202", v.File, v.Event, res.code, res.body)
		}
		woke++
		if res := post(t, h.url+"/hooks/forge", body, "Content-Type", "application/json", "X-Gitea-Event", v.Event, "X-Gitea-Signature", hmacHex("another secret", body)); res.code != http.StatusUnauthorized {
			t.Errorf("gitea %s with another secret: %d, want 401", v.File, res.code)
		}
	}
	if woke < 2 {
		t.Fatalf("%d Gitea vectors, want the push and pull request events", woke)
	}

	var gh struct {
		Captured struct {
			Secret string
			Files  []string
		} `json:"github_captured_deliveries"`
	}
	ghf := shared(t, "github-webhooks/signature-vectors.json")
	if err := json.Unmarshal(readFile(t, ghf), &gh); err != nil {
		t.Fatal(err)
	}
	h = newHookServer(t, func(c *server.Config) { c.Secret = server.NewSecret(gh.Captured.Secret) })
	for _, f := range gh.Captured.Files {
		var d struct {
			Headers map[string]string
			Body    string `json:"body_raw_base64"`
		}
		if err := json.Unmarshal(readFile(t, filepath.Join(filepath.Dir(ghf), f)), &d); err != nil {
			t.Fatal(err)
		}
		body, err := base64.StdEncoding.DecodeString(d.Body)
		if err != nil {
			t.Fatal(err)
		}
		event := d.Headers["x-github-event"]
		res := post(t, h.url+"/hooks/forge", body, "Content-Type", "application/json", "X-GitHub-Event", event, "X-Hub-Signature-256", d.Headers["x-hub-signature-256"])
		var got server.GitEvent
		res.decode(t, &got)
		want := event == "pull_request" || event == "pull_request_review" || event == "push"
		if got.Reconcile != want || (want && res.code != http.StatusAccepted) || (!want && res.code != http.StatusOK) {
			t.Errorf("github %s (%s): %d %s, want reconcile=%v", f, event, res.code, res.body, want)
		}
	}
	gl := []byte(`{"object_kind":"merge_request"}`)
	if res := post(t, h.url+"/hooks/forge", gl, "X-Gitlab-Event", "Merge Request Hook", "X-Gitlab-Token", gh.Captured.Secret); res.code != http.StatusUnauthorized {
		t.Errorf("GitLab on /hooks/forge: %d %s, want 401", res.code, res.body)
	}
	if len(h.Queued()) != 0 {
		t.Errorf("forge hooks queued %v", h.ids())
	}
}
