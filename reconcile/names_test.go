package reconcile_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// The attack of issue 10 on names, links and messages: an exec agent with
// scope "**" makes a file whose name hides what it is, or a symbolic link
// out of its workspace or to a protected path. Each run fails naming the
// path and why (agent.CheckChange), and nothing is proposed; the files
// that steer git (.gitattributes, .gitmodules) are protected and denied by
// policy instead.
func TestUnsafeNamesAndLinks(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		// reason is in the run's failure; empty when the change is denied.
		reason string
		// denied is the protected path a denial names.
		denied string
	}{
		{name: "bidi override in a name", body: `echo x > "config/$(printf '\342\200\256')evil.env"`,
			reason: `"config/\u202eevil.env" has a name "\u202eevil.env" that contains the bidirectional control U+202E`},
		{name: "Cyrillic look-alike of agents", body: `d="$(printf '\320\260')gents"; mkdir -p "$d"; echo 'agent "evil" {}' > "$d/evil.hcl"`,
			reason: `"\u0430gents/evil.hcl" looks like the protected path "agents/**"`},
		{name: "capitalised agents", body: `mkdir -p Agents; echo 'agent "evil" {}' > Agents/evil.hcl`,
			reason: `"Agents/evil.hcl" looks like the protected path "agents/**"`},
		{name: "trailing dot and space", body: `echo x > 'config/trailing. '`,
			reason: `"config/trailing. " has a name "trailing. " that ends in a space or a dot`},
		{name: "absolute symlink", body: `ln -s /etc/passwd config/key.env`,
			reason: `"config/key.env" is a symbolic link to the absolute path "/etc/passwd"`},
		{name: "symlink escaping the workspace", body: `ln -s ../../../etc/passwd config/key.env`,
			reason: `"config/key.env" is a symbolic link to "../../../etc/passwd", which leaves the repository`},
		{name: "symlink to reviewers.hcl", body: `ln -s ../reviewers.hcl config/reviewers.env`,
			reason: `"config/reviewers.env" is a symbolic link to "../reviewers.hcl", which resolves to the protected path "reviewers.hcl"`},
		{name: ".gitattributes", body: `echo '* -diff' > .gitattributes`, denied: ".gitattributes"},
		{name: ".gitmodules", body: `printf '[submodule "x"]\n\tpath = x\n\turl = https://example.com/x.git\n' > .gitmodules`, denied: ".gitmodules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false, func(dir string) {
				os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
				os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
				writeAgent(dir, "rogue", `"**"`, tc.body+"\necho 'Tidy config'")
			})
			err := e.reconciler(nil).Reconcile(context.Background())
			es := e.entries()
			if tc.denied == "" {
				if err == nil || !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("Reconcile = %v, want a failure with %s", err, tc.reason)
				}
				f, ok := find(es, ledger.RunFailed, "rogue")
				if !ok || !strings.Contains(f.Error, tc.reason) {
					t.Errorf("run.failed = %+v (found %v), want %s; events %q", f.Predicate, ok, tc.reason, e.events())
				}
			} else {
				if err != nil {
					t.Fatalf("Reconcile: %v", err)
				}
				d, ok := find(es, ledger.PolicyDecision, "rogue")
				if !ok {
					t.Fatalf("no decision: %q", e.events())
				}
				var dec policy.Decision
				json.Unmarshal(d.Decision, &dec)
				if dec.Outcome != policy.Deny || !strings.Contains(dec.Summary, "builtin/self-modification") || !strings.Contains(string(d.Decision), tc.denied) {
					t.Errorf("decision = %+v, want a self-modification denial naming %s", dec, tc.denied)
				}
			}
			if _, ok := find(es, ledger.ProposalOpened, "rogue"); ok {
				t.Errorf("proposed: %q", e.events())
			}
			if b := e.branches(); len(b) != 0 {
				t.Errorf("branches %v, want none", b)
			}
		})
	}
}

// An agent's report becomes the proposal commit's message: the terminal
// escapes in it (a window title, colours, clearing the screen) are
// stripped, so `git log` in a reviewer's terminal shows only text.
func TestProposalMessageIsClean(t *testing.T) {
	e := newEnv(t, false, func(dir string) {
		os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
		os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
		writeAgent(dir, "rogue", `"config/**"`, `echo 'LOG_LEVEL=info' >> config/payments-api.env
printf '\033]0;pwn\007\033[31mred\n\nbody \033[2Jcleared \342\200\256drawkcab\r\nend\n'`)
	})
	e.pass(e.reconciler(nil))
	b := e.branches()
	if len(b) != 1 || !strings.HasPrefix(b[0], "agents/rogue/") {
		t.Fatalf("branches = %v, want one proposal; events %q", b, e.events())
	}
	msg := e.git("", "--git-dir", e.bare, "log", "-1", "--format=%B", b[0])
	subject, body, _ := strings.Cut(msg, "\n")
	if subject != "red" {
		t.Errorf("subject = %q, want %q", subject, "red")
	}
	if !strings.Contains(body, "body cleared drawkcab\nend") {
		t.Errorf("body = %q, want the text without escapes", body)
	}
	for _, r := range msg {
		if (unicode.IsControl(r) && r != '\n' && r != '\t') || unicode.Is(unicode.Bidi_Control, r) {
			t.Errorf("message holds %U: %q", r, msg)
			break
		}
	}
}
