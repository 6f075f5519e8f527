package forge_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentgitops/reconciler/forge"
)

// TestGitHubRecordedWebhookSignatures verifies X-Hub-Signature-256 on
// GitHub's documented test vector and on the seven deliveries captured
// from GitHub with their published secret, and rejects a wrong secret, a
// changed body, the legacy SHA-1 header, a missing or malformed header
// and an empty secret.
func TestGitHubRecordedWebhookSignatures(t *testing.T) {
	var v struct {
		Docs struct {
			Secret, Payload string
			Header          string `json:"X-Hub-Signature-256"`
		} `json:"github_docs_test_vector"`
		Captured struct {
			Secret string
		} `json:"github_captured_deliveries"`
	}
	readJSON(t, filepath.Join(ghData, "webhooks", "signature-vectors.json"), &v)
	if !forge.VerifyGitHubSignature([]byte(v.Docs.Secret), []byte(v.Docs.Payload), v.Docs.Header) {
		t.Error("GitHub's documented test vector does not verify")
	}
	files, err := filepath.Glob(filepath.Join(ghData, "webhooks", "cogni", "*.json"))
	if err != nil || len(files) != 3 {
		t.Fatalf("deliveries %v, %v", files, err)
	}
	for _, f := range files {
		var d struct {
			Headers map[string]string
			Body    string `json:"body_raw_base64"`
		}
		readJSON(t, f, &d)
		body, err := base64.StdEncoding.DecodeString(d.Body)
		if err != nil {
			t.Fatal(err)
		}
		secret := []byte(v.Captured.Secret)
		sig := d.Headers["x-hub-signature-256"]
		if !forge.VerifyGitHubSignature(secret, body, sig) {
			t.Errorf("%s: the captured signature does not verify", f)
		}
		changed := append([]byte{}, body...)
		changed[len(changed)/2] ^= 1
		for name, bad := range map[string]bool{
			"wrong secret": forge.VerifyGitHubSignature([]byte("not the secret"), body, sig),
			"changed body": forge.VerifyGitHubSignature(secret, changed, sig),
			"sha1 header":  forge.VerifyGitHubSignature(secret, body, d.Headers["x-hub-signature"]),
			"no header":    forge.VerifyGitHubSignature(secret, body, ""),
			"bare hex":     forge.VerifyGitHubSignature(secret, body, sig[len("sha256="):]),
			"short":        forge.VerifyGitHubSignature(secret, body, sig[:len(sig)-2]),
			"empty secret": forge.VerifyGitHubSignature(nil, body, sig),
			"not hex":      forge.VerifyGitHubSignature(secret, body, "sha256="+string(make([]byte, 64))),
		} {
			if bad {
				t.Errorf("%s: verified with %s", f, name)
			}
		}
	}
}

// FuzzVerifyGitHubSignature: never panics, and a body signed with the
// secret always verifies.
func FuzzVerifyGitHubSignature(f *testing.F) {
	f.Add([]byte("It's a Secret to Everybody"), []byte("Hello, World!"), "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
	f.Fuzz(func(t *testing.T, secret, body []byte, header string) {
		forge.VerifyGitHubSignature(secret, body, header)
		if len(secret) == 0 {
			return
		}
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		if !forge.VerifyGitHubSignature(secret, body, "sha256="+hex.EncodeToString(mac.Sum(nil))) {
			t.Fatal("a correct signature does not verify")
		}
	})
}

// TestGitHubRecordedHookBranch finds the branch recorded deliveries are
// about.
func TestGitHubRecordedHookBranch(t *testing.T) {
	cogni := func(name string) []byte {
		var d struct {
			Body string `json:"body_raw_base64"`
		}
		readJSON(t, filepath.Join(ghData, "webhooks", "cogni", name), &d)
		b, err := base64.StdEncoding.DecodeString(d.Body)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	file := func(p ...string) []byte {
		b, err := os.ReadFile(filepath.Join(append([]string{ghData, "webhooks"}, p...)...))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		event  string
		body   []byte
		branch string
		ok     bool
	}{
		{"pull_request", cogni("pull_request.opened.json"), "cogni-e2e-1759155366275", true},
		{"pull_request", cogni("pull_request.closed.json"), "cogni-e2e-1759155366275", true},
		{"pull_request_review", file("octokit", "pull_request_review.submitted.payload.json"), "changes", true},
		// From the fork skalnik/public-repo: never a proposal.
		{"pull_request_review", file("go-playground", "pull-request-review.json"), "", false},
		{"push", file("octokit", "push.payload.json"), "", false}, // a tag
		{"push", file("octokit", "push.with-new-branch.payload.json"), "master", true},
		{"check_run", []byte(`{}`), "", false},
	}
	for _, c := range cases {
		branch, ok, err := forge.GitHubHookBranch(c.event, c.body)
		if err != nil || branch != c.branch || ok != c.ok {
			t.Errorf("%s: %q %t %v, want %q %t", c.event, branch, ok, err, c.branch, c.ok)
		}
	}
	if _, _, err := forge.GitHubHookBranch("pull_request", []byte("{not json")); err == nil {
		t.Error("no error for a body that does not decode")
	}
}
