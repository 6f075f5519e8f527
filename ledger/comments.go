package ledger

import (
	"fmt"
	"strings"
	"time"
)

// Comments is set on proposal.merged and proposal.rejected of a proposal
// reviewed on a pull-request forge: what people wrote on its pull request
// (reviews with their state, and the conversation's comments), read once
// when the outcome was recorded, oldest first. It is untrusted text: the
// authors are logins as the forge reported them, which the reconciler did
// not verify, and the bodies are what those people wrote, redacted and
// bounded (MaxComments items of at most MaxCommentBytes, MaxCommentsBytes
// in all). The reconciler's own comments are never in it.
type Comments struct {
	Items []Comment `json:"items"`
	// Omitted counts the comments left out by the bounds (the oldest go
	// first); 0 when every one is recorded.
	Omitted int `json:"omitted,omitempty"`
}

// Comment kinds.
const (
	// CommentReview is a pull request review: its state and body.
	CommentReview = "review"
	// CommentConversation is a comment on the pull request's
	// conversation (an issue comment).
	CommentConversation = "comment"
)

// Review states of a CommentReview, as both forges' APIs name them
// (GitHub's CHANGES_REQUESTED and COMMENTED are recorded as
// REQUEST_CHANGES and COMMENT).
const (
	ReviewApproved       = "APPROVED"
	ReviewRequestChanges = "REQUEST_CHANGES"
	ReviewCommented      = "COMMENT"
	// ReviewDismissed is a review a maintainer dismissed (GitHub reports
	// no state besides; Gitea's dismissed reviews are recorded so too).
	ReviewDismissed = "DISMISSED"
)

// Bounds of Comments.
const (
	// MaxComments is how many comments one entry records at most.
	MaxComments = 20
	// MaxCommentBytes bounds one comment's body (after redaction); a
	// longer one is cut and marked Truncated.
	MaxCommentBytes = 1000
	// MaxCommentsBytes bounds the JSON of all of an entry's comments.
	MaxCommentsBytes = 16 << 10
	// MaxCommentLogin bounds an author's login.
	MaxCommentLogin = 100
)

// Comment is one thing a person wrote on a proposal's pull request.
type Comment struct {
	// Kind is review or comment.
	Kind string `json:"kind"`
	// State is a review's state (APPROVED, REQUEST_CHANGES, COMMENT,
	// DISMISSED); empty for a conversation comment.
	State string `json:"state,omitempty"`
	// ForgeLogin is the author's login as the forge reported it: not
	// verified by the reconciler, nor matched against reviewers.hcl.
	ForgeLogin string `json:"forge_login"`
	// Time is when it was written (a review: submitted), as the forge
	// reported it.
	Time time.Time `json:"time,omitzero"`
	// Body is the text, redacted, control characters stripped, at most
	// MaxCommentBytes.
	Body string `json:"body"`
	// Truncated marks a body cut to MaxCommentBytes.
	Truncated bool `json:"truncated,omitempty"`
}

// validate checks comments recorded on an event of type typ.
func (c *Comments) validate(typ string) error {
	if c == nil {
		return nil
	}
	if typ != ProposalMerged && typ != ProposalRejected {
		return fmt.Errorf("%w: %s: comments are recorded only on %s and %s", ErrEventInvalid, typ, ProposalMerged, ProposalRejected)
	}
	if len(c.Items) > MaxComments {
		return fmt.Errorf("%w: %s: %d comments, at most %d", ErrEventInvalid, typ, len(c.Items), MaxComments)
	}
	if c.Omitted < 0 {
		return fmt.Errorf("%w: %s: comments omitted %d", ErrEventInvalid, typ, c.Omitted)
	}
	for i, it := range c.Items {
		switch {
		case it.Kind == CommentReview && !validReviewState(it.State):
			return fmt.Errorf("%w: %s: comment %d: review state %q is not one of APPROVED, REQUEST_CHANGES, COMMENT, DISMISSED", ErrEventInvalid, typ, i, it.State)
		case it.Kind == CommentConversation && it.State != "":
			return fmt.Errorf("%w: %s: comment %d: a conversation comment has no state", ErrEventInvalid, typ, i)
		case it.Kind != CommentReview && it.Kind != CommentConversation:
			return fmt.Errorf("%w: %s: comment %d: kind %q is not review or comment", ErrEventInvalid, typ, i, it.Kind)
		case it.ForgeLogin == "" || len(it.ForgeLogin) > MaxCommentLogin || strings.ContainsAny(it.ForgeLogin, "\r\n"):
			return fmt.Errorf("%w: %s: comment %d: forge_login must be one line of 1 to %d bytes", ErrEventInvalid, typ, i, MaxCommentLogin)
		case len(it.Body) > MaxCommentBytes:
			return fmt.Errorf("%w: %s: comment %d: body is %d bytes, at most %d", ErrEventInvalid, typ, i, len(it.Body), MaxCommentBytes)
		}
	}
	return nil
}

func validReviewState(s string) bool {
	switch s {
	case ReviewApproved, ReviewRequestChanges, ReviewCommented, ReviewDismissed:
		return true
	}
	return false
}
