//go:build unix

package main

// Process-level tests (issue 9): real `reconciler once` processes, built
// with -tags crashpoint, on real git repositories. This file holds the
// harness both suites share and the concurrency suite; crash_test.go holds
// the crash suite.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/signing"
)

var (
	procBinOnce sync.Once
	procBinPath string
	procBinErr  error
)

// procBinary returns the reconciler built with -tags crashpoint, once per
// test process, into os.TempDir()/reconciler-process-tests (overwritten by
// the next run, so nothing piles up). It skips the test when git or go is
// not installed.
func procBinary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: the process tests run real git repositories")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not installed: the process tests build the reconciler with -tags crashpoint")
	}
	procBinOnce.Do(func() {
		var out []byte
		if out, procBinErr = exec.Command(goBin, "env", "GOMOD").Output(); procBinErr != nil {
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir := filepath.Join(os.TempDir(), "reconciler-process-tests")
		if procBinErr = os.MkdirAll(dir, 0o755); procBinErr != nil {
			return
		}
		// Built under a temporary name and renamed into place, so that a
		// concurrent test process never runs a half-written binary.
		procBinPath = filepath.Join(dir, "reconciler")
		tmp := fmt.Sprintf("%s.tmp-%d", procBinPath, os.Getpid())
		cmd := exec.Command(goBin, "build", "-tags", "crashpoint", "-o", tmp, "./cmd/reconciler")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			procBinErr = fmt.Errorf("go build -tags crashpoint: %w\n%s", err, out)
			return
		}
		procBinErr = os.Rename(tmp, procBinPath)
	})
	if procBinErr != nil {
		t.Fatal(procBinErr)
	}
	return procBinPath
}

// procEnv is the environment of the reconciler processes: the test's,
// without git, reconciler and crash point settings, with hermetic git,
// plus extra.
func procEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GIT_") || strings.HasPrefix(kv, "RECONCILER_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
	return append(env, extra...)
}

// procResult is how a process ended.
type procResult struct {
	pid            int
	code           int            // exit code; -1 when a signal ended it
	signal         syscall.Signal // the signal that ended it, or 0
	stdout, stderr string
	err            error // it could not be started or waited for
}

func (r procResult) killed() bool { return r.signal == syscall.SIGKILL }

// String describes the end of the process for failure messages.
func (r procResult) String() string {
	how := fmt.Sprintf("exit %d", r.code)
	switch {
	case r.err != nil:
		how = r.err.Error()
	case r.signal != 0:
		how = "killed by " + r.signal.String()
	}
	return fmt.Sprintf("pid %d: %s\nstdout:\n%s\nstderr:\n%s", r.pid, how, r.stdout, r.stderr)
}

// runProc runs the binary to its end. It never fails the test, so that it
// can run on any goroutine.
func runProc(ctx context.Context, bin string, env []string, args ...string) procResult {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Start()
	if err != nil {
		return procResult{code: -1, err: err}
	}
	res := procResult{pid: cmd.Process.Pid}
	err = cmd.Wait()
	res.stdout, res.stderr = stdout.String(), stderr.String()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.signal = ws.Signal()
		}
	default:
		res.code, res.err = -1, err
	}
	return res
}

// procRepo is a desired-state repository made from a scenario under
// testdata/process, its ledger key, and the reconciler binary that works on
// it.
type procRepo struct {
	t    *testing.T
	bin  string
	key  string // ledger signing key; its public key is key+".pub"
	bare string
	url  string // bare, or its smart-HTTP URL
	env  []string
}

// newProcRepo generates a ledger key with `reconciler keygen`, copies
// testdata/process/<scenario>, commits the public key to
// .reconciler/keys/ledger.pub and serves the repository over a local path
// or smart HTTP. env is added to every reconciler process's environment.
func newProcRepo(t *testing.T, scenario string, http bool, env ...string) *procRepo {
	t.Helper()
	bin := procBinary(t)
	dir := t.TempDir()
	r := &procRepo{t: t, bin: bin, key: filepath.Join(dir, "ledger.key"), env: procEnv(env...)}
	if res := runProc(context.Background(), bin, r.env, "keygen", "--out", r.key); res.code != 0 || res.err != nil {
		t.Fatalf("keygen: %s", res)
	}
	spec := filepath.Join(dir, "spec")
	if err := os.CopyFS(spec, os.DirFS(filepath.Join("testdata", "process", scenario))); err != nil {
		t.Fatal(err)
	}
	tools, _ := filepath.Glob(filepath.Join(spec, "tools", "*.sh"))
	for _, s := range tools {
		if err := os.Chmod(s, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := os.ReadFile(r.key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(spec, ".reconciler", "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(spec, ".reconciler", "keys", "ledger.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	r.bare = gittest.NewBare(t, spec)
	r.url = r.bare
	if http {
		r.url = gittest.ServeHTTP(t, r.bare)
	}
	return r
}

// once runs `reconciler once` on the repository with its own cache
// directory; extra is added to its environment.
func (r *procRepo) once(ctx context.Context, cacheDir string, extra ...string) procResult {
	return runProc(ctx, r.bin, append(slices.Clip(r.env), extra...),
		"once", "--repo", r.url, "--key", r.key, "--cache-dir", cacheDir,
		"--identity", "Reconciler <reconciler@example.com>")
}

// verify runs `reconciler ledger verify` with the genesis key pinned and
// fails the test unless it exits 0.
func (r *procRepo) verify() {
	r.t.Helper()
	res := runProc(context.Background(), r.bin, r.env, "ledger", "verify", "--repo", r.url, "--trusted-key", r.key+".pub")
	if res.code != 0 || res.err != nil {
		r.t.Fatalf("ledger verify: %s", res)
	}
}

// entries reads every ledger entry, each verified against the pinned key.
func (r *procRepo) entries() []ledger.Entry {
	r.t.Helper()
	pub, err := signing.LoadPublicKey(r.key + ".pub")
	if err != nil {
		r.t.Fatal(err)
	}
	repo, err := gitstore.Open(context.Background(), r.bare, gitstore.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	defer repo.Close()
	es, err := ledger.New(repo, ledger.Options{TrustedKeys: []signing.PublicKey{pub}}).Entries(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return es
}

// branches returns the proposal branches: short name -> head.
func (r *procRepo) branches() map[string]string {
	r.t.Helper()
	out := gittest.Git(r.t, "", "--git-dir", r.bare, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/agents/")
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if name, head, ok := strings.Cut(line, " "); ok {
			m[name] = head
		}
	}
	return m
}

// commit commits change (made in a fresh clone) to main as a person.
func (r *procRepo) commit(msg string, change func(work string)) {
	r.t.Helper()
	work := gittest.Clone(r.t, r.bare)
	change(work)
	gittest.Git(r.t, work, "add", "-A")
	gittest.Git(r.t, work, "commit", "-q", "-m", msg)
	gittest.Git(r.t, work, "push", "-q", "origin", "main")
}

// runView is what the ledger's entries say about one run, counted.
type runView struct {
	agent string
	count map[string]int // event type -> entries
	// started is the run.started entry (the claim); opened and closed the
	// proposal.opened and the entry that closed it (superseded, merged,
	// rejected).
	started, opened, closed *ledger.Entry
	entries                 []*ledger.Entry // all of the run's, in order
}

// String lists the run's entries, one a line.
func (v *runView) String() string {
	var b strings.Builder
	for _, e := range v.entries {
		fmt.Fprintf(&b, "  %d %s %s (subject %.12s, claimant %s)\n", e.Seq, e.Time.Format("15:04:05.000"), e.Summary, e.Subject, e.Claimant)
	}
	return b.String()
}

func (v *runView) settled() bool {
	return v.count[ledger.RunFinished] > 0 || v.count[ledger.RunFailed] > 0
}

func (v *runView) open() bool { return v.opened != nil && v.closed == nil }

// foldRuns groups the entries by run id.
func foldRuns(es []ledger.Entry) map[string]*runView {
	runs := map[string]*runView{}
	for i := range es {
		e := &es[i]
		if e.RunID == "" {
			continue
		}
		v := runs[e.RunID]
		if v == nil {
			v = &runView{agent: e.Agent, count: map[string]int{}}
			runs[e.RunID] = v
		}
		v.count[e.Type]++
		v.entries = append(v.entries, e)
		switch e.Type {
		case ledger.RunStarted:
			v.started = e
		case ledger.ProposalOpened:
			v.opened = e
		case ledger.ProposalSuperseded, ledger.ProposalMerged, ledger.ProposalRejected:
			if v.closed == nil {
				v.closed = e
			}
		}
	}
	return runs
}

// checkOnce fails the test for a run without exactly one run.started (a
// claim made twice means the work ran twice), or with more than one entry
// of an event that happens at most once to a run.
func checkOnce(t *testing.T, runs map[string]*runView, once ...string) {
	t.Helper()
	for id, v := range runs {
		if n := v.count[ledger.RunStarted]; n != 1 {
			t.Errorf("run %s (%s) has %d run.started entries, want exactly 1", id, v.agent, n)
		}
		for _, typ := range once {
			if n := v.count[typ]; n > 1 {
				t.Errorf("run %s (%s) has %d %s entries, want at most 1; its entries:\n%s", id, v.agent, n, typ, v)
			}
		}
	}
}

// checkBranches fails the test unless the proposal branches are exactly
// the ledger's: every open proposal has its branch, at the head it was
// opened with; a superseded or rejected proposal has none (the reconciler
// deletes a superseded one); a merged one may keep its branch (deleting it
// is the merger's call); there is no other branch under agents/.
func checkBranches(t *testing.T, runs map[string]*runView, branches map[string]string) {
	t.Helper()
	owned := map[string]bool{}
	for id, v := range runs {
		if v.opened == nil {
			continue
		}
		p := v.opened.Proposal
		owned[p.Branch] = true
		head, ok := branches[p.Branch]
		switch {
		case v.open() && !ok:
			t.Errorf("open proposal of run %s (%s) has no branch %s", id, v.agent, p.Branch)
		case v.open() && head != p.Head:
			t.Errorf("open proposal of run %s (%s): branch %s is at %s, opened at %s", id, v.agent, p.Branch, head, p.Head)
		case !v.open() && v.closed.Type != ledger.ProposalMerged && ok:
			t.Errorf("run %s (%s): branch %s is left although the proposal is %s", id, v.agent, p.Branch, v.closed.Type)
		}
	}
	for b := range branches {
		if !owned[b] {
			t.Errorf("branch %s belongs to no proposal the ledger opened", b)
		}
	}
}

// modelServer is a scripted OpenAI-compatible chat-completions server for
// the modeler agent of testdata/process/concurrent. A run's conversation
// is read_file, edit_file (ROUND=none -> ROUND=<n>, n from the prompt),
// finish; the step is the number of tool results in the request. Every
// response reports usage that differs by step and round, and the server
// counts what it served per run id (from the system prompt).
type modelServer struct {
	srv *httptest.Server
	key string

	mu     sync.Mutex
	served map[string]*modelUse // run id -> what the server answered
	errs   []string             // requests it could not answer
}

// modelUse is what the server answered for one run, or for all of them.
type modelUse struct{ requests, in, out int64 }

var (
	// appendedLine is the log line of a process's ledger append.
	appendedLine = regexp.MustCompile(`msg="ledger entry" seq=(\d+) event=(\S+)`)
	runIDLine    = regexp.MustCompile(`(?m)^- run id: ([0-9a-f]+)$`)
	roundText    = regexp.MustCompile(`Set ROUND to (\d+)`)
)

func newModelServer(t *testing.T, key string) *modelServer {
	m := &modelServer{key: key, served: map[string]*modelUse{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

// URL is the API root, the provider's base_url.
func (m *modelServer) URL() string { return m.srv.URL + "/v1" }

func (m *modelServer) fail(w http.ResponseWriter, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	m.mu.Lock()
	m.errs = append(m.errs, msg)
	m.mu.Unlock()
	// 400 is not retried: the run fails and the test sees why.
	http.Error(w, msg, http.StatusBadRequest)
}

func (m *modelServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
		m.fail(w, "unexpected %s %s", r.Method, r.URL.Path)
		return
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+m.key {
		m.fail(w, "Authorization = %q, want the provider's api_key_env value", got)
		return
	}
	var req openai.ChatCompletionRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		m.fail(w, "decode request: %v", err)
		return
	}
	if req.Stream {
		m.fail(w, "the scripted server does not stream")
		return
	}
	var system string
	step := 0
	for _, msg := range req.Messages {
		switch msg.Role {
		case openai.ChatMessageRoleSystem:
			system = msg.Content
		case openai.ChatMessageRoleTool:
			step++
		}
	}
	id := runIDLine.FindStringSubmatch(system)
	round := roundText.FindStringSubmatch(system)
	if id == nil || round == nil {
		m.fail(w, "no run id or round in the system prompt:\n%s", system)
		return
	}
	n, _ := strconv.Atoi(round[1])
	var name, args string
	switch step {
	case 0:
		name, args = "read_file", `{"path":"config/model.env"}`
	case 1:
		name, args = "edit_file", fmt.Sprintf(`{"path":"config/model.env","old_text":"ROUND=none","new_text":"ROUND=%d"}`, n)
	default:
		name, args = "finish", fmt.Sprintf(`{"summary":"Set ROUND to %d","rationale":"The prompt asks for it.","risk":"low"}`, n)
	}
	in, out := 1000+100*step+n, 10+step
	resp := openai.ChatCompletionResponse{
		ID: fmt.Sprintf("chatcmpl-%s-%d", id[1], step), Object: "chat.completion", Created: 1767225600, Model: req.Model,
		Choices: []openai.ChatCompletionChoice{{
			Message: openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant, ToolCalls: []openai.ToolCall{{
				ID: fmt.Sprintf("call_%d", step), Type: openai.ToolTypeFunction,
				Function: openai.FunctionCall{Name: name, Arguments: args},
			}}},
			FinishReason: openai.FinishReasonToolCalls,
		}},
		Usage: openai.Usage{PromptTokens: in, CompletionTokens: out, TotalTokens: in + out},
	}
	b, err := json.Marshal(resp)
	if err != nil {
		m.fail(w, "encode response: %v", err)
		return
	}
	m.mu.Lock()
	u := m.served[id[1]]
	if u == nil {
		u = &modelUse{}
		m.served[id[1]] = u
	}
	u.requests++
	u.in += int64(in)
	u.out += int64(out)
	m.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// Prices of scripted-model in testdata/process/concurrent/providers.hcl,
// in US dollars per million tokens.
const scriptedInputPerMTok, scriptedOutputPerMTok = 2.5, 10

// concurrentRounds is the number of rounds of TestConcurrentOnceProcesses.
const concurrentRounds = 20

// N `once` processes started together, 20 rounds, the spec changed between
// rounds so that every agent is due again: no process exits non-zero (a
// lost race never fails a pass), every run id has exactly one run.started
// and at most one proposal.opened, every agent ran once per round, the
// branches are the ledger's open proposals, the ledger verifies, and the
// model agent's recorded usage and cost are exactly what the scripted model
// server answered, run by run: every request is accounted for once.
func TestConcurrentOnceProcesses(t *testing.T) {
	for _, tc := range []struct {
		procs int
		http  bool
	}{
		{2, false},
		{3, true},
	} {
		transport := "local path"
		if tc.http {
			transport = "smart HTTP"
		}
		t.Run(fmt.Sprintf("%d processes over %s", tc.procs, transport), func(t *testing.T) {
			t.Parallel()
			const key = "sk-scripted-0123456789abcdefghijklmnop"
			model := newModelServer(t, key)
			r := newProcRepo(t, "concurrent", tc.http,
				"RECONCILER_TEST_MODEL_URL="+model.URL(), "RECONCILER_TEST_MODEL_KEY="+key)
			caches := make([]string, tc.procs)
			for i := range caches {
				caches[i] = filepath.Join(t.TempDir(), fmt.Sprintf("cache-%d", i))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			work := gittest.Clone(t, r.bare)
			slotOf := map[int]int{}      // pid -> process slot
			appender := map[uint64]int{} // ledger seq -> pid of the process that appended it
			for round := range concurrentRounds {
				if round > 0 {
					// Every agent reads the prompt: all are due again.
					prompt := fmt.Sprintf("Set ROUND to %d in config/model.env, then finish.\n", round)
					if err := os.WriteFile(filepath.Join(work, "prompts", "round.md"), []byte(prompt), 0o644); err != nil {
						t.Fatal(err)
					}
					gittest.Git(t, work, "commit", "-q", "-am", fmt.Sprintf("Round %d", round))
					gittest.Git(t, work, "push", "-q", "origin", "main")
				}
				results := make([]procResult, tc.procs)
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i := range results {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						results[i] = r.once(ctx, caches[i])
					}()
				}
				close(start)
				wg.Wait()
				for i, res := range results {
					slotOf[res.pid] = i
					for _, m := range appendedLine.FindAllStringSubmatch(res.stderr, -1) {
						seq, _ := strconv.ParseUint(m[1], 10, 64)
						appender[seq] = res.pid
					}
					if res.code != 0 || res.err != nil {
						t.Errorf("round %d: process %d failed: %s", round, i, res)
					}
				}
				if t.Failed() {
					t.FailNow()
				}
			}

			r.verify()
			es := r.entries()
			runs := foldRuns(es)
			checkOnce(t, runs)
			t.Run("one entry per run event", func(t *testing.T) {
				checkOnceRacing(t, runs, appender, ledger.RunFinished, ledger.PolicyDecision,
					ledger.ProposalOpened, ledger.ProposalSuperseded)
			})
			perAgent := map[string]int{}
			claims := make([]int, tc.procs) // runs claimed, per process slot
			for id, v := range runs {
				perAgent[v.agent]++
				if slot, ok := slotOf[claimantPID(v.started)]; ok {
					claims[slot]++
				}
				if !v.settled() {
					t.Errorf("run %s (%s) has no outcome although every process exited", id, v.agent)
				}
			}
			for _, a := range []string{"modeler", "writer", "idler"} {
				if perAgent[a] != concurrentRounds {
					t.Errorf("agent %s ran %d times in %d rounds, want once per round", a, perAgent[a], concurrentRounds)
				}
			}
			checkBranches(t, runs, r.branches())

			t.Logf("%d entries, %d runs (claimed per process: %v)", len(es), len(runs), claims)
			t.Run("model cost", func(t *testing.T) { checkModelCost(t, model, es, runs) })
		})
	}
}

// checkModelCost checks that what the ledger records for the modeler agent
// (usage in run.finished and run.failed, and cost) is exactly what the
// scripted server answered, run by run.
func checkModelCost(t *testing.T, model *modelServer, es []ledger.Entry, runs map[string]*runView) {
	model.mu.Lock()
	defer model.mu.Unlock()
	if len(model.errs) > 0 {
		t.Errorf("the model server refused %d request(s), first: %s", len(model.errs), model.errs[0])
	}
	recorded := map[string]*modelUse{}
	var costUSD float64
	for _, e := range es {
		if e.Agent != "modeler" || (e.Type != ledger.RunFinished && e.Type != ledger.RunFailed) {
			continue
		}
		// A run's attempts each record what they used.
		u := recorded[e.RunID]
		if u == nil {
			u = &modelUse{}
			recorded[e.RunID] = u
		}
		if e.Usage != nil {
			u.in += e.Usage.InputTokens
			u.out += e.Usage.OutputTokens
		}
		costUSD += e.CostUSD
	}
	var total modelUse
	for _, s := range model.served {
		total.requests += s.requests
		total.in += s.in
		total.out += s.out
	}
	t.Logf("the server answered %d requests (%d input, %d output tokens); the ledger records %.6f USD",
		total.requests, total.in, total.out, costUSD)
	for id, s := range model.served {
		if runs[id] == nil || runs[id].count[ledger.RunStarted] != 1 {
			t.Errorf("the server answered %d request(s) for run %s, which has no claim in the ledger", s.requests, id)
		}
		if s.requests != 3 {
			t.Errorf("run %s made %d model requests, want 3 (read, edit, finish)", id, s.requests)
		}
		rec := recorded[id]
		if rec == nil || rec.in != s.in || rec.out != s.out {
			t.Errorf("run %s: recorded usage %+v, the server answered %d input and %d output tokens", id, rec, s.in, s.out)
		}
	}
	for id := range recorded {
		if model.served[id] == nil {
			t.Errorf("run %s records model usage the server never answered", id)
		}
	}
	if len(model.served) != concurrentRounds {
		t.Errorf("the server answered %d runs, want %d", len(model.served), concurrentRounds)
	}
	wantUSD := (float64(total.in)*scriptedInputPerMTok + float64(total.out)*scriptedOutputPerMTok) / 1e6
	if math.Abs(costUSD-wantUSD) > 1e-9 {
		t.Errorf("recorded cost %.9f USD, the %d requests served cost %.9f USD", costUSD, total.requests, wantUSD)
	}
}

// checkOnceRacing is checkOnce for the given event types, for a ledger
// written by racing processes whose appends are known (seq -> pid, from
// their logs): any run with more than one entry of a type fails, naming the
// processes that appended them and the run's claimant. (Racing processes
// once both drove a settled run's last phases under a live claim and
// recorded proposal.opened twice; the claim now holds through every phase,
// and every step's append is checked against the ledger it lands on.)
func checkOnceRacing(t *testing.T, runs map[string]*runView, appender map[uint64]int, once ...string) {
	t.Helper()
	for id, v := range runs {
		for _, typ := range once {
			if v.count[typ] <= 1 {
				continue
			}
			var pids []int
			for _, e := range v.entries {
				if e.Type == typ {
					pids = append(pids, appender[e.Seq])
				}
			}
			t.Errorf("want at most one: run %s (%s) has %d %s entries, appended by pids %v; pid %d claimed the run; its entries:\n%s",
				id, v.agent, v.count[typ], typ, pids, claimantPID(v.started), v)
		}
	}
}

// claimantPID is the pid in a run.started entry's default claimant
// (host/pid/random), or -1.
func claimantPID(started *ledger.Entry) int {
	if started == nil {
		return -1
	}
	parts := strings.Split(started.Claimant, "/")
	if len(parts) != 3 {
		return -1
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil {
		return -1
	}
	return pid
}
