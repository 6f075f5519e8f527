package hclspec

import (
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// The read-only perception tools: what an agent may look at besides the
// repository. Each is opt-in twice: the tool in the agent's tools, and
// the system it reads named in the agent (prometheus, kubernetes) or
// allow-listed (http_allow). The systems are declared in providers.hcl,
// beside the model providers, so that what agents may look at is a
// reviewed change of a control file.

// Perception tool names, as agents list them in tools.
const (
	ToolPrometheusQuery = "prometheus_query"
	ToolKubernetesGet   = "kubernetes_get"
	ToolHTTPGet         = "http_get"
	ToolRecall          = "recall"
)

// Prometheus is a `prometheus "<name>"` block of providers.hcl: a server
// prometheus_query sends PromQL to.
type Prometheus struct {
	Name string
	// URL is the server's base URL, such as "http://prometheus:9090".
	URL string
	// BearerTokenEnv names the variable holding a bearer token sent with
	// every query; "" sends none. The token never lives in git.
	BearerTokenEnv string

	DeclRange hcl.Range
	// Source is the block's exact text, part of the digest of the agents
	// that use it.
	Source []byte
}

// Kubernetes is a `kubernetes "<name>"` block of providers.hcl: a cluster
// kubernetes_get reads, and the kinds and namespaces it may read there.
type Kubernetes struct {
	Name string
	// KubeconfigEnv names the variable holding the path of a kubeconfig
	// file; "" uses the in-cluster service account. Give the reconciler
	// credentials that can only read: the tool issues only GET requests
	// (get, list), whatever the credentials allow.
	KubeconfigEnv string
	// Context is the kubeconfig context to use; "" is its current one.
	Context string
	// Kinds are the kinds that may be read, as Kind or Kind.group
	// ("Pod", "Deployment.apps"). Secret is never one of them.
	Kinds []string
	// Namespaces are the namespaces that may be read; cluster-scoped
	// kinds are read without one.
	Namespaces []string

	DeclRange hcl.Range
	Source    []byte
}

// Perception is what an agent's perception tools may reach: the
// Prometheus and cluster it names, and the URL prefixes http_get may
// fetch.
type Perception struct {
	Prometheus *Prometheus
	Kubernetes *Kubernetes
	// HTTPAllow are the URL prefixes http_get may fetch, each an absolute
	// http(s) URL: a URL matches a prefix with the same scheme and host
	// whose path is the prefix's path or below it.
	HTTPAllow []string
}

var prometheusSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "url", Required: true}, {Name: "bearer_token_env"},
}}

var kubernetesSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "kubeconfig_env"}, {Name: "context"}, {Name: "kinds", Required: true}, {Name: "namespaces", Required: true},
}}

// perceptionBlocks are the blocks providers.hcl holds for the perception
// tools.
var perceptionBlocks = []hcl.BlockHeaderSchema{
	{Type: "prometheus", LabelNames: []string{"name"}},
	{Type: "kubernetes", LabelNames: []string{"name"}},
}

// kindPattern is a kind as kinds lists it: Kind or Kind.group.
var kindPattern = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*(\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?)?$`)

// namespacePattern is a Kubernetes namespace name (an RFC 1123 label).
var namespacePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// IsSecretKind reports whether a kind, as kinds lists it or as a
// Kubernetes group and kind, is the core Secret kind, which
// kubernetes_get never reads.
func IsSecretKind(kind string) bool {
	k, group, _ := strings.Cut(kind, ".")
	return strings.EqualFold(k, "Secret") && (group == "" || group == "core" || group == "v1")
}

// decodePerceptionBlock decodes a prometheus or kubernetes block of
// providers.hcl, reporting whether b was one.
func (l *loader) decodePerceptionBlock(f *hcl.File, b *hcl.Block) bool {
	switch b.Type {
	case "prometheus":
		l.decodePrometheus(f, b)
	case "kubernetes":
		l.decodeKubernetes(f, b)
	default:
		return false
	}
	return true
}

func (l *loader) decodePrometheus(f *hcl.File, b *hcl.Block) {
	p := &Prometheus{Name: b.Labels[0], DeclRange: b.DefRange, Source: blockSource(f, b)}
	c := l.content(b.Body, prometheusSchema)
	if c == nil {
		return
	}
	ctx := l.evalCtx(true)
	// An empty url (env() of an unset variable) loads, as an empty
	// base_url does: prometheus_query then fails, saying so.
	if l.decodeAttr(c.Attributes, "url", ctx, &p.URL) && p.URL != "" {
		rng := c.Attributes["url"].Expr.Range()
		u, err := url.Parse(p.URL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			l.errorf(rng, "Invalid Prometheus URL", "url %q must be the server's http(s) base URL, such as \"http://prometheus.monitoring:9090\".", p.URL)
		case u.User != nil:
			l.errorf(rng, "Credentials in Prometheus URL", "url must not carry credentials; name the variable holding a bearer token in bearer_token_env instead.")
		case u.RawQuery != "" || u.Fragment != "":
			l.errorf(rng, "Invalid Prometheus URL", "url %q must be a base URL without a query or fragment.", p.URL)
		}
	}
	if l.decodeAttr(c.Attributes, "bearer_token_env", ctx, &p.BearerTokenEnv) && !envName.MatchString(p.BearerTokenEnv) {
		l.errorf(c.Attributes["bearer_token_env"].Expr.Range(), "Invalid variable name", "bearer_token_env names the environment variable that holds the token, such as \"PROMETHEUS_TOKEN\"; never put the token itself in git.")
	}
	for _, other := range l.spec.Prometheus {
		if other.Name == p.Name {
			l.errorf(b.DefRange, "Duplicate prometheus", "A prometheus %q is already declared at %s; each needs a unique name.", p.Name, other.DeclRange)
			return
		}
	}
	l.spec.Prometheus = append(l.spec.Prometheus, p)
}

func (l *loader) decodeKubernetes(f *hcl.File, b *hcl.Block) {
	k := &Kubernetes{Name: b.Labels[0], DeclRange: b.DefRange, Source: blockSource(f, b)}
	c := l.content(b.Body, kubernetesSchema)
	if c == nil {
		return
	}
	ctx := l.evalCtx(false)
	if l.decodeAttr(c.Attributes, "kubeconfig_env", ctx, &k.KubeconfigEnv) && !envName.MatchString(k.KubeconfigEnv) {
		l.errorf(c.Attributes["kubeconfig_env"].Expr.Range(), "Invalid variable name", "kubeconfig_env names the environment variable that holds the path of a kubeconfig file, such as \"INCIDENT_KUBECONFIG\"; leave it out to use the in-cluster service account.")
	}
	l.decodeAttr(c.Attributes, "context", ctx, &k.Context)
	if l.decodeAttr(c.Attributes, "kinds", ctx, &k.Kinds) {
		rng := c.Attributes["kinds"].Expr.Range()
		if len(k.Kinds) == 0 {
			l.errorf(rng, "No kinds", "kinds lists the kinds kubernetes_get may read, such as [\"Pod\", \"Deployment.apps\", \"Event\"].")
		}
		for _, kind := range k.Kinds {
			switch {
			case IsSecretKind(kind):
				l.errorf(rng, "Secrets are never readable", "kubernetes_get never reads Secrets, whatever the credentials allow: remove %q from kinds.", kind)
			case !kindPattern.MatchString(kind):
				l.errorf(rng, "Invalid kind", "%q is not a kind: write Kind or Kind.group, such as \"Pod\" or \"Deployment.apps\".", kind)
			}
		}
	}
	if l.decodeAttr(c.Attributes, "namespaces", ctx, &k.Namespaces) {
		rng := c.Attributes["namespaces"].Expr.Range()
		if len(k.Namespaces) == 0 {
			l.errorf(rng, "No namespaces", "namespaces lists the namespaces kubernetes_get may read, such as [\"payments-staging\"].")
		}
		for _, ns := range k.Namespaces {
			if !namespacePattern.MatchString(ns) {
				l.errorf(rng, "Invalid namespace", "%q is not a namespace name: lowercase letters, digits and '-', as Kubernetes names them; globs are not supported, list each namespace.", ns)
			}
		}
	}
	for _, other := range l.spec.Kubernetes {
		if other.Name == k.Name {
			l.errorf(b.DefRange, "Duplicate kubernetes", "A kubernetes %q is already declared at %s; each needs a unique name.", k.Name, other.DeclRange)
			return
		}
	}
	l.spec.Kubernetes = append(l.spec.Kubernetes, k)
}

// decodePerception decodes an agent's prometheus, kubernetes and
// http_allow attributes and checks them against its tools: a perception
// tool needs what it reads, and what it reads needs the tool.
func (l *loader) decodePerception(c *hcl.BodyContent, a *Agent, ctx *hcl.EvalContext) {
	tools := c.Attributes["tools"]
	has := func(tool string) bool { return slices.Contains(a.Tools, tool) }
	need := func(tool, attr, example string) {
		if has(tool) && c.Attributes[attr] == nil {
			l.errorf(tools.Expr.Range(), "Missing "+attr, "Agent %q lists %s, which needs %s: add %s.", a.Name, tool, attr, example)
		}
		if at := c.Attributes[attr]; at != nil && !has(tool) {
			l.errorf(at.NameRange, "Unused "+attr, "%s is what the %s tool reads, and agent %q does not list it in tools: add %q to tools, or remove %s.", attr, tool, a.Name, tool, attr)
		}
	}
	var names []string
	var name string
	if l.decodeAttr(c.Attributes, "prometheus", ctx, &name) {
		names = names[:0]
		for _, p := range l.spec.Prometheus {
			names = append(names, p.Name)
			if p.Name == name {
				a.Perception.Prometheus = p
			}
		}
		if a.Perception.Prometheus == nil {
			l.errorf(c.Attributes["prometheus"].Expr.Range(), "Unknown prometheus", "Agent %q names prometheus %q, which %s does not declare: add prometheus %q { url = \"http://...\" } there.%s", a.Name, name, ProvidersFile, name, suggest(name, names))
		}
	}
	name = ""
	if l.decodeAttr(c.Attributes, "kubernetes", ctx, &name) {
		names = names[:0]
		for _, k := range l.spec.Kubernetes {
			names = append(names, k.Name)
			if k.Name == name {
				a.Perception.Kubernetes = k
			}
		}
		if a.Perception.Kubernetes == nil {
			l.errorf(c.Attributes["kubernetes"].Expr.Range(), "Unknown kubernetes", "Agent %q names kubernetes %q, which %s does not declare: add kubernetes %q { kinds = [...], namespaces = [...] } there.%s", a.Name, name, ProvidersFile, name, suggest(name, names))
		}
	}
	if l.decodeAttr(c.Attributes, "http_allow", ctx, &a.Perception.HTTPAllow) {
		rng := c.Attributes["http_allow"].Expr.Range()
		if len(a.Perception.HTTPAllow) == 0 {
			l.errorf(rng, "No URL prefixes", "http_allow lists the URL prefixes http_get may fetch, such as [\"https://status.example.com/\"].")
		}
		for _, p := range a.Perception.HTTPAllow {
			if err := CheckURLPrefix(p); err != nil {
				l.errorf(rng, "Invalid URL prefix", "%s.", err)
			}
		}
	}
	need(ToolPrometheusQuery, "prometheus", `prometheus = "main" naming a prometheus block of `+ProvidersFile)
	need(ToolKubernetesGet, "kubernetes", `kubernetes = "staging" naming a kubernetes block of `+ProvidersFile)
	need(ToolHTTPGet, "http_allow", `http_allow = ["https://status.example.com/"]`)
}

// CheckURLPrefix checks an http_allow entry: an absolute http(s) URL
// with a host, without credentials, query or fragment, and a clean path.
func CheckURLPrefix(prefix string) error {
	u, err := url.Parse(prefix)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "":
		return fmt.Errorf("%q is not an absolute http(s) URL such as \"https://status.example.com/\"", prefix)
	case u.User != nil:
		return fmt.Errorf("%q carries credentials; http_get sends none", prefix)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Errorf("%q has a query or fragment; a prefix is a scheme, host and path", prefix)
	case u.Path != "" && path.Clean(u.Path) != strings.TrimSuffix(u.Path, "/") && u.Path != "/":
		return fmt.Errorf("%q has a path with \".\", \"..\" or repeated slashes; write it clean", prefix)
	}
	return nil
}

// perceptionDigest adds to an agent's digest the perception blocks it
// uses: pointing it at another Prometheus or cluster changes its runs.
func (a *Agent) perceptionDigest(part func(kind string, b []byte)) {
	if p := a.Perception.Prometheus; p != nil {
		part("prometheus", p.Source)
	}
	if k := a.Perception.Kubernetes; k != nil {
		part("kubernetes", k.Source)
	}
}
