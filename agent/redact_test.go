package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/hclspec"
)

const testPEM = `-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDsV3EXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEAAAA
-----END OPENSSH PRIVATE KEY-----`

func TestRedact(t *testing.T) {
	r := newRedactor("hunter2-api-key-value", "abc", "")
	tests := []struct {
		name, in, want string
	}{
		{"api key value", "key=hunter2-api-key-value;", "key=[REDACTED];"},
		{"short value kept", "abc is not a secret", "abc is not a secret"},
		{"openai", "OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz012345", "OPENAI_API_KEY=[REDACTED]"},
		{"openai project", "sk-proj-Ab3_dE-fGhIjKlMnOpQrStUvWx", "[REDACTED]"},
		{"github classic", "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 here", "token [REDACTED] here"},
		{"github oauth", "gho_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED]"},
		{"github app", "ghs_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED]"},
		{"github fine-grained", "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012345", "[REDACTED]"},
		{"aws access key", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "aws_access_key_id = [REDACTED]"},
		{"aws secret key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = [REDACTED]"},
		{"slack", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "[REDACTED]"},
		{"jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "[REDACTED]"},
		{"bearer", "Authorization: Bearer abcdef0123456789.xyz", "Authorization: Bearer [REDACTED]"},
		{"bearer lowercase", "authorization: bearer 0123456789abcdef==", "authorization: bearer [REDACTED]"},
		{"pem", "key:\n" + testPEM + "\nafter", "key:\n[REDACTED]\nafter"},
		{"pem cut off", "key:\n" + testPEM[:80], "key:\n[REDACTED]"},
		{"pem tail", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDsV3EXAMPLE\n-----END RSA PRIVATE KEY-----\nafter", "[REDACTED]\nafter"},
		{"public key kept", "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----", "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"},
		{"prose kept", "The task-runner uses Bearer tokens; ask-me anything; skip-ci.", "The task-runner uses Bearer tokens; ask-me anything; skip-ci."},
		{"template kept", "Authorization: Bearer ${TOKEN}", "Authorization: Bearer ${TOKEN}"},
		{"several", "a=sk-abcdefghijklmnopqrstuvwxyz b=AKIAIOSFODNN7EXAMPLE", "a=[REDACTED] b=[REDACTED]"},
		{"value inside a word", "xhunter2-api-key-valuex", "x[REDACTED]x"},
		{"github token after a word character", "xghp_abcdefghijklmnopqrstuvwxyz0123456789 t_gho_abcdefghijklmnopqrstuvwxyz0123456789", "x[REDACTED] t_[REDACTED]"},
		{"fine-grained after a word character", "Xgithub_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz", "X[REDACTED]"},
		{"openai key after a word character", "KEY_sk-proj-Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7", "KEY_[REDACTED]"},
		{"aws key after a word character", "idAKIAIOSFODNN7EXAMPLE", "id[REDACTED]"},
		{"aws key after an uppercase run", "XASIAPACIFICAKIAIOSFODNN7EXAMPLE", "XASIAPACIFIC[REDACTED]"},
		{"slack after a word character", "tokxoxb-123456789012-abcdef", "tok[REDACTED]"},
		{"jwt after a word character", "tokeneyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "token[REDACTED]"},
		{"gitlab", "glpat-Ab3dE6gH9jK2mN5pQ8sT", "[REDACTED]"},
		{"google", "key=AIzaSyAb3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3", "key=[REDACTED]"},
		{"hyphenated words kept", "see risk-assessment-for-the-payments-api and disk-usage-of-the-ledger-worker", "see risk-assessment-for-the-payments-api and disk-usage-of-the-ledger-worker"},
		{"uppercase words kept", "REGION=ASIAPACIFICREGIONNAMES", "REGION=ASIAPACIFICREGIONNAMES"},
		{"jwt-like words kept", "monkeyJumps.test.go.txt", "monkeyJumps.test.go.txt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.String(tt.in); got != tt.want {
				t.Errorf("String(%q)\n = %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

// A known value is matched trimmed of the whitespace around it (a key
// read from a file ends in a newline), as written, JSON-escaped, and
// inside words; values shorter than MinSecretLen once trimmed are kept.
func TestRedactKnownValues(t *testing.T) {
	tests := []struct {
		name, value, in, want string
	}{
		{"trailing newline", "sk-test-value-0123\n", "Authorization: sk-test-value-0123.", "Authorization: [REDACTED]."},
		{"surrounding spaces", "  hunter2-api-key  ", "k=hunter2-api-key", "k=[REDACTED]"},
		{"as written", "hunter2-api-key\n", "a hunter2-api-key\nb", "a [REDACTED]\nb"},
		{"json-escaped", "pass\"word-0123", `{"k":"pass\"word-0123"}`, `{"k":"[REDACTED]"}`},
		{"inside words", "s3cr3t-v4lue", "xs3cr3t-v4luex", "x[REDACTED]x"},
		{"short after trimming", "1234567\n", "pin 1234567", "pin 1234567"},
		{"only whitespace", " \n\t ", "a \n\t b", "a \n\t b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Redact(tt.in, tt.value); got != tt.want {
				t.Errorf("Redact(%q, %q)\n = %q\nwant %q", tt.in, tt.value, got, tt.want)
			}
		})
	}
	// A secret that contains another goes whole.
	if got := Redact("abcdefgh-ijklmnop", "abcdefgh", "abcdefgh-ijklmnop"); got != redactedText {
		t.Errorf("nested values: %q", got)
	}
}

func TestProviderSecrets(t *testing.T) {
	env := map[string]string{"A_KEY": "value-a-0123", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got := ProviderSecrets(lookup,
		&hclspec.Provider{APIKeyEnv: "A_KEY"}, &hclspec.Provider{APIKeyEnv: "EMPTY"},
		&hclspec.Provider{APIKeyEnv: "UNSET"}, &hclspec.Provider{}, nil)
	if len(got) != 1 || got[0] != "value-a-0123" {
		t.Errorf("ProviderSecrets = %q", got)
	}
}

func TestScrubPaths(t *testing.T) {
	ws := t.TempDir()
	other := t.TempDir()
	tmp := filepath.Clean(os.TempDir())
	home, _ := os.UserHomeDir()
	tests := []struct {
		name, in, want string
	}{
		{"workspace", "open " + ws + "/config/a.env: denied", "open $WORKSPACE/config/a.env: denied"},
		{"workspace itself", "cd " + ws, "cd $WORKSPACE"},
		{"later dirs", "cp " + other + "/x " + ws + "/y", "cp $DIR1/x $WORKSPACE/y"},
		{"not a prefix of a longer name", ws + "2/x", "$TMPDIR" + strings.TrimPrefix(ws, tmp) + "2/x"},
		{"not inside another path", "/x" + ws + "/y", "/x" + ws + "/y"},
		{"private temp dir", tmp + "/reconciler-home-123/.cache: no space", "$TMPDIR/reconciler-home-123/.cache: no space"},
		{"home", home + "/.cache/reconciler/mirror", "$HOME/.cache/reconciler/mirror"},
		{"quoted", `"` + ws + `/a"`, `"$WORKSPACE/a"`},
		{"relative kept", "config/a.env", "config/a.env"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ScrubPaths(tt.in, ws, other, "relative", "/", ""); got != tt.want {
				t.Errorf("ScrubPaths(%q)\n = %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
	// A directory reached through a symbolic link is replaced in both
	// spellings.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(ws, link); err != nil {
		t.Skip(err)
	}
	if got := ScrubPaths(link+"/a "+ws+"/b", link); got != "$WORKSPACE/a $WORKSPACE/b" {
		t.Errorf("through a link: %q", got)
	}
}

func TestRedactJSON(t *testing.T) {
	r := newRedactor("hunter2-api-key-value")
	args, _ := json.Marshal(map[string]string{"path": "services/id_ed25519", "content": testPEM + "\n"})
	tests := []struct {
		name, in, want string
	}{
		{"untouched", `{"path": "services/a.txt", "content": "x"}`, `{"path": "services/a.txt", "content": "x"}`},
		{"raw token", `{"content": "ghp_abcdefghijklmnopqrstuvwxyz0123456789"}`, `{"content": "[REDACTED]"}`},
		{"escaped pem", string(args), `{"content":"[REDACTED]\n","path":"services/id_ed25519"}`},
		{"token after an escape", `{"content":"x\nsk-abcdefghijklmnopqrstuvwxyz"}`, `{"content":"x\n[REDACTED]"}`},
		{"secret key", `{"hunter2-api-key-value": 1}`, `{"[REDACTED]": 1}`},
		{"not json", `{"content": "sk-abcdefghijklmnopqrstuvwxyz`, `{"content": "[REDACTED]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.JSON(tt.in); got != tt.want {
				t.Errorf("JSON(%q)\n = %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactMessage(t *testing.T) {
	r := newRedactor()
	const tok = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
	m := openai.ChatCompletionMessage{
		Role: "assistant", Content: "c " + tok, ReasoningContent: "r " + tok, Refusal: "f " + tok,
		ToolCalls: []openai.ToolCall{{ID: "1", Function: openai.FunctionCall{Name: "write_file", Arguments: `{"content":"` + tok + `"}`}}},
	}
	got := r.Message(m)
	b, _ := json.Marshal(got)
	if strings.Contains(string(b), tok) {
		t.Errorf("redacted message still holds the token: %s", b)
	}
	if !strings.Contains(m.ToolCalls[0].Function.Arguments, tok) || !strings.Contains(m.Content, tok) {
		t.Error("Message changed its argument")
	}
	parts := openai.ChatCompletionMessage{Role: "user", MultiContent: []openai.ChatMessagePart{{Type: "text", Text: tok}}}
	if got := r.Message(parts); got.MultiContent[0].Text != redactedText || parts.MultiContent[0].Text != tok {
		t.Errorf("MultiContent: %+v", got.MultiContent)
	}
}

func TestRedactError(t *testing.T) {
	r := newRedactor("hunter2-api-key-value")
	base := errors.New("boom")
	err := r.Error(fmt.Errorf("call with hunter2-api-key-value: %w", base))
	if err.Error() != "call with [REDACTED]: boom" || !errors.Is(err, base) {
		t.Errorf("Error = %q, Is = %v", err, errors.Is(err, base))
	}
	if r.Error(base) != base || r.Error(nil) != nil {
		t.Error("an error without secrets was wrapped")
	}
}
