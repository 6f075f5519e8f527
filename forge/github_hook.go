package forge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/go-github/v88/github"
)

// VerifyGitHubSignature reports whether header, a delivery's
// X-Hub-Signature-256 ("sha256=" and the hex HMAC-SHA256 of body keyed by
// the webhook secret), proves body was sent with secret. The legacy SHA-1
// X-Hub-Signature is not accepted, and an empty secret verifies nothing.
// The comparison takes constant time.
func VerifyGitHubSignature(secret, body []byte, header string) bool {
	if len(secret) == 0 {
		return false
	}
	hexSum, ok := strings.CutPrefix(header, "sha256=")
	if !ok || len(hexSum) != 2*sha256.Size {
		return false
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// GitHubHookBranch returns the branch a verified delivery is about, for
// the events that can change a proposal: pull_request and
// pull_request_review (the pull request's head branch) and push (the
// branch pushed). ok is false for other events, for pushes of tags, and
// for pull requests from forks (never a proposal). It fails on a body that
// does not decode as the event says.
func GitHubHookBranch(event string, body []byte) (branch string, ok bool, err error) {
	switch event {
	case "pull_request", "pull_request_review", "push":
	default:
		return "", false, nil
	}
	payload, err := github.ParseWebHook(event, body)
	if err != nil {
		return "", false, fmt.Errorf("github %s delivery: %w", event, err)
	}
	var pr *github.PullRequest
	switch e := payload.(type) {
	case *github.PullRequestEvent:
		pr = e.GetPullRequest()
	case *github.PullRequestReviewEvent:
		pr = e.GetPullRequest()
	case *github.PushEvent:
		b, isBranch := strings.CutPrefix(e.GetRef(), "refs/heads/")
		if !isBranch || b == "" {
			return "", false, nil
		}
		return b, true, nil
	}
	if pr == nil {
		return "", false, fmt.Errorf("github %s delivery has no pull request", event)
	}
	head, base := pr.GetHead().GetRepo(), pr.GetBase().GetRepo()
	if head == nil || base == nil || head.GetID() != base.GetID() {
		return "", false, nil
	}
	return pr.GetHead().GetRef(), pr.GetHead().GetRef() != "", nil
}
