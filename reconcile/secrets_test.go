package reconcile_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// secToken returns a credential-shaped value: prefix and n random letters
// and digits from seed. The tests build their secrets at run time, so
// neither this file nor a desired-state repository made from it holds one.
func secToken(prefix string, n int, seed uint64) string {
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	r := rand.New(rand.NewPCG(seed, ^seed))
	b := []byte(prefix)
	for range n {
		b = append(b, alnum[r.IntN(len(alnum))])
	}
	return string(b)
}

// secNoLeak fails the test when any value is anywhere the reconciler
// wrote: an entry's bundle as stored or the statement signed inside it,
// and every object of the repository (transcripts on agent-evidence,
// proposal commits and trees, any branch).
func secNoLeak(t *testing.T, e *env, values ...string) {
	t.Helper()
	for _, en := range e.entries() {
		var b struct {
			DSSE struct {
				Payload []byte `json:"payload"`
			} `json:"dsseEnvelope"`
		}
		if err := json.Unmarshal(en.Bundle, &b); err != nil || len(b.DSSE.Payload) == 0 {
			t.Fatalf("entry %d: no DSSE payload in its bundle (%v)", en.Seq, err)
		}
		pred, _ := json.Marshal(en.Predicate)
		for _, v := range values {
			for where, text := range map[string][]byte{"bundle": en.Bundle, "statement": b.DSSE.Payload, "predicate": pred} {
				if strings.Contains(string(text), v) {
					t.Errorf("entry %d (%s) holds a secret in its %s", en.Seq, en.Type, where)
				}
			}
		}
	}
	cmd := exec.Command("git", "--git-dir", e.bare, "cat-file", "--batch-all-objects", "--batch")
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	all, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range values {
		if i := strings.Index(string(all), v); i >= 0 {
			start := strings.LastIndexByte(string(all[:i]), '\n')
			t.Errorf("the repository holds a secret in an object (near %q)", agent.Redact(string(all[max(0, start-80):i]), v))
		}
	}
}

// A model agent that writes a secret into its change is denied by
// builtin/secret-detected, naming the file and line; nothing is proposed,
// and the secret is in no entry, no transcript and no object.
//
// This needs reconcile to scan the run's change (secrets.Scan, with the
// providers' API keys as known values) before its policy.decision and to
// deny it with policy.DenySecrets: until it does, both cases fail (the
// change is proposed, with the secret in its commit).
func TestModelAgentSecretIsDenied(t *testing.T) {
	apiKey := "sk-proj-" + secToken("", 48, 1)
	ghp := secToken("ghp_", 36, 2)
	tests := []struct {
		name, path, content string
		line                string // file:line the decision must name
		rule                string
		secret              string
	}{
		{"the provider's API key", "config/payments-api.env", "CACHE_TTL=30s\nUPSTREAM_AUTH=" + apiKey + "\n", "config/payments-api.env:2", "known-secret", apiKey},
		// A token glued to a word: redaction and scanning both find it.
		{"a GitHub token", "config/ci.env", "# rotate monthly\n\nCI_TOKEN=x" + ghp + "\n", "config/ci.env:3", "github-pat", ghp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, false, func(dir string) {
				onlyAgent(dir, "leaker", `agent "leaker" {
  provider = provider.openai.default
  model    = "gpt-4o-mini"
  prompt   = "Fix the config."
  tools    = ["read_file", "write_file", "finish"]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["config/**"]
  }
}
`)
			})
			// The variable ends in a newline, as a key read from a file
			// does: the value is matched trimmed.
			t.Setenv("OPENAI_API_KEY", apiKey+"\n")
			args, _ := json.Marshal(map[string]string{"path": tt.path, "content": tt.content})
			model := &scripted{responses: []openai.ChatCompletionResponse{
				toolCall("1", "write_file", string(args), 500, 40),
				toolCall("2", "finish", `{"summary":"Wire the upstream credential","rationale":"The service needs it.","risk":"low"}`, 600, 30),
			}}
			r := e.reconcilerWith(map[string]agent.Runner{"openai": &agent.OpenAI{
				NewModel: func(*hclspec.Provider) (agent.Model, error) { return model, nil }}})
			e.pass(r)

			es := e.entries()
			if _, ok := find(es, ledger.RunFinished, "leaker"); !ok {
				t.Fatalf("no run.finished: %q", e.events())
			}
			d, ok := find(es, ledger.PolicyDecision, "leaker")
			if !ok {
				t.Fatalf("no policy.decision: %q", e.events())
			}
			var dec policy.Decision
			if err := json.Unmarshal(d.Decision, &dec); err != nil {
				t.Fatal(err)
			}
			if dec.Outcome != policy.Deny || !strings.HasPrefix(dec.Summary, "deny builtin/secret-detected") {
				t.Errorf("decision = %s: %s, want a denial by builtin/secret-detected", dec.Outcome, dec.Summary)
			}
			if len(dec.Rules) == 0 || dec.Rules[0].Name() != "builtin/secret-detected" ||
				!strings.Contains(dec.Rules[0].Message, tt.line+" ("+tt.rule+")") {
				t.Errorf("rules = %+v, want builtin/secret-detected naming %s (%s)", dec.Rules, tt.line, tt.rule)
			}
			if _, ok := find(es, ledger.ProposalOpened, "leaker"); ok {
				t.Error("a change with a secret was proposed")
			}
			for _, b := range e.branches() {
				t.Errorf("a change with a secret was pushed: %s", b)
			}
			secNoLeak(t, e, tt.secret, apiKey)

			// The transcript is stored, with the write redacted.
			fin, _ := find(es, ledger.RunFinished, "leaker")
			repo, err := gitstore.Open(context.Background(), e.bare, gitstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if tr, _, err := ledger.New(repo, ledger.Options{}).Transcript(context.Background(), fin.RunID); err != nil || !strings.Contains(string(tr), "[REDACTED]") {
				t.Errorf("transcript: %v; redacted: %v", err, strings.Contains(string(tr), "[REDACTED]"))
			}

			// Denied is final: the next pass changes nothing.
			n := len(es)
			e.pass(e.reconcilerWith(map[string]agent.Runner{"openai": &agent.OpenAI{
				NewModel: func(*hclspec.Provider) (agent.Model, error) { return &scripted{}, nil }}}))
			if got := e.entries(); len(got) != n {
				t.Errorf("a denied run was retried: %d entries, want %d", len(got), n)
			}
		})
	}
}

// An exec agent's stderr becomes run.failed's error: the secrets it
// prints, and the host's directories, are not recorded.
//
// This needs the exec runner (agent/exec.go) or reconcile to pass what a
// command printed through agent.Redact and agent.ScrubPaths before it
// becomes an error: until then both subtests fail.
func TestExecStderrIsRedacted(t *testing.T) {
	ghp := secToken("ghp_", 36, 3)
	awsSecret := secToken("", 40, 4)
	// The script assembles the values from pieces, so the desired-state
	// repository holds none of them.
	leak := `printf 'GITHUB_TOKEN=%s%s\n' '` + ghp[:20] + `' '` + ghp[20:] + `' >&2
printf 'aws_secret_access_key = %s%s\n' '` + awsSecret[:20] + `' '` + awsSecret[20:] + `' >&2
echo "cannot write $HOME/.netrc in $PWD" >&2
exit 1`
	e := newEnv(t, false, func(dir string) {
		os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
		os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
		writeAgent(dir, "noisy", `"config/**"`, leak)
	})
	err := e.reconciler(nil).Reconcile(context.Background())
	if err == nil {
		t.Fatal("a run that exited 1 did not fail the pass")
	}
	f, ok := find(e.entries(), ledger.RunFailed, "noisy")
	if !ok {
		t.Fatalf("no run.failed: %q", e.events())
	}
	t.Run("secrets", func(t *testing.T) {
		for _, v := range []string{ghp, awsSecret} {
			if strings.Contains(f.Error, v) || strings.Contains(err.Error(), v) {
				t.Errorf("run.failed error holds a secret: %s", agent.Redact(f.Error, v))
			}
		}
		if !strings.Contains(f.Error, "exit status 1") || !strings.Contains(f.Error, "GITHUB_TOKEN=[REDACTED]") {
			t.Errorf("run.failed error = %q, want the exit status and the redacted output", agent.Redact(f.Error, ghp, awsSecret))
		}
		secNoLeak(t, e, ghp, awsSecret)
	})
	t.Run("host paths", func(t *testing.T) {
		if tmp := filepath.Clean(os.TempDir()) + "/"; strings.Contains(f.Error, tmp) {
			t.Errorf("run.failed error holds a host path under %s: %q", tmp, agent.Redact(f.Error, ghp, awsSecret))
		}
	})
}
