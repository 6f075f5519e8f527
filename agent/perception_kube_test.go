package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/agentgitops/reconciler/hclspec"
)

// startKube starts a real kube-apiserver and etcd (controller-runtime's
// envtest, from the binaries .ci/kube-tools builds into the directory
// KUBEBUILDER_ASSETS names) and returns a client and a kubeconfig file
// for it. Without KUBEBUILDER_ASSETS the test skips, except under CI,
// where it fails.
func startKube(t *testing.T) (client.Client, string) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("KUBEBUILDER_ASSETS is unset, and CI must run this test: .ci/run sets it from .ci/kube-tools")
		}
		t.Skip("KUBEBUILDER_ASSETS is unset: build kube-apiserver and etcd with .ci/kube-tools and set KUBEBUILDER_ASSETS to the directory it prints; the kubernetes_get test is skipped")
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("envtest stop: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(file, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	return c, file
}

// kubernetes_get against a real API server: get, list and events of the
// allowed kinds and namespaces; refusals of other kinds and namespaces
// and of Secrets (even listed); only GET requests leave the client.
func TestKubernetesGet(t *testing.T) {
	c, kubeconfig := startKube(t)
	ctx := context.Background()
	for _, ns := range []string{"payments-staging", "other"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	labels := map[string]string{"app": "payments-api"}
	one := int32(1)
	objects := []client.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "payments-api", Namespace: "payments-staging", Labels: labels,
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"big":"copy"}`}},
			Data: map[string]string{"CACHE_TTL": "30s", "NOTE": "token ghp_0123456789abcdefghijABCDEFGHIJ012345"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "ledger-api", Namespace: "payments-staging"}, Data: map[string]string{"CACHE_TTL": "60s"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere", Namespace: "other"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "payments-staging"}, StringData: map[string]string{"password": "hunter2-hunter2"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "payments-api-0", Namespace: "payments-staging"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: "payments-api:1.4.2"}}}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "payments-api", Namespace: "payments-staging"}, Spec: appsv1.DeploymentSpec{
			Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: "payments-api:1.4.2"}}}}}},
		&corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "payments-api.1", Namespace: "payments-staging"},
			InvolvedObject: corev1.ObjectReference{Kind: "Deployment", Name: "payments-api", Namespace: "payments-staging", APIVersion: "apps/v1"},
			Reason:         "ScalingReplicaSet", Message: "Scaled up replica set payments-api-7d4 to 1", Type: "Normal", Count: 3,
			LastTimestamp: metav1.NewTime(time.Date(2026, 11, 17, 9, 58, 0, 0, time.UTC))},
		&corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "ledger-api.1", Namespace: "payments-staging"},
			InvolvedObject: corev1.ObjectReference{Kind: "Deployment", Name: "ledger-api", Namespace: "payments-staging", APIVersion: "apps/v1"},
			Reason:         "ScalingReplicaSet", Message: "Scaled up ledger-api", Type: "Normal",
			LastTimestamp: metav1.NewTime(time.Date(2026, 11, 17, 9, 0, 0, 0, time.UTC))},
	}
	for _, o := range objects {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}

	t.Setenv("RECONCILER_TEST_KUBECONFIG", kubeconfig)
	a := loopAgent(hclspec.ToolKubernetesGet)
	// Secret is listed here as a misconfiguration the loader refuses:
	// the tool must refuse it all the same.
	a.Perception.Kubernetes = &hclspec.Kubernetes{Name: "staging", KubeconfigEnv: "RECONCILER_TEST_KUBECONFIG",
		Kinds: []string{"ConfigMap", "Deployment.apps", "Secret", "Namespace"}, Namespaces: []string{"payments-staging"}}
	tb := senseToolbox(t, a)

	tests := []struct {
		name, args string
		want       []string // substrings, in order
		not        []string
		wantErr    bool
	}{
		{name: "get", args: `{"action":"get","kind":"Deployment.apps","namespace":"payments-staging","name":"payments-api"}`,
			want: []string{`"apiVersion": "apps/v1"`, `"kind": "Deployment"`, `"name": "payments-api"`, `"replicas": 1`}, not: []string{"managedFields"}},
		{name: "get unqualified", args: `{"action":"get","kind":"Deployment","namespace":"payments-staging","name":"payments-api"}`, want: []string{`"kind": "Deployment"`}},
		{name: "get redacted", args: `{"action":"get","kind":"ConfigMap","namespace":"payments-staging","name":"payments-api"}`,
			want: []string{`"CACHE_TTL": "30s"`, `"NOTE": "token [REDACTED]"`}, not: []string{"ghp_", "last-applied-configuration", "managedFields"}},
		{name: "list", args: `{"action":"list","kind":"ConfigMap","namespace":"payments-staging"}`,
			want: []string{"2 ConfigMaps in namespace payments-staging, one JSON object per line:\n", `"name":"ledger-api"`, "\n", `"name":"payments-api"`}, not: []string{"elsewhere"}},
		{name: "list selector", args: `{"action":"list","kind":"ConfigMap","namespace":"payments-staging","label_selector":"app=payments-api"}`,
			want: []string{"1 ConfigMap in namespace payments-staging matching app=payments-api"}, not: []string{"ledger-api"}},
		{name: "list limit", args: `{"action":"list","kind":"ConfigMap","namespace":"payments-staging","limit":1}`,
			want: []string{"1 ConfigMap in namespace payments-staging", "[more ConfigMap exist; narrow the list"}},
		{name: "events", args: `{"action":"events","kind":"Deployment.apps","namespace":"payments-staging","name":"payments-api"}`,
			want: []string{"1 event of Deployment payments-api in namespace payments-staging, oldest first:\n2026-11-17T09:58:00Z Normal ScalingReplicaSet Deployment/payments-api: Scaled up replica set payments-api-7d4 to 1 (x3)"}},
		{name: "events of a kind", args: `{"action":"events","kind":"Deployment.apps","namespace":"payments-staging"}`,
			want: []string{"2 events of Deployment", "Deployment/ledger-api", "Deployment/payments-api"}},
		{name: "cluster-scoped", args: `{"action":"get","kind":"Namespace","name":"payments-staging"}`, want: []string{`"kind": "Namespace"`}},
		{name: "namespace outside", args: `{"action":"get","kind":"ConfigMap","namespace":"other","name":"elsewhere"}`,
			want: []string{`error: refused: namespace "other" is not one kubernetes "staging" allows; the namespaces are payments-staging`}, wantErr: true},
		{name: "kind outside", args: `{"action":"list","kind":"Pod","namespace":"payments-staging"}`,
			want: []string{`error: refused: kind "Pod" is not one kubernetes "staging" allows; the kinds are ConfigMap, Deployment.apps, Secret, Namespace`}, wantErr: true},
		{name: "secret", args: `{"action":"get","kind":"Secret","namespace":"payments-staging","name":"db"}`, want: []string{"error: refused: Secrets are never read"}, not: []string{"hunter2"}, wantErr: true},
		{name: "secret list", args: `{"action":"list","kind":"Secret.v1","namespace":"payments-staging"}`, want: []string{"error: refused: Secrets are never read"}, wantErr: true},
		{name: "secret events", args: `{"action":"events","kind":"Secret","namespace":"payments-staging"}`, want: []string{"error: refused: Secrets are never read"}, wantErr: true},
		{name: "no namespace", args: `{"action":"list","kind":"ConfigMap"}`, want: []string{"error: ConfigMap is namespaced: give a namespace, one of payments-staging"}, wantErr: true},
		{name: "namespace on cluster kind", args: `{"action":"get","kind":"Namespace","namespace":"payments-staging","name":"x"}`, want: []string{"error: Namespace is cluster-scoped: leave namespace out"}, wantErr: true},
		{name: "not found", args: `{"action":"get","kind":"ConfigMap","namespace":"payments-staging","name":"nope"}`, want: []string{`error: ConfigMap "nope" not found in namespace "payments-staging"`}, wantErr: true},
		{name: "bad action", args: `{"action":"delete","kind":"ConfigMap","namespace":"payments-staging","name":"payments-api"}`, want: []string{`error: action must be get, list or events, got "delete"`}, wantErr: true},
		{name: "bad selector", args: `{"action":"list","kind":"ConfigMap","namespace":"payments-staging","label_selector":"app in ("}`, want: []string{"error: label_selector: "}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tb.run(ctx, hclspec.ToolKubernetesGet, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			rest := res.Text
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("result %q lacks %q (in order)", res.Text, w)
				}
				rest = rest[i+len(w):]
			}
			for _, n := range tt.not {
				if strings.Contains(res.Text, n) {
					t.Errorf("result has %q: %q", n, res.Text)
				}
			}
			if res.IsErr != tt.wantErr {
				t.Errorf("IsErr = %v, want %v: %q", res.IsErr, tt.wantErr, res.Text)
			}
		})
	}

	// Whatever asks, the tool's client sends nothing but GET: a write
	// through its configuration fails before it leaves the process.
	t.Run("read-only transport", func(t *testing.T) {
		kr, err := tb.senses.kubeClient()
		if err != nil {
			t.Fatal(err)
		}
		dc, err := dynamic.NewForConfig(kr.config)
		if err != nil {
			t.Fatal(err)
		}
		cm := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "written", "namespace": "payments-staging"}}}
		_, err = dc.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace("payments-staging").Create(ctx, cm, metav1.CreateOptions{})
		if !errors.Is(err, ErrNotReadOnly) {
			t.Fatalf("create through the tool's client: %v, want ErrNotReadOnly", err)
		}
		err = dc.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace("payments-staging").Delete(ctx, "payments-api", metav1.DeleteOptions{})
		if !errors.Is(err, ErrNotReadOnly) {
			t.Fatalf("delete through the tool's client: %v, want ErrNotReadOnly", err)
		}
		var got corev1.ConfigMap
		if err := c.Get(ctx, client.ObjectKey{Namespace: "payments-staging", Name: "written"}, &got); err == nil {
			t.Error("the write reached the API server")
		}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "payments-staging", Name: "payments-api"}, &got); err != nil {
			t.Errorf("the delete reached the API server: %v", err)
		}
	})
	t.Run("kubeconfig unset", func(t *testing.T) {
		b := loopAgent(hclspec.ToolKubernetesGet)
		b.Perception.Kubernetes = &hclspec.Kubernetes{Name: "staging", KubeconfigEnv: "RECONCILER_TEST_KUBECONFIG_UNSET", Kinds: []string{"Pod"}, Namespaces: []string{"payments-staging"}}
		res, _ := senseToolbox(t, b).run(ctx, hclspec.ToolKubernetesGet, `{"action":"list","kind":"Pod","namespace":"payments-staging"}`)
		wantResult(t, res, `error: kubernetes "staging": the variable RECONCILER_TEST_KUBECONFIG_UNSET (kubeconfig_env) is not set in the reconciler's environment; set it to the path of a kubeconfig file`, true)
	})
}
