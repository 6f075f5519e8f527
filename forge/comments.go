package forge

import (
	"slices"
	"strings"
	"time"

	"github.com/agentgitops/reconciler/ledger"
)

// Comment is one thing a person wrote on a proposal's pull request, as the
// forge reports it: a review (with its state) or a comment on the pull
// request's conversation. It is evidence of what people said, never of
// who they are: Login is the forge's word, and Body is untrusted text.
type Comment struct {
	// Kind is ledger.CommentReview or ledger.CommentConversation.
	Kind string
	// State is a review's state, one of the ledger.Review* values; "" for
	// a conversation comment.
	State string
	// Login is the author's login as the forge reports it.
	Login string
	// Time is when it was written (a review: submitted).
	Time time.Time
	// Body is the text as written, unbounded and unredacted: the caller
	// bounds and redacts it before keeping it.
	Body string
	// ID is the forge's id of the review or comment.
	ID int64
}

// maxCommentPages bounds the pages of reviews and of comments
// ReviewComments reads from a forge (each of 50 on Gitea, 100 on GitHub):
// a pull request with more keeps the first ones the forge lists.
const maxCommentPages = 10

// reconcilerMarker starts the hidden markers the reconciler puts in the
// comments it posts (reconciler:closed, reconciler:updated,
// reconciler-violation, ...).
const reconcilerMarker = "<!-- reconciler"

// ownComment reports whether a comment is the reconciler's own: posted by
// the login its token acts as, or carrying one of its markers (another
// instance's note, on the same pull request).
func ownComment(login, self, body string) bool {
	return strings.EqualFold(login, self) || strings.Contains(body, reconcilerMarker)
}

// keepReview reports whether a review of state (already mapped to a
// ledger.Review* value, "" for a state that is not a submitted review)
// says something: a decision, or a comment with a body. A COMMENT review
// without a body holds only inline comments, which are not read.
func keepReview(state, body string) bool {
	switch state {
	case ledger.ReviewApproved, ledger.ReviewRequestChanges, ledger.ReviewDismissed:
		return true
	case ledger.ReviewCommented:
		return strings.TrimSpace(body) != ""
	}
	return false
}

// sortComments orders comments by time, keeping the order the forge
// listed them in (each list by id) for equal times: forges report times
// to the second.
func sortComments(cs []Comment) []Comment {
	slices.SortStableFunc(cs, func(a, b Comment) int { return a.Time.Compare(b.Time) })
	return cs
}
