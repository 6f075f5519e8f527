package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sashabaranov/go-openai"
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.String(tt.in); got != tt.want {
				t.Errorf("String(%q)\n = %q\nwant %q", tt.in, got, tt.want)
			}
		})
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
