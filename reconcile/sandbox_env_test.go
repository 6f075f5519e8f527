package reconcile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/ledger"
)

// An exec agent's command gets the variables its block declares, and none
// of the reconciler's.
func TestExecAgentDeclaredEnv(t *testing.T) {
	t.Setenv("RECONCILER_TEST_SECRET", "s3cr3t-of-the-reconciler")
	e := newEnv(t, false, func(dir string) {
		os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
		os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
		writeAgent(dir, "greeter", `"config/**"`, `echo "greeting=$GREETING secret=${RECONCILER_TEST_SECRET:-none}" > config/greeting.txt; echo "Greet"`)
		p := filepath.Join(dir, "agents/greeter.hcl")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.Replace(string(b), "  trigger {", "  env = { GREETING = \"hello from git\" }\n  trigger {", 1)), 0o644)
	})
	e.pass(e.reconciler(nil))
	opened, ok := find(e.entries(), ledger.ProposalOpened, "greeter")
	if !ok {
		t.Fatalf("no proposal: %q", e.events())
	}
	got := e.git("", "--git-dir", e.bare, "show", opened.Proposal.Branch+":config/greeting.txt")
	if got != "greeting=hello from git secret=none" {
		t.Errorf("the command saw %q, want its declared variable and none of the reconciler's", got)
	}
}
