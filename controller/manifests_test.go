package controller_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	agentsv1 "github.com/agentgitops/reconciler/api/v1"
	"github.com/agentgitops/reconciler/controller"
)

// manifest is one YAML document of config/ or examples/kubernetes/.
type manifest struct {
	file string
	raw  []byte
	kind string
	obj  runtime.Object // decoded strictly; nil for kinds outside the scheme
}

// loadManifests reads every YAML document under the directories, decoding
// the kinds the scheme knows strictly (an unknown or misspelled field is an
// error).
func loadManifests(t *testing.T, dirs ...string) []manifest {
	t.Helper()
	scheme, err := controller.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var out []manifest
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
			for {
				doc, err := r.Read()
				if err != nil {
					break
				}
				if len(bytes.TrimSpace(stripComments(doc))) == 0 {
					continue
				}
				var head struct {
					Kind string `json:"kind"`
				}
				if err := yaml.Unmarshal(doc, &head); err != nil {
					t.Errorf("%s: %v", path, err)
					continue
				}
				m := manifest{file: path, raw: doc, kind: head.Kind}
				if head.Kind != "Kustomization" && head.Kind != "ServiceMonitor" {
					obj, _, err := dec.Decode(doc, nil, nil)
					if err != nil {
						t.Errorf("%s: %s: %v", path, head.Kind, err)
						continue
					}
					m.obj = obj
				}
				out = append(out, m)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range strings.SplitSeq(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

func of[T runtime.Object](ms []manifest) []T {
	var out []T
	for _, m := range ms {
		if o, ok := m.obj.(T); ok {
			out = append(out, o)
		}
	}
	return out
}

// TestManifests checks config/ and examples/kubernetes/: every document
// decodes strictly; the Deployment runs non-root on a read-only root
// filesystem without privilege escalation or capabilities, with probes on
// the port --health-addr serves, resources, and its cache on a volume;
// RBAC grants no wildcard, Secrets only get and only through the
// namespace-bound role; the ServiceMonitor scrapes the Service's port; every
// kustomization names files that exist.
func TestManifests(t *testing.T) {
	ms := loadManifests(t, filepath.Join("..", "config"), filepath.Join("..", "examples", "kubernetes"))

	deps := of[*appsv1.Deployment](ms)
	if len(deps) != 1 {
		t.Fatalf("%d Deployments, want 1", len(deps))
	}
	d := deps[0]
	pod := d.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if pod.SecurityContext != nil && (pod.SecurityContext.SeccompProfile == nil || pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
		t.Error("pod seccompProfile is not RuntimeDefault")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("container has no securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("readOnlyRootFilesystem is not true")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation is not false")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Error("capabilities do not drop ALL (or add some)")
	case sc.Privileged != nil && *sc.Privileged:
		t.Error("privileged container")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources: requests %v limits %v; want cpu and memory requests and a memory limit", c.Resources.Requests, c.Resources.Limits)
	}
	if len(c.Args) == 0 || c.Args[0] != "controller" || !slices.Contains(c.Args, "--leader-elect") {
		t.Errorf("args %v: want the controller subcommand with --leader-elect", c.Args)
	}
	if *d.Spec.Replicas < 2 {
		t.Errorf("replicas %d: want at least 2 (leader election fails over)", *d.Spec.Replicas)
	}
	arg := func(name string) string {
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v
			}
		}
		return ""
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for probe, path := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path {
			t.Errorf("probe for %s missing or wrong: %+v", path, probe)
			continue
		}
		if got, want := ":"+strconv.Itoa(int(ports[probe.HTTPGet.Port.StrVal])), arg("--health-addr"); got != want {
			t.Errorf("probe %s on %s, but --health-addr=%s", path, got, want)
		}
	}
	if got, want := ":"+strconv.Itoa(int(ports["http-metrics"])), arg("--metrics-addr"); got != want {
		t.Errorf("metrics port %s, but --metrics-addr=%s", got, want)
	}
	// Everything the controller writes is on a volume: the root is read-only.
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm.Name
	}
	for _, dir := range []string{arg("--cache-dir"), arg("--work-dir")} {
		if dir == "" || mounts[dir] == "" {
			t.Errorf("directory %q of the args is not a mounted volume (mounts %v)", dir, mounts)
		}
	}
	// The webhooks listen on the port a Service exposes, with the secret
	// from an optional Secret volume, read-only and private to the user.
	if got, want := ":"+strconv.Itoa(int(ports["webhooks"])), arg("--webhook-addr"); got != want || want == ":0" {
		t.Errorf("webhooks port %s, but --webhook-addr=%s", got, want)
	}
	secretDir := filepath.Dir(arg("--webhook-secret-file"))
	var secretVol *corev1.Volume
	for i, v := range pod.Volumes {
		if v.Name == mounts[secretDir] {
			secretVol = &pod.Volumes[i]
		}
	}
	switch {
	case secretVol == nil || secretVol.Secret == nil:
		t.Errorf("--webhook-secret-file=%s is not on a Secret volume (mounts %v)", arg("--webhook-secret-file"), mounts)
	case secretVol.Secret.Optional == nil || !*secretVol.Secret.Optional:
		t.Error("the webhook Secret volume is not optional: pods would not start before the Secret exists")
	case secretVol.Secret.DefaultMode == nil || *secretVol.Secret.DefaultMode&0o007 != 0:
		t.Errorf("the webhook Secret volume's defaultMode lets other users read it (LoadSecret refuses that)")
	}
	exposed := false
	for _, svc := range of[*corev1.Service](ms) {
		for _, p := range svc.Spec.Ports {
			exposed = exposed || p.TargetPort.StrVal == "webhooks"
		}
	}
	if !exposed {
		t.Error("no Service exposes the webhooks port")
	}
	for _, env := range c.Env {
		if env.ValueFrom != nil && env.ValueFrom.SecretKeyRef != nil {
			t.Errorf("the controller's own environment holds Secret %s: repositories' Secrets are read per object", env.ValueFrom.SecretKeyRef.Name)
		}
	}

	// RBAC.
	sa := pod.ServiceAccountName
	roles := map[string][]rbacv1.PolicyRule{}
	for _, r := range of[*rbacv1.ClusterRole](ms) {
		roles["ClusterRole/"+r.Name] = r.Rules
	}
	for _, r := range of[*rbacv1.Role](ms) {
		roles["Role/"+r.Namespace+"/"+r.Name] = r.Rules
	}
	for name, rules := range roles {
		for _, rule := range rules {
			for _, s := range slices.Concat(rule.Verbs, rule.Resources, rule.APIGroups) {
				if s == "*" {
					t.Errorf("%s grants a wildcard: %+v", name, rule)
				}
			}
			if slices.Contains(rule.Resources, "secrets") {
				if name != "ClusterRole/reconciler-controller-secrets" {
					t.Errorf("%s grants access to Secrets: only reconciler-controller-secrets may", name)
				}
				if !slices.Equal(rule.Verbs, []string{"get"}) {
					t.Errorf("%s: Secrets verbs %v, want get only", name, rule.Verbs)
				}
			}
		}
	}
	for _, b := range of[*rbacv1.ClusterRoleBinding](ms) {
		if b.RoleRef.Name == "reconciler-controller-secrets" {
			t.Errorf("ClusterRoleBinding %s grants Secrets in every namespace: bind it per namespace", b.Name)
		}
		if _, ok := roles["ClusterRole/"+b.RoleRef.Name]; !ok {
			t.Errorf("ClusterRoleBinding %s names a missing ClusterRole %s", b.Name, b.RoleRef.Name)
		}
		checkSubjects(t, "ClusterRoleBinding "+b.Name, b.Subjects, sa, d.Namespace)
	}
	secretGrants := 0
	for _, b := range of[*rbacv1.RoleBinding](ms) {
		key := "Role/" + b.Namespace + "/" + b.RoleRef.Name
		if b.RoleRef.Kind == "ClusterRole" {
			key = "ClusterRole/" + b.RoleRef.Name
		}
		if _, ok := roles[key]; !ok {
			t.Errorf("RoleBinding %s/%s names a missing %s", b.Namespace, b.Name, key)
		}
		if b.RoleRef.Name == "reconciler-controller-secrets" {
			secretGrants++
		}
		checkSubjects(t, "RoleBinding "+b.Namespace+"/"+b.Name, b.Subjects, sa, d.Namespace)
	}
	if secretGrants < 2 {
		t.Errorf("%d RoleBindings of the Secrets role, want the controller's namespace's and the example's", secretGrants)
	}
	var leases bool
	for _, rule := range roles["Role/"+d.Namespace+"/reconciler-controller-leader-election"] {
		leases = leases || slices.Contains(rule.Resources, "leases")
	}
	if !leases {
		t.Error("no Role grants the Lease of leader election in the controller's namespace")
	}

	// The ServiceMonitor scrapes the Service's port, which selects the pods.
	var svc *corev1.Service
	for _, s := range of[*corev1.Service](ms) {
		if s.Name == "reconciler-controller-metrics" {
			svc = s
		}
	}
	if svc == nil {
		t.Fatal("no metrics Service")
	}
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Service selects %s=%s, the pods are labelled %v", k, v, d.Spec.Template.Labels)
		}
	}
	var monitors int
	for _, m := range ms {
		if m.kind != "ServiceMonitor" {
			continue
		}
		monitors++
		var sm struct {
			Spec struct {
				Selector  struct{ MatchLabels map[string]string }
				Endpoints []struct{ Port, Path string }
			}
		}
		if err := yaml.Unmarshal(m.raw, &sm); err != nil {
			t.Fatal(err)
		}
		for k, v := range sm.Spec.Selector.MatchLabels {
			if svc.Labels[k] != v {
				t.Errorf("ServiceMonitor selects %s=%s, the Service is labelled %v", k, v, svc.Labels)
			}
		}
		for _, other := range of[*corev1.Service](ms) {
			selected := other != svc
			for k, v := range sm.Spec.Selector.MatchLabels {
				selected = selected && other.Labels[k] == v
			}
			if selected {
				t.Errorf("ServiceMonitor also selects Service %s", other.Name)
			}
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoints %+v, want port %s path /metrics", sm.Spec.Endpoints, svc.Spec.Ports[0].Name)
		}
	}
	if monitors != 1 {
		t.Errorf("%d ServiceMonitors, want 1", monitors)
	}

	// The CRD is the API's, with the status subresource.
	crds := of[*apiextensionsv1.CustomResourceDefinition](ms)
	if len(crds) != 1 || crds[0].Spec.Group != agentsv1.GroupVersion.Group || crds[0].Spec.Versions[0].Subresources == nil || crds[0].Spec.Versions[0].Subresources.Status == nil {
		t.Errorf("CRDs %v: want agentrepositories.%s with a status subresource", len(crds), agentsv1.GroupVersion.Group)
	}

	// The example names its Secrets and nothing else secret.
	ars := of[*agentsv1.AgentRepository](ms)
	if len(ars) != 1 {
		t.Fatalf("%d AgentRepository examples, want 1", len(ars))
	}
	if ar := ars[0]; ar.Spec.URL == "" || ar.Spec.SigningKeySecretRef.Name == "" || ar.Spec.SigningKeySecretRef.Key == "" {
		t.Errorf("example AgentRepository lacks url or signingKeySecretRef: %+v", ar.Spec)
	}
	if n := len(of[*corev1.Secret](ms)); n > 0 {
		t.Errorf("%d Secrets in the manifests: keys never go into git", n)
	}

	// Kustomizations name files that exist.
	for _, m := range ms {
		if m.kind != "Kustomization" {
			continue
		}
		var k struct{ Resources []string }
		if err := yaml.Unmarshal(m.raw, &k); err != nil {
			t.Fatal(err)
		}
		for _, r := range k.Resources {
			if _, err := os.Stat(filepath.Join(filepath.Dir(m.file), r)); err != nil {
				t.Errorf("%s: resource %s: %v", m.file, r, err)
			}
		}
	}
}

func checkSubjects(t *testing.T, what string, subjects []rbacv1.Subject, sa, ns string) {
	t.Helper()
	if len(subjects) != 1 || subjects[0].Kind != "ServiceAccount" || subjects[0].Name != sa || subjects[0].Namespace != ns {
		t.Errorf("%s binds %+v, want only ServiceAccount %s/%s", what, subjects, ns, sa)
	}
}
