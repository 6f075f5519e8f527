package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/agentgitops/reconciler/hclspec"
)

// The perception tools (prometheus_query, kubernetes_get, http_get) and
// recall read what the repository does not hold: metrics, the cluster, a
// status page, the agent's own past proposals. They only read. They run
// in the reconciler's process, not in a sandbox, so what they may reach
// is enforced here: the Prometheus and cluster the agent names, the kinds
// and namespaces of its kubernetes block (never Secrets), the URL
// prefixes of its http_allow. Their results are bounded and redacted
// before the model sees them, and recorded in the transcript; a replay
// takes the recorded results (recordedTool) and reaches nothing live.

// Bounds of the perception tools.
const (
	// perceptionTimeout bounds one call's requests.
	perceptionTimeout = 30 * time.Second
	// maxHTTPBody is how much of a response body http_get reads.
	maxHTTPBody = 1 << 20
	// maxHTTPRedirects is how many redirects http_get follows, each
	// within http_allow.
	maxHTTPRedirects = 5
	// maxSeries is how many series prometheus_query shows.
	maxSeries = 200
	// maxRangePoints is the most points per series a range query asks for.
	maxRangePoints = 1100
	// defaultRangePoints sets the step of a range query that gives none.
	defaultRangePoints = 60
)

// recordedTool reports whether a replay takes the tool's recorded result
// instead of calling it: the tools that read what is outside the
// workspace, which a replay must not reach (and which may have changed).
func recordedTool(name string) bool {
	switch name {
	case hclspec.ToolPrometheusQuery, hclspec.ToolKubernetesGet, hclspec.ToolHTTPGet, hclspec.ToolRecall:
		return true
	}
	return false
}

// senses holds what the perception tools and recall of one run reach,
// connected on first use.
type senses struct {
	task Task
	red  *redactor
	// lookup finds the variables the blocks name (bearer_token_env,
	// kubeconfig_env). Nil means os.LookupEnv.
	lookup func(string) (string, bool)

	mu   sync.Mutex
	prom promv1.API
	kube *kubeReader
	web  *http.Client
}

// bindTask gives the toolbox the run's task, for the perception tools and
// recall, and the run's redactor, which their results go through with
// the tokens the perception blocks name.
func (tb *toolbox) bindTask(t Task, red *redactor) {
	tb.senses = &senses{task: t, red: red}
	if t.Agent == nil {
		return
	}
	pc := t.Agent.Perception
	for i := range tb.offered {
		d := &tb.offered[i]
		switch {
		case d.name == hclspec.ToolPrometheusQuery && pc.Prometheus != nil:
			d.desc += fmt.Sprintf(" Your Prometheus: %s.", pc.Prometheus.Name)
		case d.name == hclspec.ToolKubernetesGet && pc.Kubernetes != nil:
			d.desc += fmt.Sprintf(" Your kinds: %s; namespaces: %s.", strings.Join(pc.Kubernetes.Kinds, ", "), strings.Join(pc.Kubernetes.Namespaces, ", "))
		case d.name == hclspec.ToolHTTPGet && len(pc.HTTPAllow) > 0:
			d.desc += fmt.Sprintf(" Your URL prefixes: %s.", strings.Join(pc.HTTPAllow, ", "))
		}
	}
}

func (s *senses) getenv(name string) (string, bool) {
	if s.lookup != nil {
		return s.lookup(name)
	}
	return os.LookupEnv(name)
}

// redact redacts a result with the run's secrets and the perception
// tokens.
func (s *senses) redact(text string) string {
	var extra []string
	if p := s.task.Agent.Perception.Prometheus; p != nil && p.BearerTokenEnv != "" {
		if v, ok := s.getenv(p.BearerTokenEnv); ok {
			extra = append(extra, v)
		}
	}
	red := s.red
	if red == nil {
		red = newRedactor()
	}
	if len(extra) > 0 {
		red = newRedactor(append(slices.Clone(red.values), extra...)...)
	}
	return red.String(text)
}

// errNoSenses is the error of a perception tool in a toolbox without a
// task (bindTask was not called).
var errNoSenses = errors.New("this tool is not available in this run")

// --- prometheus_query ---

// bearerTransport adds a bearer token to every request.
type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b *bearerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(req)
}

// promAPI returns the client of the agent's Prometheus.
func (s *senses) promAPI() (promv1.API, *hclspec.Prometheus, error) {
	p := s.task.Agent.Perception.Prometheus
	if p == nil {
		return nil, nil, fmt.Errorf("agent %q names no prometheus; its agent block needs prometheus = \"<name>\"", s.task.Agent.Name)
	}
	if p.URL == "" {
		return nil, p, fmt.Errorf("prometheus %q has an empty url: its url attribute in %s evaluated to \"\" (is the variable its env() reads set in the reconciler's environment?)", p.Name, hclspec.ProvidersFile)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prom != nil {
		return s.prom, p, nil
	}
	var rt http.RoundTripper = http.DefaultTransport
	if p.BearerTokenEnv != "" {
		tok, ok := s.getenv(p.BearerTokenEnv)
		if !ok || strings.TrimSpace(tok) == "" {
			return nil, p, fmt.Errorf("prometheus %q: the variable %s (bearer_token_env) is not set in the reconciler's environment", p.Name, p.BearerTokenEnv)
		}
		rt = &bearerTransport{token: strings.TrimSpace(tok), next: rt}
	}
	c, err := api.NewClient(api.Config{Address: p.URL, RoundTripper: rt})
	if err != nil {
		return nil, p, fmt.Errorf("prometheus %q: %w", p.Name, err)
	}
	s.prom = promv1.NewAPI(c)
	return s.prom, p, nil
}

// promArgs are the arguments of prometheus_query.
type promArgs struct {
	Query string `json:"query"`
	Time  string `json:"time"`
	Start string `json:"start"`
	End   string `json:"end"`
	Step  string `json:"step"`
}

func (tb *toolbox) prometheusQuery(ctx context.Context, def *toolDef, args string) (toolResult, error) {
	var a promArgs
	if err := decodeArgs(def, args, &a); err != nil {
		return toolResult{}, err
	}
	res := toolResult{Target: fmt.Sprintf("%q", clipRunes(a.Query, 80))}
	if err := required(def, "query", a.Query); err != nil {
		return res, err
	}
	if len(a.Query) > maxPatternLen*4 {
		return res, fmt.Errorf("the query is %d bytes; the limit is %d", len(a.Query), maxPatternLen*4)
	}
	if tb.senses == nil {
		return res, errNoSenses
	}
	s := tb.senses
	papi, p, err := s.promAPI()
	if err != nil {
		return res, err
	}
	now := time.Now()
	ctx, cancel := context.WithTimeout(ctx, perceptionTimeout)
	defer cancel()
	var (
		val      model.Value
		warnings promv1.Warnings
		header   string
	)
	switch {
	case a.Start == "" && a.End == "" && a.Step == "":
		ts := now
		if a.Time != "" {
			if ts, err = parsePromTime(a.Time, now); err != nil {
				return res, fmt.Errorf("time: %w", err)
			}
		}
		header = fmt.Sprintf("prometheus %s, instant query at %s", p.Name, ts.UTC().Format(time.RFC3339))
		val, warnings, _, err = papi.Query(ctx, a.Query, ts, promv1.WithTimeout(perceptionTimeout))
	case a.Time != "":
		return res, errors.New("give either time (an instant query) or start and end (a range query), not both")
	case a.Start == "" || a.End == "":
		return res, errors.New("a range query needs start and end, such as {\"start\": \"now-1h\", \"end\": \"now\", \"step\": \"1m\"}; leave all three out for an instant query")
	default:
		var r promv1.Range
		if r, err = promRange(a, now); err != nil {
			return res, err
		}
		header = fmt.Sprintf("prometheus %s, range query from %s to %s, step %s", p.Name, r.Start.UTC().Format(time.RFC3339), r.End.UTC().Format(time.RFC3339), r.Step)
		val, warnings, _, err = papi.QueryRange(ctx, a.Query, r, promv1.WithTimeout(perceptionTimeout))
	}
	if err != nil {
		if ctx.Err() != nil && ctx.Err() != context.DeadlineExceeded {
			return res, ctx.Err()
		}
		return res, fmt.Errorf("prometheus %s: %s", p.Name, sanitizeURLError(err))
	}
	var b strings.Builder
	b.WriteString(header + "\n")
	for _, w := range warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	formatPromValue(&b, val)
	res.Text = s.redact(strings.TrimSuffix(b.String(), "\n"))
	return res, nil
}

// promRange is a range query's range: step defaults to a sixtieth of it,
// and it may have at most maxRangePoints points.
func promRange(a promArgs, now time.Time) (promv1.Range, error) {
	start, err := parsePromTime(a.Start, now)
	if err != nil {
		return promv1.Range{}, fmt.Errorf("start: %w", err)
	}
	end, err := parsePromTime(a.End, now)
	if err != nil {
		return promv1.Range{}, fmt.Errorf("end: %w", err)
	}
	if !end.After(start) {
		return promv1.Range{}, fmt.Errorf("end (%s) must be after start (%s)", end.UTC().Format(time.RFC3339), start.UTC().Format(time.RFC3339))
	}
	step := max(end.Sub(start)/defaultRangePoints, time.Second).Round(time.Second)
	if a.Step != "" {
		if step, err = parsePromDuration(a.Step); err != nil {
			return promv1.Range{}, fmt.Errorf("step: %w", err)
		}
	}
	if n := int64(end.Sub(start) / step); n > maxRangePoints {
		return promv1.Range{}, fmt.Errorf("the range has %d points of step %s; at most %d are allowed: use a larger step or a shorter range", n, step, maxRangePoints)
	}
	return promv1.Range{Start: start, End: end, Step: step}, nil
}

// parsePromTime reads a time as RFC 3339, Unix seconds, "now" or
// "now-<duration>" (a Prometheus duration such as 15m or 1h30m).
func parsePromTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "now" {
		return now, nil
	}
	if rest, ok := strings.CutPrefix(s, "now-"); ok {
		d, err := parsePromDuration(rest)
		if err != nil {
			return time.Time{}, err
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 {
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use RFC 3339 (2026-11-17T10:00:00Z), Unix seconds, \"now\" or \"now-15m\"", clipRunes(s, 64))
}

// parsePromDuration reads a positive Prometheus duration (30s, 5m, 1h30m).
func parsePromDuration(s string) (time.Duration, error) {
	d, err := model.ParseDuration(strings.TrimSpace(s))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration such as 30s, 5m or 1h", clipRunes(s, 64))
	}
	return time.Duration(d), nil
}

// formatPromValue writes a query's result: one line per series of a
// vector, a series and its samples per line of a matrix, series sorted
// by their labels, at most maxSeries.
func formatPromValue(b *strings.Builder, v model.Value) {
	switch v := v.(type) {
	case model.Vector:
		slices.SortFunc(v, func(x, y *model.Sample) int { return strings.Compare(x.Metric.String(), y.Metric.String()) })
		fmt.Fprintf(b, "vector, %d series:\n", len(v))
		for i, s := range v {
			if i == maxSeries {
				fmt.Fprintf(b, "[only the first %d series are shown; narrow the query, e.g. with sum by (...) or topk]\n", maxSeries)
				break
			}
			fmt.Fprintf(b, "%s => %s @ %s\n", s.Metric, s.Value, stampProm(s.Timestamp))
		}
	case model.Matrix:
		slices.SortFunc(v, func(x, y *model.SampleStream) int { return strings.Compare(x.Metric.String(), y.Metric.String()) })
		fmt.Fprintf(b, "matrix, %d series:\n", len(v))
		for i, s := range v {
			if i == maxSeries {
				fmt.Fprintf(b, "[only the first %d series are shown; narrow the query, e.g. with sum by (...) or topk]\n", maxSeries)
				break
			}
			fmt.Fprintf(b, "%s:", s.Metric)
			for _, p := range s.Values {
				fmt.Fprintf(b, " %s@%s", p.Value, stampProm(p.Timestamp))
			}
			b.WriteString("\n")
		}
	case *model.Scalar:
		fmt.Fprintf(b, "scalar: %s @ %s\n", v.Value, stampProm(v.Timestamp))
	case *model.String:
		fmt.Fprintf(b, "string: %q @ %s\n", v.Value, stampProm(v.Timestamp))
	case nil:
		b.WriteString("no result\n")
	default:
		fmt.Fprintf(b, "%s\n", v)
	}
}

func stampProm(t model.Time) string { return t.Time().UTC().Format(time.RFC3339) }

// sanitizeURLError drops the URL's credentials and query from an error
// of net/http (flux's SanitizeError idea): queries can be long, and the
// message says what failed without them.
func sanitizeURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.User, u.RawQuery = nil, ""
			return fmt.Sprintf("%s %s: %v", ue.Op, u.Redacted(), ue.Err)
		}
	}
	return err.Error()
}

// --- http_get ---

// urlPrefix is an http_allow entry, parsed.
type urlPrefix struct {
	scheme, host, path string
}

func parsePrefix(p string) (urlPrefix, error) {
	if err := hclspec.CheckURLPrefix(p); err != nil {
		return urlPrefix{}, err
	}
	u, _ := url.Parse(p)
	return urlPrefix{scheme: u.Scheme, host: canonicalHost(u), path: u.EscapedPath()}, nil
}

// canonicalHost is a URL's host, lowercase, with the scheme's default port
// left out.
func canonicalHost(u *url.URL) string {
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	if port == "" {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

// allows reports whether the prefix allows the URL: same scheme and host,
// and a path that is the prefix's or below it (a prefix ending in "/"
// allows what starts with it, one without also itself).
func (p urlPrefix) allows(u *url.URL) bool {
	if u.Scheme != p.scheme || canonicalHost(u) != p.host {
		return false
	}
	want, got := p.path, u.EscapedPath()
	if got == "" {
		got = "/"
	}
	switch {
	case want == "" || want == "/":
		return true
	case strings.HasSuffix(want, "/"):
		return strings.HasPrefix(got, want)
	default:
		return got == want || strings.HasPrefix(got, want+"/")
	}
}

// checkURL refuses a URL that http_allow does not allow, or whose path is
// not clean (".." or "." segments, encoded slashes or dots, which servers
// may resolve out of the prefix).
func checkURL(allow []urlPrefix, u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return refusef("%q is not an absolute http(s) URL", clipRunes(u.Redacted(), 200))
	}
	if u.User != nil {
		return refusef("URLs with credentials are refused")
	}
	raw := u.EscapedPath()
	lower := strings.ToLower(raw)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%2e") || strings.Contains(lower, "%5c") || strings.Contains(raw, "\\") ||
		(raw != "" && raw != "/" && path.Clean(raw) != strings.TrimSuffix(raw, "/")) {
		return refusef("%q has a path with \".\" or \"..\" segments, repeated or encoded slashes or dots; use the clean path", clipRunes(u.Redacted(), 200))
	}
	for _, p := range allow {
		if p.allows(u) {
			return nil
		}
	}
	return refusef("%q is outside http_allow", clipRunes(u.Redacted(), 200))
}

// webClient returns the HTTP client of http_get: it follows at most
// maxHTTPRedirects redirects, each to a URL http_allow allows, and sends
// no cookies or credentials.
func (s *senses) webClient() (*http.Client, []urlPrefix, error) {
	var allow []urlPrefix
	for _, p := range s.task.Agent.Perception.HTTPAllow {
		up, err := parsePrefix(p)
		if err != nil {
			return nil, nil, err
		}
		allow = append(allow, up)
	}
	if len(allow) == 0 {
		return nil, nil, fmt.Errorf("agent %q allows no URLs; its agent block needs http_allow = [\"https://...\"]", s.task.Agent.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.web == nil {
		s.web = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			Timeout:   perceptionTimeout,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) > maxHTTPRedirects {
					return refusef("more than %d redirects", maxHTTPRedirects)
				}
				if err := checkURL(allow, req.URL); err != nil {
					return fmt.Errorf("redirect from %s: %w", via[len(via)-1].URL.Redacted(), err)
				}
				return nil
			},
		}
	}
	return s.web, allow, nil
}

func (tb *toolbox) httpGet(ctx context.Context, def *toolDef, args string) (toolResult, error) {
	var a struct {
		URL string `json:"url"`
	}
	if err := decodeArgs(def, args, &a); err != nil {
		return toolResult{}, err
	}
	res := toolResult{Target: clipRunes(a.URL, 200)}
	if err := required(def, "url", a.URL); err != nil {
		return res, err
	}
	if tb.senses == nil {
		return res, errNoSenses
	}
	s := tb.senses
	client, allow, err := s.webClient()
	if err != nil {
		return res, err
	}
	u, err := url.Parse(a.URL)
	if err != nil {
		return res, fmt.Errorf("%q is not a URL: %v", clipRunes(a.URL, 200), err)
	}
	if err := checkURL(allow, u); err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, perceptionTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return res, err
	}
	req.Header.Set("User-Agent", "agentgitops-reconciler (http_get)")
	req.Header.Set("Accept", "text/plain, text/html, application/json, */*;q=0.5")
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.Is(err, ErrRefused) && errors.As(err, &ue) {
			return res, ue.Err // a redirect off http_allow
		}
		return res, fmt.Errorf("GET %s: %s", u.Redacted(), sanitizeURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPBody+1))
	if err != nil {
		return res, fmt.Errorf("GET %s: reading the body: %v", u.Redacted(), err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s\n%s %s\n", resp.Request.URL.Redacted(), resp.Proto, resp.Status)
	ct := resp.Header.Get("Content-Type")
	if ct != "" {
		fmt.Fprintf(&b, "Content-Type: %s\n", ct)
	}
	b.WriteString("\n")
	cut := len(body) > maxHTTPBody
	if cut {
		body = body[:maxHTTPBody]
	}
	mt, _, _ := mime.ParseMediaType(ct)
	switch {
	case len(body) == 0:
		b.WriteString("(empty body)")
	case isBinary(body) || strings.HasPrefix(mt, "image/") || strings.HasPrefix(mt, "audio/") || strings.HasPrefix(mt, "video/") || mt == "application/octet-stream":
		fmt.Fprintf(&b, "binary body (%s), %d bytes: not shown", mt, len(body))
	default:
		b.Write(body)
		if cut {
			fmt.Fprintf(&b, "\n[the body is longer than %d bytes; only that much was read]", maxHTTPBody)
		}
	}
	res.Text = s.redact(b.String())
	return res, nil
}
