package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/agentgitops/reconciler/hclspec"
)

// Bounds of kubernetes_get.
const (
	defaultKubeList = 50
	maxKubeList     = 500
)

// ErrNotReadOnly is wrapped by the error of a request kubernetes_get's
// client refused to send: anything but GET.
var ErrNotReadOnly = errors.New("kubernetes_get only reads")

// readOnlyTransport refuses every request but GET and HEAD, whatever the
// credentials allow: kubernetes_get gets, lists and reads events, and a
// bug or a crafted argument that made the client write fails here.
type readOnlyTransport struct{ next http.RoundTripper }

func (t readOnlyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("%w: %s %s refused", ErrNotReadOnly, req.Method, req.URL.Path)
	}
	return t.next.RoundTrip(req)
}

// kubeReader reads one cluster through the dynamic client, for the kinds
// and namespaces of a kubernetes block.
type kubeReader struct {
	block  *hclspec.Kubernetes
	config *rest.Config
	client dynamic.Interface
	mapper meta.RESTMapper
}

// kubeConfig builds the client configuration of a kubernetes block: the
// kubeconfig file named by kubeconfig_env (and its context), or the
// in-cluster service account; every request through it is read-only.
func kubeConfig(k *hclspec.Kubernetes, getenv func(string) (string, bool)) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if k.KubeconfigEnv != "" {
		file, ok := getenv(k.KubeconfigEnv)
		if !ok || file == "" {
			return nil, fmt.Errorf("kubernetes %q: the variable %s (kubeconfig_env) is not set in the reconciler's environment; set it to the path of a kubeconfig file", k.Name, k.KubeconfigEnv)
		}
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: file}
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.Context}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes %q: the kubeconfig named by %s: %w", k.Name, k.KubeconfigEnv, err)
		}
	} else if cfg, err = rest.InClusterConfig(); err != nil {
		return nil, fmt.Errorf("kubernetes %q: no kubeconfig_env and not in a cluster: %w", k.Name, err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return readOnlyTransport{rt} })
	cfg.UserAgent = "agentgitops-reconciler (kubernetes_get)"
	cfg.Timeout = perceptionTimeout
	cfg.QPS, cfg.Burst = 20, 40
	return cfg, nil
}

func newKubeReader(k *hclspec.Kubernetes, cfg *rest.Config) (*kubeReader, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes %q: %w", k.Name, err)
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes %q: %w", k.Name, err)
	}
	return &kubeReader{block: k, config: cfg, client: client, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

func (s *senses) kubeClient() (*kubeReader, error) {
	k := s.task.Agent.Perception.Kubernetes
	if k == nil {
		return nil, fmt.Errorf("agent %q names no kubernetes; its agent block needs kubernetes = \"<name>\"", s.task.Agent.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kube != nil {
		return s.kube, nil
	}
	cfg, err := kubeConfig(k, s.getenv)
	if err != nil {
		return nil, err
	}
	kr, err := newKubeReader(k, cfg)
	if err != nil {
		return nil, err
	}
	s.kube = kr
	return kr, nil
}

// kubeArgs are the arguments of kubernetes_get.
type kubeArgs struct {
	Action        string `json:"action"`
	Kind          string `json:"kind"`
	Namespace     string `json:"namespace"`
	Name          string `json:"name"`
	LabelSelector string `json:"label_selector"`
	Limit         *int   `json:"limit"`
}

// kindFor returns the allow-listed kind that a kind argument names: Kind
// matches an entry Kind (the core group) or, when only one entry has that
// kind, Kind.group; Kind.group matches that entry.
func (kr *kubeReader) kindFor(kind string) (schema.GroupKind, error) {
	if hclspec.IsSecretKind(kind) {
		return schema.GroupKind{}, refusef("Secrets are never read")
	}
	want, wantGroup, qualified := strings.Cut(kind, ".")
	var matches []schema.GroupKind
	for _, e := range kr.block.Kinds {
		k, g, _ := strings.Cut(e, ".")
		if k == want && (!qualified || g == wantGroup) {
			matches = append(matches, schema.GroupKind{Group: g, Kind: k})
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		return schema.GroupKind{}, refusef("kind %q is not one kubernetes %q allows; the kinds are %s", clipRunes(kind, 64), kr.block.Name, strings.Join(kr.block.Kinds, ", "))
	}
	for _, m := range matches {
		if m.Group == "" {
			return m, nil
		}
	}
	return schema.GroupKind{}, fmt.Errorf("kind %q is in more than one group; write it as Kind.group, one of %s", kind, strings.Join(kr.block.Kinds, ", "))
}

// mapping resolves an allowed kind to its resource, refusing Secrets
// whatever the kind was called.
func (kr *kubeReader) mapping(gk schema.GroupKind) (*meta.RESTMapping, error) {
	m, err := kr.mapper.RESTMapping(gk)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil, fmt.Errorf("kind %s is not served by the cluster", gk)
		}
		return nil, fmt.Errorf("resolve kind %s: %v", gk, err)
	}
	if m.Resource.Group == "" && m.Resource.Resource == "secrets" {
		return nil, refusef("Secrets are never read")
	}
	return m, nil
}

func (tb *toolbox) kubernetesGet(ctx context.Context, def *toolDef, args string) (toolResult, error) {
	var a kubeArgs
	if err := decodeArgs(def, args, &a); err != nil {
		return toolResult{}, err
	}
	res := toolResult{Target: strings.TrimSuffix(fmt.Sprintf("%s %s %s/%s", a.Action, a.Kind, a.Namespace, a.Name), "/")}
	if err := required(def, "action", a.Action); err != nil {
		return res, err
	}
	if err := required(def, "kind", a.Kind); err != nil {
		return res, err
	}
	if !slices.Contains([]string{"get", "list", "events"}, a.Action) {
		return res, fmt.Errorf("action must be get, list or events, got %q", clipRunes(a.Action, 32))
	}
	if tb.senses == nil {
		return res, errNoSenses
	}
	kr, err := tb.senses.kubeClient()
	if err != nil {
		return res, err
	}
	gk, err := kr.kindFor(a.Kind)
	if err != nil {
		return res, err
	}
	if a.Namespace != "" && !slices.Contains(kr.block.Namespaces, a.Namespace) {
		return res, refusef("namespace %q is not one kubernetes %q allows; the namespaces are %s", clipRunes(a.Namespace, 64), kr.block.Name, strings.Join(kr.block.Namespaces, ", "))
	}
	ctx, cancel := context.WithTimeout(ctx, perceptionTimeout)
	defer cancel()
	m, err := kr.mapping(gk)
	if err != nil {
		return res, err
	}
	namespaced := m.Scope.Name() == meta.RESTScopeNameNamespace
	switch {
	case namespaced && a.Namespace == "":
		return res, fmt.Errorf("%s is namespaced: give a namespace, one of %s", gk.Kind, strings.Join(kr.block.Namespaces, ", "))
	case !namespaced && a.Namespace != "":
		return res, fmt.Errorf("%s is cluster-scoped: leave namespace out", gk.Kind)
	case !namespaced && a.Action == "events":
		return res, fmt.Errorf("events are read per namespace; %s is cluster-scoped", gk.Kind)
	}
	limit := defaultKubeList
	if a.Limit != nil {
		if limit = *a.Limit; limit < 1 || limit > maxKubeList {
			return res, fmt.Errorf("limit must be from 1 to %d, got %d", maxKubeList, limit)
		}
	}
	if a.LabelSelector != "" {
		if _, err := labels.Parse(a.LabelSelector); err != nil {
			return res, fmt.Errorf("label_selector: %v", err)
		}
	}
	var text string
	switch a.Action {
	case "get":
		if err := required(def, "name", a.Name); err != nil {
			return res, err
		}
		ri := kr.client.Resource(m.Resource).Namespace(a.Namespace)
		obj, err := ri.Get(ctx, a.Name, metav1.GetOptions{})
		if err != nil {
			return res, kubeError(err, gk, a)
		}
		text, err = formatObject(obj)
		if err != nil {
			return res, err
		}
	case "list":
		if a.Name != "" {
			return res, errors.New("list takes no name; use get for one object, label_selector to narrow a list")
		}
		ri := kr.client.Resource(m.Resource).Namespace(a.Namespace)
		list, err := ri.List(ctx, metav1.ListOptions{LabelSelector: a.LabelSelector, Limit: int64(limit)})
		if err != nil {
			return res, kubeError(err, gk, a)
		}
		text, err = formatList(gk, a, list)
		if err != nil {
			return res, err
		}
	case "events":
		sel := fields.Set{"involvedObject.kind": gk.Kind}
		if a.Name != "" {
			sel["involvedObject.name"] = a.Name
		}
		events := kr.client.Resource(schema.GroupVersionResource{Version: "v1", Resource: "events"}).Namespace(a.Namespace)
		list, err := events.List(ctx, metav1.ListOptions{FieldSelector: sel.AsSelector().String(), Limit: int64(limit)})
		if err != nil {
			return res, kubeError(err, schema.GroupKind{Kind: "Event"}, a)
		}
		text = formatEvents(gk, a, list)
	}
	res.Text = tb.senses.redact(text)
	return res, nil
}

// kubeError says what the API server answered, without the server's URL.
func kubeError(err error, gk schema.GroupKind, a kubeArgs) error {
	switch {
	case errors.Is(err, ErrNotReadOnly):
		return err
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s %q not found in namespace %q", gk.Kind, a.Name, a.Namespace)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("the cluster's credentials may not read %s in %q: %s", gk.Kind, a.Namespace, apierrors.ReasonForError(err))
	}
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return fmt.Errorf("the API server answered %d %s: %s", se.Status().Code, se.Status().Reason, se.Status().Message)
	}
	return fmt.Errorf("kubernetes: %s", sanitizeURLError(err))
}

// strip removes what only bloats an object: managed fields and the
// last-applied annotation (a copy of the object, and of whatever it held).
func strip(obj *unstructured.Unstructured) {
	obj.SetManagedFields(nil)
	if ann := obj.GetAnnotations(); ann != nil {
		delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
		if len(ann) == 0 {
			ann = nil
		}
		obj.SetAnnotations(ann)
	}
}

func formatObject(obj *unstructured.Unstructured) (string, error) {
	strip(obj)
	b, err := json.MarshalIndent(obj.Object, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode %s: %v", obj.GetKind(), err)
	}
	return string(b), nil
}

// formatList writes one object per line, as compact JSON, sorted by
// name.
func formatList(gk schema.GroupKind, a kubeArgs, list *unstructured.UnstructuredList) (string, error) {
	items := list.Items
	slices.SortFunc(items, func(x, y unstructured.Unstructured) int {
		return strings.Compare(x.GetNamespace()+"/"+x.GetName(), y.GetNamespace()+"/"+y.GetName())
	})
	var b strings.Builder
	where := "cluster-wide"
	if a.Namespace != "" {
		where = "in namespace " + a.Namespace
	}
	fmt.Fprintf(&b, "%s %s", plural(len(items), gk.Kind), where)
	if a.LabelSelector != "" {
		fmt.Fprintf(&b, " matching %s", a.LabelSelector)
	}
	b.WriteString(", one JSON object per line:\n")
	for i := range items {
		strip(&items[i])
		line, err := json.Marshal(items[i].Object)
		if err != nil {
			return "", fmt.Errorf("encode %s: %v", gk.Kind, err)
		}
		b.Write(line)
		b.WriteString("\n")
	}
	if list.GetContinue() != "" {
		fmt.Fprintf(&b, "[more %s exist; narrow the list with label_selector, or raise limit (at most %d)]\n", gk.Kind, maxKubeList)
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// formatEvents writes one event per line, oldest first: when, type,
// reason, object, message and count.
func formatEvents(gk schema.GroupKind, a kubeArgs, list *unstructured.UnstructuredList) string {
	type event struct {
		when                           time.Time
		typ, reason, obj, msg, counted string
	}
	var evs []event
	for _, it := range list.Items {
		o := it.Object
		str := func(fields ...string) string {
			v, _, _ := unstructured.NestedString(o, fields...)
			return v
		}
		when := firstTime(str("lastTimestamp"), str("eventTime"), str("firstTimestamp"), it.GetCreationTimestamp().UTC().Format(time.RFC3339))
		count, _, _ := unstructured.NestedInt64(o, "count")
		c := ""
		if count > 1 {
			c = fmt.Sprintf(" (x%d)", count)
		}
		evs = append(evs, event{when, str("type"), str("reason"), str("involvedObject", "kind") + "/" + str("involvedObject", "name"), str("message"), c})
	}
	slices.SortStableFunc(evs, func(x, y event) int { return x.when.Compare(y.when) })
	var b strings.Builder
	what := gk.Kind
	if a.Name != "" {
		what += " " + a.Name
	}
	if len(evs) == 0 {
		return fmt.Sprintf("no events of %s in namespace %s", what, a.Namespace)
	}
	fmt.Fprintf(&b, "%s of %s in namespace %s, oldest first:\n", plural(len(evs), "event"), what, a.Namespace)
	for _, e := range evs {
		fmt.Fprintf(&b, "%s %s %s %s: %s%s\n", e.when.UTC().Format(time.RFC3339), e.typ, e.reason, e.obj, e.msg, e.counted)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func firstTime(values ...string) time.Time {
	for _, v := range values {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil && !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}
