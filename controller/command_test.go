package controller_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
	bin := controllerBinary(t)
	kubeconfig := controllerKubeconfig(t, ns)

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

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// controllerBinary builds the reconciler binary once for the package's
// tests.
func controllerBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "reconciler-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "reconciler")
		build := exec.Command("go", "build", "-o", binPath, "../cmd/reconciler")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// controllerKubeconfig returns a kubeconfig of a user with only the
// permissions config/rbac grants the controller (the generated
// ClusterRole, Secrets get in ns, the leader election Role in ns).
func controllerKubeconfig(t *testing.T, ns string) string {
	t.Helper()
	ctx := context.Background()
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
	return kubeconfig
}

// controllerProc is a running `reconciler controller`.
type controllerProc struct {
	cmd     *exec.Cmd
	out     *syncBuffer
	exited  chan error
	metrics string
}

// startController starts bin's controller command with kubeconfig, the
// namespace ns and args, and kills it at the end of the test.
func startController(t *testing.T, bin, kubeconfig, ns string, args ...string) *controllerProc {
	t.Helper()
	p := &controllerProc{out: &syncBuffer{}, exited: make(chan error, 1), metrics: freeAddr(t)}
	all := append([]string{"controller", "--kubeconfig", kubeconfig, "--namespace", ns,
		"--health-addr", freeAddr(t), "--metrics-addr", p.metrics,
		"--cache-dir", t.TempDir(), "--work-dir", t.TempDir(), "--log-format", "text"}, args...)
	p.cmd = exec.Command(bin, all...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("controller %s output:\n%s", p.metrics, p.out.String())
		}
	})
	return p
}

// leads reports whether the process holds the Lease id, from
// client-go's leader_election_master_status on its /metrics.
func (p *controllerProc) leads(t *testing.T, id string) bool {
	t.Helper()
	code, body := httpGet(t, "http://"+p.metrics+"/metrics")
	return code == 200 && strings.Contains(body, `leader_election_master_status{name="`+id+`"} 1`)
}

// TestControllerFailoverProcesses: two `reconciler controller` processes
// elect a leader on one Lease with the controller's own permissions; the
// leader is killed (SIGKILL: no Lease release, as when a node dies), the
// other takes the Lease once it expires and handles the next request and
// the new head, and the ledger has no run twice.
func TestControllerFailoverProcesses(t *testing.T) {
	requireEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	bin := controllerBinary(t)
	kubeconfig := controllerKubeconfig(t, ns)
	r := newRepo(t)
	keySecret(t, ns, "ledger-key", r.keyPEM)
	id := "reconciler-" + ns
	le := []string{"--leader-elect", "--leader-election-namespace", ns, "--leader-election-id", id,
		"--leader-election-lease-duration", "4s", "--leader-election-renew-deadline", "3s", "--leader-election-retry-period", "250ms"}
	procs := []*controllerProc{startController(t, bin, kubeconfig, ns, le...), startController(t, bin, kubeconfig, ns, le...)}
	if err := k8s.Create(ctx, newObject(ns, "example", r.url, "ledger-key")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ns, "example", 2*time.Minute, "Ready", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.ReadyCondition) })
	leader := -1
	deadline := time.Now().Add(30 * time.Second)
	for leader < 0 && time.Now().Before(deadline) {
		for i, p := range procs {
			if p.leads(t, id) {
				if leader >= 0 {
					t.Fatal("both processes lead")
				}
				leader = i
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if leader < 0 {
		t.Fatal("no process reports holding the Lease")
	}
	follower := procs[1-leader]
	if err := procs[leader].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-procs[leader].exited
	start := time.Now()
	head := r.push(t, "after the leader died")
	requestReconcile(t, ns, "example", "after-kill")
	waitFor(t, ns, "example", 2*time.Minute, "request handled by the new leader", func(o *agentsv1.AgentRepository) bool {
		return o.Status.LastHandledReconcileAt == "after-kill" && o.Status.LastAttemptedRevision == "main@sha1:"+head
	})
	t.Logf("the follower handled the request %s after the leader was killed", time.Since(start).Round(time.Millisecond))
	if !follower.leads(t, id) {
		t.Error("the surviving process does not report holding the Lease")
	}
	noDuplicateRuns(t, r.runs(t))
}
