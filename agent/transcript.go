package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sashabaranov/go-openai"
)

// TranscriptVersion is the version of the transcript format Run writes
// and Replay reads.
const TranscriptVersion = 1

// ErrTranscript is wrapped when a transcript cannot be read.
var ErrTranscript = errors.New("invalid transcript")

// Transcript is the record of a model-backed run, stored on the evidence
// branch as transcripts/<run-id>.json: every request (the messages sent),
// response, tool call and tool result, with timings and token counts, and
// the outcome. Secrets are redacted before anything is recorded. Fields
// are written in the order declared here.
//
// Requests are recorded as deltas: Messages holds the messages appended
// since the previous request, starting at index MessagesFrom, and Elided
// the earlier messages replaced by short notices to save context. The
// full request is the previous one's messages with the elisions applied,
// followed by Messages.
type Transcript struct {
	Version    int              `json:"version"`
	Agent      string           `json:"agent"`
	RunID      string           `json:"run_id"`
	SpecCommit string           `json:"spec_commit"`
	Trigger    string           `json:"trigger"`
	Provider   string           `json:"provider,omitempty"`
	Model      string           `json:"model"`
	Limits     TranscriptLimits `json:"limits"`
	Tools      []TranscriptTool `json:"tools"`
	Start      string           `json:"start"`
	Steps      []TranscriptStep `json:"steps"`
	// Result is set when the run finished; Error when it failed.
	Result     *TranscriptResult `json:"result,omitempty"`
	Error      string            `json:"error,omitempty"`
	Usage      TranscriptUsage   `json:"usage"`
	DurationMS float64           `json:"duration_ms"`
}

// TranscriptLimits are the limits a run ran with; Replay applies the same.
type TranscriptLimits struct {
	MaxSteps       int    `json:"max_steps"`
	MaxTokens      int    `json:"max_tokens"`
	Timeout        string `json:"timeout"`
	ContextTokens  int    `json:"context_tokens"`
	MaxFileBytes   int64  `json:"max_file_bytes"`
	MaxResultBytes int    `json:"max_result_bytes"`
	ReadLines      int    `json:"read_lines"`
}

// TranscriptTool is a tool the model was offered.
type TranscriptTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
}

// TranscriptStep is one model call and the tool calls of its reply.
type TranscriptStep struct {
	Step       int                 `json:"step"`
	Request    TranscriptRequest   `json:"request"`
	Start      string              `json:"start"`
	DurationMS float64             `json:"duration_ms"`
	Response   *TranscriptResponse `json:"response,omitempty"`
	Error      string              `json:"error,omitempty"`
	// Usage is what the step counted against the token limit: the
	// response's usage, or an estimate (chars/4) when it reported none.
	Usage     TranscriptUsage      `json:"usage"`
	ToolCalls []TranscriptToolCall `json:"tool_calls,omitempty"`
	// Note says what the loop did besides calling tools (a nudge).
	Note string `json:"note,omitempty"`
}

// TranscriptRequest is what a step sent, as a delta (see Transcript).
type TranscriptRequest struct {
	MessagesFrom    int                            `json:"messages_from"`
	Messages        []openai.ChatCompletionMessage `json:"messages"`
	Elided          []TranscriptElision            `json:"elided,omitempty"`
	EstimatedTokens int                            `json:"estimated_tokens"`
}

// TranscriptElision replaces an earlier message's content (a tool
// result) or one of its tool call's arguments with a short notice.
type TranscriptElision struct {
	Index      int    `json:"index"`
	ToolCallID string `json:"tool_call_id,omitempty"`
	Content    string `json:"content,omitempty"`
	Arguments  string `json:"arguments,omitempty"`
}

// TranscriptResponse is the part of a chat completion response the loop
// uses: the first choice and the usage. Replay feeds it back.
type TranscriptResponse struct {
	ID           string                       `json:"id,omitempty"`
	Model        string                       `json:"model,omitempty"`
	Created      int64                        `json:"created,omitempty"`
	FinishReason string                       `json:"finish_reason,omitempty"`
	Message      openai.ChatCompletionMessage `json:"message"`
	Usage        TranscriptModelUsage         `json:"usage"`
}

// TranscriptModelUsage is the usage a response reported.
type TranscriptModelUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// TranscriptUsage counts tokens.
type TranscriptUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	Estimated    bool  `json:"estimated,omitempty"`
}

// TranscriptToolCall is one tool call and its result as the model saw it.
type TranscriptToolCall struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Arguments  string  `json:"arguments"`
	Start      string  `json:"start"`
	DurationMS float64 `json:"duration_ms"`
	Result     string  `json:"result"`
	Error      bool    `json:"error,omitempty"`
	// Skipped is set for calls after a successful finish, which are not
	// run.
	Skipped bool `json:"skipped,omitempty"`
}

// TranscriptResult is what a finished run reported.
type TranscriptResult struct {
	Summary   string `json:"summary"`
	Rationale string `json:"rationale"`
	Risk      string `json:"risk"`
}

// Marshal encodes the transcript as indented JSON ending in a newline.
func (t *Transcript) Marshal() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(t); err != nil {
		return nil, fmt.Errorf("encode transcript: %w", err)
	}
	return b.Bytes(), nil
}

// ParseTranscript decodes a transcript. It returns an error wrapping
// ErrTranscript when the data is not a transcript of a version it reads.
func ParseTranscript(data []byte) (*Transcript, error) {
	var t Transcript
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTranscript, err)
	}
	if t.Version != TranscriptVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrTranscript, t.Version, TranscriptVersion)
	}
	return &t, nil
}

// response returns the recorded response as the model returned it.
func (r *TranscriptResponse) response() openai.ChatCompletionResponse {
	return openai.ChatCompletionResponse{
		ID:      r.ID,
		Object:  "chat.completion",
		Created: r.Created,
		Model:   r.Model,
		Choices: []openai.ChatCompletionChoice{{Message: r.Message, FinishReason: openai.FinishReason(r.FinishReason)}},
		Usage: openai.Usage{
			PromptTokens:     r.Usage.PromptTokens,
			CompletionTokens: r.Usage.CompletionTokens,
			TotalTokens:      r.Usage.TotalTokens,
		},
	}
}

// stamp formats a time for the transcript.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// millis is a duration in milliseconds, to the microsecond.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
