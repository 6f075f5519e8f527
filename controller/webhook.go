package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1 "github.com/agentgitops/reconciler/api/v1"
	"github.com/agentgitops/reconciler/server"
)

// maxHookBody bounds a push event's body.
const maxHookBody = 1 << 20

// GitHook receives the push events of GitHub, Gitea and GitLab at
// /hooks/git, as the daemon does, and routes each to the AgentRepository
// objects (of this shard) whose spec.url is the pushed repository: it sets
// their reconcile.fluxcd.io/requestedAt annotation, so the leader passes
// at once, whichever replica received the event. Requests must carry the
// shared secret: Gitea's X-Gitea-Signature or GitHub's X-Hub-Signature-256
// HMAC, or GitLab's X-Gitlab-Token.
type GitHook struct {
	Client client.Client
	Secret server.Secret
	// SecretFunc, when set, returns the secret instead of Secret (see
	// SecretFile).
	SecretFunc func() server.Secret
	// Forge makes it the /hooks/forge receiver: Gitea's and GitHub's pull
	// request, review and push events (server.ForgeEventWakes), no GitLab;
	// else it takes push events (server.GitEventWakes). Other events are
	// answered 200 and route nothing.
	Forge  bool
	Logger *slog.Logger
	// Now is the clock of the annotation's value; nil means time.Now.
	Now func() time.Time
}

// ServeHTTP implements http.Handler.
func (h *GitHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	secret := h.Secret
	if h.SecretFunc != nil {
		secret = h.SecretFunc()
	}
	if secret.IsZero() {
		http.Error(w, "no webhook secret is configured (--webhook-secret-file)", http.StatusForbidden)
		return
	}
	body, read := readHookBody(w, r)
	if !read {
		return
	}
	hd := r.Header
	var ok bool
	var sender, event string
	switch {
	case hd.Get("X-Gitea-Signature") != "":
		sender, event = "gitea", hd.Get("X-Gitea-Event")
		ok = secret.VerifyHMAC(body, hd.Get("X-Gitea-Signature"))
	case hd.Get("X-Hub-Signature-256") != "":
		sender, event = "github", hd.Get("X-GitHub-Event")
		sig, found := strings.CutPrefix(hd.Get("X-Hub-Signature-256"), "sha256=")
		ok = found && secret.VerifyHMAC(body, sig)
	case hd.Get("X-Gitlab-Token") != "" && !h.Forge:
		sender, event = "gitlab", hd.Get("X-Gitlab-Event")
		ok = secret.Equal(hd.Get("X-Gitlab-Token"))
	case h.Forge:
		http.Error(w, "no X-Gitea-Signature or X-Hub-Signature-256 header", http.StatusUnauthorized)
		return
	default:
		http.Error(w, "no X-Gitea-Signature, X-Hub-Signature-256 or X-Gitlab-Token header", http.StatusUnauthorized)
		return
	}
	if !ok {
		http.Error(w, "the signature does not match the body: check the webhook's secret", http.StatusUnauthorized)
		return
	}
	wakes := server.GitEventWakes(sender, event)
	if h.Forge {
		wakes = server.ForgeEventWakes(sender, event)
	}
	if !wakes {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"requested": 0, "event": event})
		return
	}
	urls, err := pushedURLs(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n, err := h.route(r.Context(), urls)
	if err != nil {
		h.log().Error("route push event", "err", err)
		http.Error(w, "could not request a reconcile", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]int{"requested": n})
}

func (h *GitHook) log() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

// route annotates the objects whose URL is one of urls and returns how many.
func (h *GitHook) route(ctx context.Context, urls []string) (int, error) {
	want := map[string]bool{}
	for _, u := range urls {
		want[sameRepo(u)] = true
	}
	var list agentsv1.AgentRepositoryList
	if err := h.Client.List(ctx, &list); err != nil {
		return 0, err
	}
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	token := now().UTC().Format(time.RFC3339Nano)
	n := 0
	var errs []error
	for i := range list.Items {
		obj := &list.Items[i]
		if !want[sameRepo(obj.Spec.URL)] {
			continue
		}
		patch := client.MergeFrom(obj.DeepCopy())
		ann := obj.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[meta.ReconcileRequestAnnotation] = token
		obj.SetAnnotations(ann)
		if err := h.Client.Patch(ctx, obj, patch); err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", obj.Namespace, obj.Name, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// pushedURLs are the repository URLs a push event names (GitHub and
// Gitea's repository.clone_url, html_url, ssh_url; GitLab's
// project.git_http_url, web_url, git_ssh_url).
func pushedURLs(body []byte) ([]string, error) {
	var ev struct {
		Repository struct {
			CloneURL string `json:"clone_url"`
			HTMLURL  string `json:"html_url"`
			SSHURL   string `json:"ssh_url"`
		} `json:"repository"`
		Project struct {
			HTTPURL string `json:"git_http_url"`
			WebURL  string `json:"web_url"`
			SSHURL  string `json:"git_ssh_url"`
		} `json:"project"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		return nil, fmt.Errorf("not a push event: %v", err)
	}
	var out []string
	for _, u := range []string{ev.Repository.CloneURL, ev.Repository.HTMLURL, ev.Repository.SSHURL, ev.Project.HTTPURL, ev.Project.WebURL, ev.Project.SSHURL} {
		if u != "" {
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the push event names no repository URL")
	}
	return out, nil
}

// sameRepo reduces a repository URL to what two spellings of one
// repository share: host (lower case, without credentials and default
// ports) and path (without a trailing / or .git).
func sameRepo(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return strings.TrimSuffix(strings.TrimSuffix(raw, "/"), ".git")
	}
	host := strings.ToLower(u.Hostname())
	if p := u.Port(); p != "" && p != "80" && p != "443" {
		host = net.JoinHostPort(host, p)
	}
	return host + strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), ".git")
}

// readHookBody reads a hook's body, answering 413 when it is unreadable or
// larger than maxHookBody.
func readHookBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxHookBody+1))
	if err != nil || len(body) > maxHookBody {
		http.Error(w, "body unreadable or larger than 1 MiB", http.StatusRequestEntityTooLarge)
		return nil, false
	}
	return body, true
}
