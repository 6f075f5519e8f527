package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

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
	// Attempts are, for a run of an agent with model tiers that
	// escalated, the attempts before the last, each with its model and
	// steps (tiers.go); the rest of the transcript is the last attempt's,
	// but Usage, which is the whole run's.
	Attempts []TranscriptAttempt `json:"attempts,omitempty"`
	Steps    []TranscriptStep    `json:"steps"`
	// Result is set when the run finished; Error when it failed.
	Result     *TranscriptResult `json:"result,omitempty"`
	Error      string            `json:"error,omitempty"`
	Usage      TranscriptUsage   `json:"usage"`
	DurationMS float64           `json:"duration_ms"`
}

// TranscriptLimits are the limits a run ran with; Replay applies the same.
// The limits on work are named as in limits { }; a transcript without them
// (written before they existed) replays with the agent's.
type TranscriptLimits struct {
	MaxSteps            int    `json:"max_steps"`
	MaxTokens           int    `json:"max_tokens"`
	Timeout             string `json:"timeout"`
	ContextTokens       int    `json:"context_tokens"`
	MaxFileBytes        int64  `json:"max_file_bytes"`
	MaxResultBytes      int    `json:"max_result_bytes"`
	ReadLines           int    `json:"read_lines"`
	MaxToolCallsPerStep int    `json:"max_tool_calls_per_step,omitempty"`
	MaxToolCalls        int    `json:"max_tool_calls,omitempty"`
	MaxFilesWritten     int    `json:"max_files_written,omitempty"`
	MaxBytesWritten     int64  `json:"max_bytes_written,omitempty"`
	MaxBytesRead        int64  `json:"max_bytes_read,omitempty"`
	MaxTranscriptBytes  int64  `json:"max_transcript_bytes,omitempty"`
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
	// Limit names the limit on work (max_tool_calls_per_step,
	// max_tool_calls, max_transcript_bytes) the reply reached, ending the
	// run before any of its calls ran; Error says how. Replay ends the
	// run here too.
	Limit string `json:"limit,omitempty"`
	// Cached is set when the reply came from the response cache
	// (cache.go), whose entry CacheKey names; the step's Usage is then
	// zero: it was charged nothing.
	Cached   bool   `json:"cached,omitempty"`
	CacheKey string `json:"cache_key,omitempty"`
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
//
// The message is recorded whole except where that would keep what the
// run refused: the arguments of a tool call that did not run or failed
// are cut to their first 1 KiB (as in its TranscriptToolCall, which has
// their size and digest), the calls of a reply over
// max_tool_calls_per_step after the first that many (ToolCallsOmitted
// counts them), and the text of a reply that would have taken the
// transcript over max_transcript_bytes to its first 1 KiB.
type TranscriptResponse struct {
	ID               string                       `json:"id,omitempty"`
	Model            string                       `json:"model,omitempty"`
	Created          int64                        `json:"created,omitempty"`
	FinishReason     string                       `json:"finish_reason,omitempty"`
	Message          openai.ChatCompletionMessage `json:"message"`
	ToolCallsOmitted int                          `json:"tool_calls_omitted,omitempty"`
	Usage            TranscriptModelUsage         `json:"usage"`
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
//
// The arguments of a call that ran and succeeded are recorded whole, as
// replaying it needs them, unless the run failed. Those of a call that
// was refused, failed or was skipped, and every call of a run that failed,
// are recorded whole only up to 1 KiB: longer ones are cut to their first
// 1 KiB, with ArgsBytes and ArgsSHA256 the size and hex SHA-256 of the
// whole, and Replay takes such a call's recorded Result (and BytesRead)
// instead of running it.
type TranscriptToolCall struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Arguments  string  `json:"arguments"`
	ArgsBytes  int     `json:"args_bytes,omitempty"`
	ArgsSHA256 string  `json:"args_sha256,omitempty"`
	Start      string  `json:"start"`
	DurationMS float64 `json:"duration_ms"`
	// BytesRead is the file content the call read, counted against
	// max_bytes_read.
	BytesRead int64  `json:"bytes_read,omitempty"`
	Result    string `json:"result"`
	Error     bool   `json:"error,omitempty"`
	// Limit names the limit on work the call reached, ending the run;
	// Result says how. Replay ends the run here too.
	Limit string `json:"limit,omitempty"`
	// Skipped is set for calls after a successful finish, which are not
	// run.
	Skipped bool `json:"skipped,omitempty"`
}

// truncated reports whether the call's arguments were cut.
func (c *TranscriptToolCall) truncated() bool { return c.ArgsSHA256 != "" }

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

// maxRecordedArgs is how much of the arguments of a call that did not run
// or failed the transcript keeps, and the length of text kept of a reply
// that would take it over max_transcript_bytes.
const maxRecordedArgs = 1 << 10

// argsDigest is the hex SHA-256 of s, without copying it whole.
func argsDigest(s string) string {
	h := sha256.New()
	buf := make([]byte, min(len(s), 32<<10))
	for len(s) > 0 {
		n := copy(buf, s)
		h.Write(buf[:n])
		s = s[n:]
	}
	return hex.EncodeToString(h.Sum(nil))
}

// jsonLen is the length of s as a JSON string, quotes included, as the
// transcript encodes it (encoding/json without HTML escaping).
func jsonLen(s string) int64 {
	n := int64(2)
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
				n += 2
			case c < 0x20:
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			n += 6
		} else {
			n += int64(size)
		}
		i += size
	}
	return n
}

// encodedLen is the size of v as an element of the transcript's steps,
// encoded as Marshal encodes it.
func encodedLen(v any) int64 {
	var c countingWriter
	enc := json.NewEncoder(&c)
	enc.SetEscapeHTML(false)
	enc.SetIndent("    ", "  ")
	if err := enc.Encode(v); err != nil {
		return 0
	}
	return c.n
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// stamp formats a time for the transcript.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// millis is a duration in milliseconds, to the microsecond.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
