package controller_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	agentsv1 "github.com/agentgitops/reconciler/api/v1"
)

// syncBuffer is a bytes.Buffer safe for a process's output and a reader.
type syncBuffer struct {
	testWriter
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestControllerCommand runs the `reconciler controller` binary with only
// the permissions config/rbac grants (the generated ClusterRole, Secrets
// get in the namespace, the Lease): an AgentRepository goes Ready, the
// probes answer, SIGTERM stops it cleanly, and neither the signing key nor
// a provider key it was given shows in its output.
func TestControllerCommand(t *testing.T) {
	requireEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	bin := filepath.Join(t.TempDir(), "reconciler")
	build := exec.Command("go", "build", "-o", bin, "../cmd/reconciler")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// A user with the controller's permissions only.
	const user = "reconciler-controller-test"
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	for _, m := range loadManifests(t, filepath.Join("..", "config", "rbac")) {
		switch o := m.obj.(type) {
		case *rbacv1.ClusterRole:
			o.ResourceVersion = ""
			if err := k8s.Create(ctx, o); err != nil && !strings.Contains(err.Error(), "already exists") {
				t.Fatal(err)
			}
		case *rbacv1.Role:
			// The leader election Role, in the test's namespace.
			o.Namespace = ns
			if err := k8s.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
			if err := k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: o.Name}, Subjects: subject,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: o.Name}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := k8s.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user + "-" + ns}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "reconciler-controller"}}); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "secrets"}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "reconciler-controller-secrets"}}); err != nil {
		t.Fatal(err)
	}
	u, err := testEnv.AddUser(envtest.User{Name: user}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}

	r := newRepo(t)
	keySecret(t, ns, "ledger-key", r.keyPEM)
	const providerKey = "sk-test-never-logged-4f1c"
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "model-keys"},
		Data: map[string][]byte{"openai": []byte(providerKey)}}); err != nil {
		t.Fatal(err)
	}
	health, metricsAddr := freeAddr(t), freeAddr(t)
	var out syncBuffer
	cmd := exec.Command(bin, "controller", "--kubeconfig", kubeconfig, "--namespace", ns,
		"--leader-elect", "--leader-election-namespace", ns, "--leader-election-id", "reconciler-"+ns,
		"--health-addr", health, "--metrics-addr", metricsAddr,
		"--cache-dir", t.TempDir(), "--work-dir", t.TempDir(), "--log-format", "text")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("controller output:\n%s", out.String())
		}
	}()

	obj := newObject(ns, "example", r.url, "ledger-key")
	obj.Spec.ProviderSecretRefs = []agentsv1.EnvSecretRef{{SecretKeyRef: agentsv1.SecretKeyRef{Name: "model-keys", Key: "openai"}, Env: "OPENAI_API_KEY"}}
	if err := k8s.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, ns, "example", 2*time.Minute, "Ready", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.ReadyCondition) })
	if got.Status.LastAppliedRevision != "main@sha1:"+r.head(t) || len(got.Status.OpenProposals) == 0 {
		t.Errorf("status %+v: want the head applied and proposals open", got.Status)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, "http://"+health+path); code != 200 {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("controller exited with %v after SIGTERM", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("controller did not stop within a minute of SIGTERM")
	}
	logs := out.String()
	keyBody := strings.Split(strings.TrimSpace(string(r.keyPEM)), "\n")[1]
	for what, secret := range map[string]string{"the provider key": providerKey, "the signing key": keyBody} {
		if strings.Contains(logs, secret) {
			t.Errorf("the controller's output shows %s", what)
		}
	}
	if strings.Contains(logs, "forbidden") {
		t.Errorf("the controller lacked a permission:\n%s", logs)
	}
}
