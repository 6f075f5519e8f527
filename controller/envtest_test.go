package controller_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/leaderelection"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	agentsv1 "github.com/agentgitops/reconciler/api/v1"
	"github.com/agentgitops/reconciler/controller"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/sandbox"
	"github.com/agentgitops/reconciler/server"
	"github.com/agentgitops/reconciler/signing"
)

// The tests run on a real kube-apiserver and etcd (controller-runtime's
// envtest), built by .ci/kube-tools into the directory KUBEBUILDER_ASSETS
// names. Without it they skip, except under CI=true, where they fail.
var (
	testEnv   *envtest.Environment
	cfg       *rest.Config
	k8s       client.Client
	envReason string
)

// TestMain lets the test binary be the sandbox's helper (the example's
// exec agents run sandboxed, as in production) and starts the control
// plane.
func TestMain(m *testing.M) {
	sandbox.Init()
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	os.Exit(run(m))
}

func run(m *testing.M) int {
	defer func() {
		if binPath != "" {
			os.RemoveAll(filepath.Dir(binPath))
		}
	}()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		envReason = "KUBEBUILDER_ASSETS is unset: build kube-apiserver and etcd with .ci/kube-tools and set KUBEBUILDER_ASSETS to the directory it prints"
		return m.Run()
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	start := time.Now()
	c, err := env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "envtest: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "envtest: control plane up in %s\n", time.Since(start).Round(time.Millisecond))
	cfg, testEnv = c, env
	scheme, err := controller.Scheme()
	if err == nil {
		k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "envtest client: %v\n", err)
		_ = env.Stop()
		return 1
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "envtest stop: %v\n", err)
	}
	return code
}

func requireEnv(t *testing.T) {
	t.Helper()
	if cfg != nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(envReason)
	}
	t.Skip(envReason)
}

// repo is a desired-state repository: the example repo-layout in a bare
// repository, with the key that signs its ledger trusted in
// .reconciler/keys.
type repo struct {
	bare   string
	url    string
	keyPEM []byte
}

func newRepo(t *testing.T) *repo {
	t.Helper()
	return newRepoEdit(t, nil)
}

// newRepoEdit is newRepo with the example changed by edit before its first
// commit.
func newRepoEdit(t *testing.T, edit func(dir string)) *repo {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../examples/repo-layout")); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(dir)
	}
	for _, s := range []string{"tools/pin-images.sh", "tools/normalise-env.sh"} {
		if err := os.Chmod(filepath.Join(dir, s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	keyFile := filepath.Join(t.TempDir(), "ledger.key")
	signer, err := signing.GenerateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".reconciler/keys/ledger.pub"), signer.PublicKeyPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	bare := gittest.NewBare(t, dir)
	return &repo{bare: bare, url: "file://" + bare, keyPEM: keyPEM}
}

func (r *repo) head(t *testing.T) string {
	return gittest.Git(t, r.bare, "rev-parse", "main")
}

// push commits a change of README.md to main, as a person would, and
// returns the new head.
func (r *repo) push(t *testing.T, line string) string {
	t.Helper()
	work := gittest.Clone(t, r.bare)
	f, err := os.OpenFile(filepath.Join(work, "README.md"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, line)
	f.Close()
	gittest.Git(t, work, "commit", "--quiet", "-am", line)
	gittest.Git(t, work, "push", "--quiet", "origin", "main")
	return r.head(t)
}

// runs reads the ledger of the repository afresh (a new mirror, every
// entry verified) and returns its runs.
func (r *repo) runs(t *testing.T) []*ledger.Run {
	t.Helper()
	ctx := context.Background()
	g, err := gitstore.Open(ctx, r.url, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	l := ledger.New(g, ledger.Options{})
	if _, err := l.Update(ctx); err != nil {
		t.Fatalf("ledger does not verify: %v", err)
	}
	return l.State().Runs
}

// noDuplicateRuns fails when two runs of the ledger answer the same agent
// and trigger.
func noDuplicateRuns(t *testing.T, runs []*ledger.Run) {
	t.Helper()
	seen := map[string]string{}
	for _, rn := range runs {
		k := rn.Agent + "\x00" + rn.Trigger
		if other, ok := seen[k]; ok {
			t.Errorf("agent %s ran twice for trigger %s: runs %s and %s", rn.Agent, rn.Trigger, other, rn.ID)
		}
		seen[k] = rn.ID
	}
}

func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "ar-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func keySecret(t *testing.T, ns, name string, pem []byte) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{"ledger.key": pem}}
	if err := k8s.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

func newObject(ns, name, url, secret string) *agentsv1.AgentRepository {
	return &agentsv1.AgentRepository{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: agentsv1.AgentRepositorySpec{
			URL:                 url,
			Interval:            &metav1.Duration{Duration: time.Hour},
			SigningKeySecretRef: agentsv1.SecretKeyRef{Name: secret, Key: "ledger.key"},
			Identity:            "Reconciler <reconciler@example.com>",
		},
	}
}

// manager is a running controller manager.
type manager struct {
	cacheDir string
	elected  <-chan struct{}
	cancel   context.CancelFunc
	done     chan error
}

type testWriter struct {
	mu sync.Mutex
	t  *testing.T
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startManager starts a manager watching namespace ns only (the tests'
// objects stay apart), with its own cache directory.
func startManager(t *testing.T, ns string, o controller.ManagerOptions) *manager {
	t.Helper()
	o.Namespace = ns
	m := &manager{cacheDir: t.TempDir(), done: make(chan error, 1)}
	o.Controller.CacheDir = m.cacheDir
	o.Controller.WorkDir = t.TempDir()
	o.Controller.SkipNameValidation = true
	o.Controller.Instance = filepath.Base(m.cacheDir)
	level := slog.LevelWarn
	if os.Getenv("RECONCILER_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	o.Controller.Logger = slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: level})).With("manager", filepath.Base(m.cacheDir))
	if o.MetricsAddr == "" {
		o.MetricsAddr = "0"
	}
	if o.HealthAddr == "" {
		o.HealthAddr = "0"
	}
	mgr, rec, err := controller.NewManager(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	m.elected = mgr.Elected()
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		err := mgr.Start(ctx)
		m.done <- errors.Join(err, rec.Close())
	}()
	t.Cleanup(m.stop)
	return m
}

func (m *manager) stop() {
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	<-m.done
}

// reconciled reports whether the manager opened a cache for the object:
// it ran a pass for it.
func (m *manager) reconciled(ns, name string) bool {
	_, err := os.Stat(filepath.Join(m.cacheDir, ns, name))
	return err == nil
}

func get(t *testing.T, ns, name string) *agentsv1.AgentRepository {
	t.Helper()
	obj := &agentsv1.AgentRepository{}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

// waitFor polls the object until cond holds or the timeout passes.
func waitFor(t *testing.T, ns, name string, timeout time.Duration, what string, cond func(*agentsv1.AgentRepository) bool) *agentsv1.AgentRepository {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		obj := get(t, ns, name)
		if cond(obj) {
			return obj
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s: %s: not within %s; status: %+v", ns, name, what, timeout, obj.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func condition(obj *agentsv1.AgentRepository, typ string) *metav1.Condition {
	return apimeta.FindStatusCondition(obj.Status.Conditions, typ)
}

// isTrue reports whether the condition is True for the object's
// generation, and the whole status is patched (the patch helper patches the
// conditions first): as kstatus reads it.
func isTrue(obj *agentsv1.AgentRepository, typ string) bool {
	c := condition(obj, typ)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == obj.Generation &&
		obj.Status.ObservedGeneration == obj.Generation
}

func update(t *testing.T, ns, name string, edit func(*agentsv1.AgentRepository)) {
	t.Helper()
	for range 10 {
		obj := get(t, ns, name)
		edit(obj)
		err := k8s.Update(context.Background(), obj)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "the object has been modified") {
			t.Fatal(err)
		}
	}
	t.Fatal("update: conflicts")
}

func requestReconcile(t *testing.T, ns, name, token string) {
	t.Helper()
	update(t, ns, name, func(obj *agentsv1.AgentRepository) {
		if obj.Annotations == nil {
			obj.Annotations = map[string]string{}
		}
		obj.Annotations[meta.ReconcileRequestAnnotation] = token
	})
}

// TestReadyRequestSuspend: an AgentRepository on the example repository
// becomes Ready with the head applied, its agents' proposals open and in the
// ledger (with events); the requestedAt annotation starts a pass that
// fetches a new head and is echoed in lastHandledReconcileAt; while
// suspended nothing runs, and resuming runs again.
func TestReadyRequestSuspend(t *testing.T) {
	requireEnv(t)
	ns := namespace(t)
	r := newRepo(t)
	keySecret(t, ns, "ledger-key", r.keyPEM)
	m := startManager(t, ns, controller.ManagerOptions{})
	ctx := context.Background()
	if err := k8s.Create(ctx, newObject(ns, "example", r.url, "ledger-key")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	obj := waitFor(t, ns, "example", 2*time.Minute, "Ready", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.ReadyCondition) })
	t.Logf("Ready after %s", time.Since(start).Round(time.Millisecond))
	if want := "main@sha1:" + r.head(t); obj.Status.LastAppliedRevision != want {
		t.Errorf("lastAppliedRevision = %q, want %q", obj.Status.LastAppliedRevision, want)
	}
	if obj.Status.ObservedGeneration != obj.Generation {
		t.Errorf("observedGeneration = %d, want %d", obj.Status.ObservedGeneration, obj.Generation)
	}
	if obj.Status.LedgerSeq == 0 || obj.Status.LedgerHead == "" {
		t.Errorf("ledger not in status: seq %d head %q", obj.Status.LedgerSeq, obj.Status.LedgerHead)
	}
	if len(obj.Status.OpenProposals) == 0 {
		t.Errorf("no open proposals in status, want the example's agents' proposals")
	}
	for _, typ := range []string{meta.ReconcilingCondition, meta.StalledCondition} {
		if c := condition(obj, typ); c != nil {
			t.Errorf("%s condition left after a successful pass: %+v", typ, c)
		}
	}
	runs := r.runs(t)
	opened := 0
	for _, rn := range runs {
		if rn.Opened != nil {
			opened++
		}
	}
	if opened != len(obj.Status.OpenProposals) {
		t.Errorf("ledger has %d opened proposals, status lists %d: %v", opened, len(obj.Status.OpenProposals), obj.Status.OpenProposals)
	}
	if got, want := ledgerSeq(t, r), obj.Status.LedgerSeq; got != want {
		t.Errorf("ledger seq %d, status says %d", got, want)
	}
	// Each agent of the example has its own part, with its last run as
	// the ledger has it and a Ready condition.
	agents := map[string]agentsv1.AgentState{}
	for _, a := range obj.Status.Agents {
		agents[a.Name] = a
	}
	lastRun := map[string]*ledger.Run{}
	for _, rn := range runs {
		if prev := lastRun[rn.Agent]; prev == nil || !rn.Started.Before(prev.Started) {
			lastRun[rn.Agent] = rn
		}
	}
	for _, name := range []string{"env-normaliser", "image-pinner", "incident-responder"} {
		a, ok := agents[name]
		if !ok {
			t.Errorf("status.agents lacks %s: %+v", name, obj.Status.Agents)
			continue
		}
		if !slices.ContainsFunc(a.Conditions, func(c metav1.Condition) bool { return c.Type == meta.ReadyCondition }) {
			t.Errorf("agent %s has no Ready condition: %+v", name, a.Conditions)
		}
		if rn := lastRun[name]; rn != nil && a.LastRun != rn.ID {
			t.Errorf("agent %s: status last run %q, the ledger's is %s", name, a.LastRun, rn.ID)
		}
	}
	proposals := 0
	for _, a := range obj.Status.Agents {
		proposals += a.OpenProposals
	}
	if proposals != len(obj.Status.OpenProposals) {
		t.Errorf("agents' open proposals add up to %d, the repository lists %d", proposals, len(obj.Status.OpenProposals))
	}
	// The events API folds events alike but for their note into a series:
	// wait for the first.
	waitEvent(t, ns, "example", controller.EventProposalOpened, 1)

	// requestedAt: a new head is fetched at once although the interval is
	// an hour.
	head2 := r.push(t, "a person's change")
	requestReconcile(t, ns, "example", "req-1")
	obj = waitFor(t, ns, "example", time.Minute, "request handled", func(o *agentsv1.AgentRepository) bool {
		return o.Status.LastHandledReconcileAt == "req-1"
	})
	if want := "main@sha1:" + head2; obj.Status.LastAttemptedRevision != want || obj.Status.LastAppliedRevision != want {
		t.Errorf("after the request: attempted %q applied %q, want %q", obj.Status.LastAttemptedRevision, obj.Status.LastAppliedRevision, want)
	}

	// Suspended: neither a request nor a new head starts a pass.
	update(t, ns, "example", func(o *agentsv1.AgentRepository) { o.Spec.Suspend = true })
	head3 := r.push(t, "another change")
	requestReconcile(t, ns, "example", "req-2")
	time.Sleep(3 * time.Second)
	obj = get(t, ns, "example")
	if obj.Status.LastHandledReconcileAt != "req-1" || obj.Status.LastAttemptedRevision != "main@sha1:"+head2 {
		t.Errorf("suspended object reconciled: handled %q attempted %q", obj.Status.LastHandledReconcileAt, obj.Status.LastAttemptedRevision)
	}
	// Resumed: the next pass fetches head3.
	update(t, ns, "example", func(o *agentsv1.AgentRepository) { o.Spec.Suspend = false })
	waitFor(t, ns, "example", time.Minute, "resumed pass", func(o *agentsv1.AgentRepository) bool {
		return o.Status.LastAttemptedRevision == "main@sha1:"+head3 && isTrue(o, meta.ReadyCondition)
	})
	noDuplicateRuns(t, r.runs(t))

	// Deleted: its reconciler is closed (the cache's lock is released);
	// the repository and the ledger stay as they are.
	cache := filepath.Join(m.cacheDir, ns, "example")
	open := func() error {
		g, err := gitstore.Open(ctx, r.url, gitstore.Options{CacheDir: cache, NoFetch: true, LockTimeout: 100 * time.Millisecond})
		if err == nil {
			g.Close()
		}
		return err
	}
	if err := open(); err == nil {
		t.Fatal("the cache of a live object opened in another reconciler: its lock is not held")
	}
	seq := ledgerSeq(t, r)
	if err := k8s.Delete(ctx, get(t, ns, "example")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for open() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the deleted object's reconciler still holds its cache: %v", open())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := ledgerSeq(t, r); got != seq {
		t.Errorf("ledger moved from %d to %d after the object was deleted", seq, got)
	}
	if r.head(t) != head3 {
		t.Errorf("main moved after the object was deleted")
	}
}

func ledgerSeq(t *testing.T, r *repo) uint64 {
	t.Helper()
	ctx := context.Background()
	g, err := gitstore.Open(ctx, r.url, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	l := ledger.New(g, ledger.Options{})
	if _, err := l.Update(ctx); err != nil {
		t.Fatal(err)
	}
	return l.State().Seq
}

// waitEvent waits for at least n events of reason about the object.
func waitEvent(t *testing.T, ns, name, reason string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, e := range list.Items {
			if e.Reason == reason && e.Regarding.Name == name && e.Regarding.Kind == agentsv1.AgentRepositoryKind {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s events about %s, want %d", got, reason, name, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestStalled: a signing key the ledger does not trust, and a Secret that
// holds no key, make the object Stalled (not Ready) with the cause in the
// message, and no pass retries it hot.
func TestStalled(t *testing.T) {
	requireEnv(t)
	ns := namespace(t)
	r := newRepo(t)
	keySecret(t, ns, "good", r.keyPEM)
	otherFile := filepath.Join(t.TempDir(), "other.key")
	if _, err := signing.GenerateKey(otherFile); err != nil {
		t.Fatal(err)
	}
	otherPEM, err := os.ReadFile(otherFile)
	if err != nil {
		t.Fatal(err)
	}
	keySecret(t, ns, "untrusted", otherPEM)
	keySecret(t, ns, "garbage", []byte("not a key"))
	startManager(t, ns, controller.ManagerOptions{})
	ctx := context.Background()
	if err := k8s.Create(ctx, newObject(ns, "good", r.url, "good")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ns, "good", 2*time.Minute, "Ready", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.ReadyCondition) })
	seq := ledgerSeq(t, r)

	if err := k8s.Create(ctx, newObject(ns, "untrusted", r.url, "untrusted")); err != nil {
		t.Fatal(err)
	}
	obj := waitFor(t, ns, "untrusted", time.Minute, "Stalled", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.StalledCondition) })
	st := condition(obj, meta.StalledCondition)
	if st.Reason != "LedgerUntrusted" {
		t.Errorf("Stalled reason %q, want LedgerUntrusted; message %q", st.Reason, st.Message)
	}
	if rd := condition(obj, meta.ReadyCondition); rd == nil || rd.Status != metav1.ConditionFalse {
		t.Errorf("Ready = %+v, want False", rd)
	}
	if got := ledgerSeq(t, r); got != seq {
		t.Errorf("an untrusted key appended to the ledger: seq %d -> %d", seq, got)
	}

	if err := k8s.Create(ctx, newObject(ns, "garbage", r.url, "garbage")); err != nil {
		t.Fatal(err)
	}
	obj = waitFor(t, ns, "garbage", time.Minute, "Stalled", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.StalledCondition) })
	st = condition(obj, meta.StalledCondition)
	if st.Reason != controller.ReasonInvalidSigningKey || !strings.Contains(st.Message, "no PEM block") {
		t.Errorf("Stalled = %s %q, want %s naming the missing PEM block", st.Reason, st.Message, controller.ReasonInvalidSigningKey)
	}
	if strings.Contains(st.Message, "not a key") {
		t.Errorf("the condition quotes the Secret's content: %q", st.Message)
	}
	waitEvent(t, ns, "garbage", controller.EventStalled, 1)
	// No hot retry: a stalled object is not passed again before its
	// interval (an hour); every pass patches its status.
	rv := get(t, ns, "garbage").ResourceVersion
	time.Sleep(3 * time.Second)
	if got := get(t, ns, "garbage").ResourceVersion; got != rv {
		t.Errorf("stalled object passed again within 3s: resourceVersion %s -> %s", rv, got)
	}
}

// TestLeaderElectionFailover: of two managers electing a leader on one
// Lease, only the leader reconciles; when it stops, the other takes over
// and continues without a duplicate run.
func TestLeaderElectionFailover(t *testing.T) {
	requireEnv(t)
	ns := namespace(t)
	r := newRepo(t)
	keySecret(t, ns, "ledger-key", r.keyPEM)
	le := controller.ManagerOptions{
		LeaderElection: leaderelection.Options{Enable: true, ReleaseOnCancel: true,
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond},
		LeaderElectionID:        "reconciler-test-" + ns,
		LeaderElectionNamespace: ns,
	}
	a := startManager(t, ns, le)
	select {
	case <-a.elected:
	case <-time.After(30 * time.Second):
		t.Fatal("first manager not elected")
	}
	b := startManager(t, ns, le)
	ctx := context.Background()
	if err := k8s.Create(ctx, newObject(ns, "example", r.url, "ledger-key")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ns, "example", 2*time.Minute, "Ready", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.ReadyCondition) })
	select {
	case <-b.elected:
		t.Fatal("both managers elected")
	default:
	}
	if !a.reconciled(ns, "example") || b.reconciled(ns, "example") {
		t.Fatalf("leader reconciled: %v, follower reconciled: %v; want only the leader", a.reconciled(ns, "example"), b.reconciled(ns, "example"))
	}

	start := time.Now()
	a.stop()
	select {
	case <-b.elected:
		t.Logf("failover in %s", time.Since(start).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("second manager not elected after the leader stopped")
	}
	head := r.push(t, "after failover")
	requestReconcile(t, ns, "example", "after-failover")
	waitFor(t, ns, "example", time.Minute, "request handled by the new leader", func(o *agentsv1.AgentRepository) bool {
		return o.Status.LastHandledReconcileAt == "after-failover" && o.Status.LastAttemptedRevision == "main@sha1:"+head
	})
	if !b.reconciled(ns, "example") {
		t.Error("the new leader did not reconcile")
	}
	noDuplicateRuns(t, r.runs(t))
}

// TestOverlappingShards: two controllers whose label selectors both match
// one object (a labelling mistake) both reconcile it; the ledger's claims
// keep their passes from running anything twice.
func TestOverlappingShards(t *testing.T) {
	requireEnv(t)
	ns := namespace(t)
	r := newRepo(t)
	keySecret(t, ns, "ledger-key", r.keyPEM)
	a := startManager(t, ns, controller.ManagerOptions{WatchLabelSelector: controller.ShardKeyLabel + " in (shard1,shard2)"})
	b := startManager(t, ns, controller.ManagerOptions{WatchLabelSelector: controller.ShardKeyLabel + "=shard1"})
	c := startManager(t, ns, controller.ManagerOptions{WatchLabelSelector: controller.ShardKeyLabel + "=shard3"})
	ctx := context.Background()
	obj := newObject(ns, "example", r.url, "ledger-key")
	obj.Labels = map[string]string{controller.ShardKeyLabel: "shard1"}
	if err := k8s.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ns, "example", 2*time.Minute, "Ready", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.ReadyCondition) })
	// Both shards pass on each request. (Their status patches race: two
	// writers of one status, each patching its own diff, can leave
	// lastHandledReconcileAt at an older request; only the ledger is
	// checked here.)
	for i := range 3 {
		requestReconcile(t, ns, "example", fmt.Sprintf("overlap-%d", i))
		time.Sleep(time.Second)
	}
	deadline := time.Now().Add(time.Minute)
	for !(a.reconciled(ns, "example") && b.reconciled(ns, "example")) {
		if time.Now().After(deadline) {
			t.Fatalf("both overlapping shards should reconcile: a %v b %v", a.reconciled(ns, "example"), b.reconciled(ns, "example"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c.reconciled(ns, "example") {
		t.Error("a shard whose selector does not match reconciled the object")
	}
	// The overlap is reported (by whichever saw the other's claims).
	waitEvent(t, ns, "example", controller.EventOverlapping, 1)
	// Let both finish their passes, then check the ledger.
	a.stop()
	b.stop()
	runs := r.runs(t)
	if len(runs) == 0 {
		t.Fatal("no runs in the ledger")
	}
	noDuplicateRuns(t, runs)
	// One proposal per agent, and one branch per proposal.
	proposals := map[string]int{}
	for _, rn := range runs {
		if rn.Opened != nil {
			proposals[rn.Agent]++
		}
	}
	for agent, n := range proposals {
		if n != 1 {
			t.Errorf("agent %s opened %d proposals, want 1", agent, n)
		}
	}
	if len(proposals) == 0 {
		t.Error("no proposal opened")
	}
	branches := gittest.Git(t, r.bare, "for-each-ref", "--format=%(refname)", "refs/heads/agents/")
	if got := len(strings.Fields(branches)); got != len(proposals) {
		t.Errorf("%d proposal branches for %d proposals:\n%s", got, len(proposals), branches)
	}
}

// TestSchemaRejects: the CRD's schema (generated from the Go types)
// rejects a bad object with a message naming the field.
func TestSchemaRejects(t *testing.T) {
	requireEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, field string
		edit        func(*agentsv1.AgentRepository)
	}{
		{"ftp", "spec.url", func(o *agentsv1.AgentRepository) { o.Spec.URL = "ftp://example.com/repo.git" }},
		{"escape", "spec.cacheVolumePath", func(o *agentsv1.AgentRepository) { o.Spec.CacheVolumePath = "../../etc" }},
		{"nokey", "spec.signingKeySecretRef.name", func(o *agentsv1.AgentRepository) { o.Spec.SigningKeySecretRef.Name = "" }},
		{"env", "spec.providerSecretRefs[0].env", func(o *agentsv1.AgentRepository) {
			o.Spec.ProviderSecretRefs = []agentsv1.EnvSecretRef{{SecretKeyRef: agentsv1.SecretKeyRef{Name: "k", Key: "k"}, Env: "NOT-A-NAME"}}
		}},
	} {
		obj := newObject(ns, tc.name, "https://git.example.com/repo.git", "key")
		tc.edit(obj)
		err := k8s.Create(ctx, obj)
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: create error %v, want one naming %s", tc.name, err, tc.field)
		}
	}
	// The defaults apply: branch main, interval 5m.
	obj := newObject(ns, "defaults", "https://git.example.com/repo.git", "key")
	obj.Spec.Interval = nil
	obj.Spec.Suspend = true
	if err := k8s.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	if got := get(t, ns, "defaults"); got.Spec.Branch != "main" || got.Spec.Interval == nil || got.Spec.Interval.Duration != 5*time.Minute {
		t.Errorf("defaults: branch %q interval %v, want main and 5m", got.Spec.Branch, got.Spec.Interval)
	}
}

// TestInvalidSpecStalled: a push that breaks the spec makes the object
// Stalled with the diagnostics in the message, the last good spec still
// in force (lastAppliedRevision), and a fix makes it Ready again.
func TestInvalidSpecStalled(t *testing.T) {
	requireEnv(t)
	ns := namespace(t)
	r := newRepo(t)
	keySecret(t, ns, "ledger-key", r.keyPEM)
	startManager(t, ns, controller.ManagerOptions{})
	ctx := context.Background()
	if err := k8s.Create(ctx, newObject(ns, "example", r.url, "ledger-key")); err != nil {
		t.Fatal(err)
	}
	good := r.head(t)
	waitFor(t, ns, "example", 2*time.Minute, "Ready", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.ReadyCondition) })

	work := gittest.Clone(t, r.bare)
	if err := os.WriteFile(filepath.Join(work, "agents", "broken.hcl"), []byte("agent \"broken\" {\n  provider = \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, work, "add", "agents/broken.hcl")
	gittest.Git(t, work, "commit", "--quiet", "-m", "break the spec")
	gittest.Git(t, work, "push", "--quiet", "origin", "main")
	bad := r.head(t)
	requestReconcile(t, ns, "example", "after-break")
	obj := waitFor(t, ns, "example", time.Minute, "Stalled", func(o *agentsv1.AgentRepository) bool {
		return o.Status.LastHandledReconcileAt == "after-break" && isTrue(o, meta.StalledCondition)
	})
	st := condition(obj, meta.StalledCondition)
	if !strings.Contains(st.Message, "broken.hcl") {
		t.Errorf("Stalled message %q does not name the file with the error", st.Message)
	}
	if obj.Status.LastAppliedRevision != "main@sha1:"+good || obj.Status.LastAttemptedRevision != "main@sha1:"+bad {
		t.Errorf("applied %q attempted %q, want the last good %s and the bad %s", obj.Status.LastAppliedRevision, obj.Status.LastAttemptedRevision, good, bad)
	}

	gittest.Git(t, work, "rm", "--quiet", "agents/broken.hcl")
	gittest.Git(t, work, "commit", "--quiet", "-m", "fix the spec")
	gittest.Git(t, work, "push", "--quiet", "origin", "main")
	fixed := r.head(t)
	requestReconcile(t, ns, "example", "after-fix")
	waitFor(t, ns, "example", time.Minute, "Ready after the fix", func(o *agentsv1.AgentRepository) bool {
		return o.Status.LastHandledReconcileAt == "after-fix" && isTrue(o, meta.ReadyCondition) &&
			o.Status.LastAppliedRevision == "main@sha1:"+fixed && condition(o, meta.StalledCondition) == nil
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil {
				return resp.StatusCode, string(b)
			}
			err = rerr
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestManagerEndpoints: the manager serves /healthz and /readyz on the
// health address, and /metrics with the reconciles of AgentRepository
// objects counted on its registry.
func TestManagerEndpoints(t *testing.T) {
	requireEnv(t)
	ns := namespace(t)
	r := newRepo(t)
	keySecret(t, ns, "ledger-key", r.keyPEM)
	metricsAddr, healthAddr := freeAddr(t), freeAddr(t)
	startManager(t, ns, controller.ManagerOptions{MetricsAddr: metricsAddr, HealthAddr: healthAddr})
	if err := k8s.Create(context.Background(), newObject(ns, "example", r.url, "ledger-key")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ns, "example", 2*time.Minute, "Ready", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.ReadyCondition) })
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, "http://"+healthAddr+path); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	code, body := httpGet(t, "http://"+metricsAddr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	want := `controller_runtime_reconcile_total{controller="agentrepository",result="requeue_after"}`
	found := false
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, want+" "); ok && v != "0" {
			found = true
		}
	}
	if !found {
		t.Errorf("/metrics has no non-zero %s:\n%s", want, grepLines(body, "controller_runtime_reconcile_total"))
	}
	// The daemon's series, per repository.
	repo := `repository="` + ns + `/example"`
	for _, series := range []string{"reconciler_ledger_entries_total{" + repo + "}", "reconciler_spec_load_success{" + repo + "} 1",
		`reconciler_proposals_open{agent="image-pinner",` + repo + `} 1`} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics lacks %s:\n%s", series, grepLines(body, repo))
		}
	}
}

func grepLines(body, s string) string {
	var out []string
	for line := range strings.SplitSeq(body, "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestSignedMergeRecorded: a reviewer's merge of a proposal, signed with the
// SSH key reviewers.hcl gives her (unsigned merges not accepted), is
// recorded by the controller's next pass as the approval, the proposal is
// no longer open, and a ProposalMerged event is recorded.
func TestSignedMergeRecorded(t *testing.T) {
	requireEnv(t)
	keyFile := filepath.Join(t.TempDir(), "rita")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rita", "-f", keyFile).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
		t.Skipf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(keyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	r := newRepoEdit(t, func(dir string) {
		p := filepath.Join(dir, "reviewers.hcl")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "accept_unsigned = true", "accept_unsigned = false")
		s = strings.Replace(s, `member "rita" {`, `member "rita" {
    signing_key = "`+strings.TrimSpace(string(pub))+`"`, 1)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	ns := namespace(t)
	keySecret(t, ns, "ledger-key", r.keyPEM)
	hookAddr := freeAddr(t)
	startManager(t, ns, controller.ManagerOptions{WebhookAddr: hookAddr, WebhookSecret: server.NewSecret("hook-secret")})
	if err := k8s.Create(context.Background(), newObject(ns, "example", r.url, "ledger-key")); err != nil {
		t.Fatal(err)
	}
	obj := waitFor(t, ns, "example", 2*time.Minute, "Ready", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.ReadyCondition) })
	var branch string
	for _, p := range obj.Status.OpenProposals {
		if b, ok := strings.CutPrefix(p, "image-pinner:"); ok {
			branch = b
		}
	}
	if branch == "" {
		t.Fatalf("no open proposal of image-pinner: %v", obj.Status.OpenProposals)
	}

	work := gittest.Clone(t, r.bare)
	merge := exec.Command("git", "-c", "gpg.format=ssh", "-c", "user.signingKey="+keyFile,
		"merge", "-S", "-q", "--no-ff", "-m", "Merge "+branch, "origin/"+branch)
	merge.Dir = work
	merge.Env = gittest.Env("Rita Reviewer", "rita@example.com")
	if out, err := merge.CombinedOutput(); err != nil {
		t.Fatalf("signed merge: %v\n%s", err, out)
	}
	gittest.Git(t, work, "push", "--quiet", "origin", "main")
	requestReconcile(t, ns, "example", "after-merge")
	obj = waitFor(t, ns, "example", time.Minute, "merge observed", func(o *agentsv1.AgentRepository) bool {
		return o.Status.LastHandledReconcileAt == "after-merge" && isTrue(o, meta.ReadyCondition)
	})
	for _, p := range obj.Status.OpenProposals {
		if strings.HasPrefix(p, "image-pinner:") {
			t.Errorf("merged proposal still open: %v", obj.Status.OpenProposals)
		}
	}
	g, err := gitstore.Open(context.Background(), r.url, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	es, err := ledger.New(g, ledger.Options{}).Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var approved, merged bool
	var mergedRun string
	for _, e := range es {
		if e.Agent != "image-pinner" {
			continue
		}
		switch e.Type {
		case ledger.ProposalApproved:
			a := e.Approval
			approved = a != nil && a.Method == ledger.ApprovalSSH && a.Member == "rita" && a.Via == "merge"
		case ledger.ProposalMerged:
			merged = true
			mergedRun = e.RunID
		case ledger.PolicyViolation:
			t.Errorf("violation recorded for a signed, approved merge: %s", e.Error)
		}
	}
	if !approved || !merged {
		t.Errorf("ledger: approved by rita's SSH-signed merge %v, merged %v; want both", approved, merged)
	}
	waitEvent(t, ns, "example", controller.EventProposalMerged, 1)

	// The merged change is reverted through the controller's API, on any
	// replica: the leader's pass opens the revert proposal, linked to the
	// run it reverts.
	revertPath := "http://" + hookAddr + "/api/v1/namespaces/" + ns + "/agentrepositories/example/runs/" + mergedRun + "/revert"
	req, err := http.NewRequest(http.MethodPost, revertPath, strings.NewReader(`{"id":"rollback-1","by":"rita","reason":"pinned the wrong image"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer hook-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("revert request: %d %s, want 202", resp.StatusCode, b)
	}
	waitFor(t, ns, "example", 2*time.Minute, "revert request answered", func(o *agentsv1.AgentRepository) bool {
		_, pending := o.Annotations[controller.RequestsAnnotation]
		return !pending
	})
	var revert *ledger.Run
	for _, rn := range r.runs(t) {
		if rn.Reverts == mergedRun {
			revert = rn
		}
	}
	if revert == nil || revert.Opened == nil || revert.Agent != "image-pinner" {
		t.Fatalf("no revert proposal of run %s: %+v", mergedRun, revert)
	}
	noDuplicateRuns(t, r.runs(t))
}

// TestGitHookRoutes: a signed push event at /hooks/git sets the
// requestedAt annotation of the objects of the pushed repository only, and
// the pass it starts fetches the new head; a bad signature is refused and
// routes nothing.
func TestGitHookRoutes(t *testing.T) {
	requireEnv(t)
	ns := namespace(t)
	r := newRepo(t)
	keySecret(t, ns, "ledger-key", r.keyPEM)
	hookAddr := freeAddr(t)
	startManager(t, ns, controller.ManagerOptions{WebhookAddr: hookAddr, WebhookSecret: server.NewSecret("hook-secret")})
	ctx := context.Background()
	if err := k8s.Create(ctx, newObject(ns, "pushed", r.url, "ledger-key")); err != nil {
		t.Fatal(err)
	}
	other := newObject(ns, "other", "https://git.example.com/platform/other.git", "ledger-key")
	other.Spec.Suspend = true
	if err := k8s.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ns, "pushed", 2*time.Minute, "Ready", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.ReadyCondition) })
	head := r.push(t, "pushed through the hook")
	body := []byte(`{"ref":"refs/heads/main","repository":{"clone_url":"` + r.url + `/"}}`)
	postTo := func(path, event, sig string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+hookAddr+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Hub-Signature-256", "sha256="+sig)
		req.Header.Set("X-GitHub-Event", event)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	post := func(sig string) (int, string) { t.Helper(); return postTo("/hooks/git", "push", sig) }
	mac := hmac.New(sha256.New, []byte("hook-secret"))
	mac.Write(body)
	good := hex.EncodeToString(mac.Sum(nil))
	// A ping (or any event but a push) is answered and routes nothing.
	var code0 int
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code0, _ = postTo("/hooks/git", "ping", good); code0 != 0 {
			break
		}
	}
	if code, msg := postTo("/hooks/git", "ping", good); code != http.StatusOK || !strings.Contains(msg, `"requested":0`) {
		t.Errorf("ping: %d %s, want 200 routing nothing", code, msg)
	}
	if _, ok := get(t, ns, "pushed").Annotations[meta.ReconcileRequestAnnotation]; ok {
		t.Fatal("a ping requested a reconcile")
	}
	if code, msg := post(strings.Repeat("0", len(good))); code != http.StatusUnauthorized {
		t.Errorf("bad signature: %d %s, want 401", code, msg)
	}
	if _, ok := get(t, ns, "pushed").Annotations[meta.ReconcileRequestAnnotation]; ok {
		t.Fatal("a push with a bad signature requested a reconcile")
	}
	var code int
	var msg string
	deadline := time.Now().Add(20 * time.Second)
	for code, msg = post(good); code != http.StatusOK && time.Now().Before(deadline); code, msg = post(good) {
		time.Sleep(100 * time.Millisecond)
	}
	if code != http.StatusOK || !strings.Contains(msg, `"requested":1`) {
		t.Fatalf("push: %d %s, want 200 with one object requested", code, msg)
	}
	obj := waitFor(t, ns, "pushed", time.Minute, "pass after the push", func(o *agentsv1.AgentRepository) bool {
		tok := o.Annotations[meta.ReconcileRequestAnnotation]
		return tok != "" && o.Status.LastHandledReconcileAt == tok
	})
	if obj.Status.LastAttemptedRevision != "main@sha1:"+head {
		t.Errorf("after the hook: attempted %q, want %s", obj.Status.LastAttemptedRevision, head)
	}
	if _, ok := get(t, ns, "other").Annotations[meta.ReconcileRequestAnnotation]; ok {
		t.Error("the push was routed to an object of another repository")
	}

	// A forge's review event at /hooks/forge routes the same way.
	before := get(t, ns, "pushed").Annotations[meta.ReconcileRequestAnnotation]
	time.Sleep(10 * time.Millisecond)
	if code, msg := postTo("/hooks/forge", "pull_request_review", good); code != http.StatusOK || !strings.Contains(msg, `"requested":1`) {
		t.Fatalf("review event: %d %s, want 200 with one object requested", code, msg)
	}
	if after := get(t, ns, "pushed").Annotations[meta.ReconcileRequestAnnotation]; after == before {
		t.Error("the review event did not request a reconcile")
	}
	if code, msg := postTo("/hooks/forge", "pull_request_review", strings.Repeat("0", len(good))); code != http.StatusUnauthorized {
		t.Errorf("review event with a bad signature: %d %s, want 401", code, msg)
	}
}

// TestRequestRoutes: in controller mode, an Alertmanager notification at
// /hooks/alertmanager/{namespace}/{name} and a manual run at
// /api/v1/namespaces/{namespace}/agentrepositories/{name}/agents/{agent}/runs
// are queued on the object (any replica may receive them) and run by the
// next pass, once each, with the trigger ids the daemon gives them; the
// answered requests leave the annotation. Without the bearer secret, or for
// an object outside the shard, nothing is queued. The secret is read from a
// file that appears after the manager started, as a Secret mounted with
// optional: true does.
func TestRequestRoutes(t *testing.T) {
	requireEnv(t)
	ns := namespace(t)
	r := newRepoEdit(t, func(dir string) {
		agent := `agent "disk-janitor" {
  description = "Notes a disk alert or a person's request"
  provider    = provider.exec.local
  command     = ["sh", "-c", "echo \"$RECONCILER_TRIGGER\" >> notes/janitor.txt"]

  trigger {
    manual = true
  }
  trigger {
    on_alert {
      match = { alertname = "DiskFull" }
    }
  }

  scope {
    paths = ["notes/*.txt"]
  }

  work_unit {
    kind          = "toil"
    human_minutes = 5
  }
}
`
		if err := os.WriteFile(filepath.Join(dir, "agents/disk-janitor.hcl"), []byte(agent), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "notes"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "notes/janitor.txt"), []byte("notes\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	keySecret(t, ns, "ledger-key", r.keyPEM)
	hookAddr := freeAddr(t)
	secretFile := filepath.Join(t.TempDir(), "token")
	startManager(t, ns, controller.ManagerOptions{WebhookAddr: hookAddr, WebhookSecretFile: secretFile})
	ctx := context.Background()
	if err := k8s.Create(ctx, newObject(ns, "janitor", r.url, "ledger-key")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ns, "janitor", 2*time.Minute, "Ready", func(o *agentsv1.AgentRepository) bool { return isTrue(o, meta.ReadyCondition) })

	post := func(path, token, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+hookAddr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		var resp *http.Response
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err = http.DefaultClient.Do(req)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
			req.Body = io.NopCloser(strings.NewReader(body))
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	alertPath := "/hooks/alertmanager/" + ns + "/janitor"
	runPath := "/api/v1/namespaces/" + ns + "/agentrepositories/janitor/agents/disk-janitor/runs"
	alert := `{"version":"4","groupKey":"{}:{alertname=\"DiskFull\"}","status":"firing","receiver":"reconciler",
"groupLabels":{"alertname":"DiskFull"},"commonLabels":{"alertname":"DiskFull","severity":"warning"},
"alerts":[{"status":"firing","labels":{"alertname":"DiskFull","severity":"warning"},"startsAt":"2026-12-01T10:00:00Z","fingerprint":"d1sk"}]}`

	// No secret file yet: every request is refused.
	if code, msg := post(alertPath, "hook-token", alert); code != http.StatusForbidden {
		t.Errorf("before the secret exists: %d %s, want 403", code, msg)
	}
	if err := os.WriteFile(secretFile, []byte("hook-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ what, path, token, body string }{
		{"no token", alertPath, "", alert},
		{"wrong token", alertPath, "not-the-token", alert},
		{"wrong token, manual run", runPath, "not-the-token", `{"id":"x"}`},
	} {
		if code, msg := post(c.path, c.token, c.body); code != http.StatusUnauthorized {
			t.Errorf("%s: %d %s, want 401", c.what, code, msg)
		}
	}
	if code, msg := post("/hooks/alertmanager/"+ns+"/absent", "hook-token", alert); code != http.StatusNotFound {
		t.Errorf("absent object: %d %s, want 404", code, msg)
	}
	if code, msg := post(runPath, "hook-token", `{"id":"x","extra":1}`); code != http.StatusBadRequest {
		t.Errorf("unknown field: %d %s, want 400", code, msg)
	}
	if _, ok := get(t, ns, "janitor").Annotations[controller.RequestsAnnotation]; ok {
		t.Fatal("a refused request was queued")
	}

	if code, msg := post(alertPath, "hook-token", alert); code != http.StatusAccepted || !strings.Contains(msg, `"queued":true`) {
		t.Fatalf("alert: %d %s, want 202 queued", code, msg)
	}
	// The same notification again (Alertmanager repeats it) is the same
	// request.
	if code, msg := post(alertPath, "hook-token", alert); code != http.StatusAccepted {
		t.Fatalf("repeated alert: %d %s, want 202", code, msg)
	}
	if code, msg := post(runPath, "hook-token", `{"id":"ops-42","by":"rita","reason":"disk at 91%"}`); code != http.StatusAccepted {
		t.Fatalf("manual run: %d %s, want 202", code, msg)
	}
	waitFor(t, ns, "janitor", 2*time.Minute, "requests answered", func(o *agentsv1.AgentRepository) bool {
		_, pending := o.Annotations[controller.RequestsAnnotation]
		return !pending
	})
	triggers := map[string]int{}
	for _, rn := range r.runs(t) {
		if rn.Agent == "disk-janitor" {
			triggers[rn.Trigger]++
		}
	}
	var alertRuns, manualRuns int
	for tr, n := range triggers {
		switch {
		case strings.HasPrefix(tr, "alert:"):
			alertRuns += n
		case tr == "manual:ops-42":
			manualRuns += n
		}
	}
	if alertRuns != 1 || manualRuns != 1 {
		t.Errorf("disk-janitor runs by trigger %v: want one alert run and one manual:ops-42 run", triggers)
	}
	noDuplicateRuns(t, r.runs(t))

	// A request no agent answers is dropped, with an event.
	if code, msg := post("/api/v1/namespaces/"+ns+"/agentrepositories/janitor/agents/image-pinner/runs", "hook-token", `{"id":"nope"}`); code != http.StatusAccepted {
		t.Fatalf("manual run of an agent without a manual trigger: %d %s, want 202 (only the pass knows the spec)", code, msg)
	}
	waitEvent(t, ns, "janitor", controller.EventRequestDropped, 1)
	waitFor(t, ns, "janitor", time.Minute, "dropped request removed", func(o *agentsv1.AgentRepository) bool {
		_, pending := o.Annotations[controller.RequestsAnnotation]
		return !pending
	})
}
