package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/sashabaranov/go-openai"
)

// createStream sends req as a stream, asking for the usage chunk, and
// reassembles the chunks with an accumulator.
func (p *Provider) createStream(ctx context.Context, req openai.ChatCompletionRequest) (openai.ChatCompletionResponse, error) {
	req.Stream = true
	req.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	s, err := p.client.CreateChatCompletionStream(ctx, req)
	if err != nil {
		return openai.ChatCompletionResponse{}, err
	}
	defer s.Close()
	var acc accumulator
	for {
		chunk, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return openai.ChatCompletionResponse{}, err
		}
		acc.add(chunk)
	}
	return acc.response()
}

// Accumulate turns stream chunks into the equivalent non-streamed
// response: per choice, content, refusal and reasoning content
// concatenated; tool calls reconstructed by index, with id, type and name
// from the first delta that has them and argument fragments concatenated in
// order; the last finish_reason. ID, model, created and system fingerprint
// come from the first chunk that has them. Usage is the sum of the chunks'
// usage: the one usage chunk that stream_options.include_usage asks for.
// Log probabilities are not reassembled.
//
// Tool-call deltas without an index (some OpenAI-compatible servers) start
// a new call when they carry a new id, or a name while the last call has
// one; otherwise they continue the last call. A delta that reuses an index
// with a different id starts a new call.
//
// Accumulate fails with ErrInvalidChatResponse when there are no choices,
// and with ErrIncompleteStream, returning what it assembled, when a choice
// has no finish_reason.
func Accumulate(chunks []openai.ChatCompletionStreamResponse) (openai.ChatCompletionResponse, error) {
	var acc accumulator
	for _, c := range chunks {
		acc.add(c)
	}
	return acc.response()
}

// accumulator reassembles a stream chunk by chunk.
type accumulator struct {
	resp    openai.ChatCompletionResponse
	chunks  int
	choices []*choiceAcc
	usage   *openai.Usage
}

type choiceAcc struct {
	index     int
	role      string
	content   strings.Builder
	refusal   strings.Builder
	reasoning strings.Builder
	function  *toolCallAcc // legacy function_call
	calls     []*toolCallAcc
	byIndex   map[int]*toolCallAcc
	finish    openai.FinishReason
	filter    openai.ContentFilterResults
}

type toolCallAcc struct {
	order int // the delta index, or the order of appearance without one
	id    string
	typ   openai.ToolType
	name  string
	args  strings.Builder
}

func (a *accumulator) add(c openai.ChatCompletionStreamResponse) {
	a.chunks++
	if a.resp.ID == "" {
		a.resp.ID = c.ID
	}
	if a.resp.Model == "" {
		a.resp.Model = c.Model
	}
	if a.resp.Created == 0 {
		a.resp.Created = c.Created
	}
	if a.resp.SystemFingerprint == "" {
		a.resp.SystemFingerprint = c.SystemFingerprint
	}
	if len(a.resp.PromptFilterResults) == 0 {
		a.resp.PromptFilterResults = c.PromptFilterResults
	}
	if c.Usage != nil {
		a.usage = addUsage(a.usage, c.Usage)
	}
	for _, ch := range c.Choices {
		a.choice(ch.Index).add(ch)
	}
}

func (a *accumulator) choice(i int) *choiceAcc {
	for _, c := range a.choices {
		if c.index == i {
			return c
		}
	}
	c := &choiceAcc{index: i, byIndex: map[int]*toolCallAcc{}}
	a.choices = append(a.choices, c)
	return c
}

func (c *choiceAcc) add(ch openai.ChatCompletionStreamChoice) {
	d := ch.Delta
	if c.role == "" {
		c.role = d.Role
	}
	c.content.WriteString(d.Content)
	c.refusal.WriteString(d.Refusal)
	c.reasoning.WriteString(d.ReasoningContent)
	if f := d.FunctionCall; f != nil {
		if c.function == nil {
			c.function = &toolCallAcc{}
		}
		if c.function.name == "" {
			c.function.name = f.Name
		}
		c.function.args.WriteString(f.Arguments)
	}
	for _, tc := range d.ToolCalls {
		t := c.call(tc)
		if t.id == "" {
			t.id = tc.ID
		}
		if t.typ == "" {
			t.typ = tc.Type
		}
		if t.name == "" {
			t.name = tc.Function.Name
		}
		t.args.WriteString(tc.Function.Arguments)
	}
	if ch.FinishReason != "" && ch.FinishReason != openai.FinishReasonNull {
		c.finish = ch.FinishReason
	}
	if ch.ContentFilterResults != (openai.ContentFilterResults{}) {
		c.filter = ch.ContentFilterResults
	}
}

// call finds the call a tool-call delta belongs to, or starts one.
func (c *choiceAcc) call(tc openai.ToolCall) *toolCallAcc {
	if tc.Index != nil {
		if t := c.byIndex[*tc.Index]; t != nil && (tc.ID == "" || t.id == "" || tc.ID == t.id) {
			return t
		}
		t := &toolCallAcc{order: *tc.Index}
		c.byIndex[*tc.Index] = t
		c.calls = append(c.calls, t)
		return t
	}
	if n := len(c.calls); n > 0 {
		last := c.calls[n-1]
		sameID := tc.ID == "" || last.id == "" || tc.ID == last.id
		newName := tc.ID == "" && tc.Function.Name != "" && last.name != ""
		if sameID && !newName {
			return last
		}
	}
	t := &toolCallAcc{order: len(c.calls)}
	c.calls = append(c.calls, t)
	return t
}

func (a *accumulator) response() (openai.ChatCompletionResponse, error) {
	resp := a.resp
	resp.Object = "chat.completion"
	if a.usage != nil {
		resp.Usage = *a.usage
	}
	if len(a.choices) == 0 {
		return resp, fmt.Errorf("%w: stream of %d chunks has no choices", ErrInvalidChatResponse, a.chunks)
	}
	slices.SortStableFunc(a.choices, func(x, y *choiceAcc) int { return cmp.Compare(x.index, y.index) })
	var incomplete []int
	for _, c := range a.choices {
		msg := openai.ChatCompletionMessage{
			Role:             cmp.Or(c.role, openai.ChatMessageRoleAssistant),
			Content:          c.content.String(),
			Refusal:          c.refusal.String(),
			ReasoningContent: c.reasoning.String(),
		}
		if f := c.function; f != nil {
			msg.FunctionCall = &openai.FunctionCall{Name: f.name, Arguments: f.args.String()}
		}
		slices.SortStableFunc(c.calls, func(x, y *toolCallAcc) int { return cmp.Compare(x.order, y.order) })
		for _, t := range c.calls {
			msg.ToolCalls = append(msg.ToolCalls, openai.ToolCall{
				ID:       t.id,
				Type:     cmp.Or(t.typ, openai.ToolTypeFunction),
				Function: openai.FunctionCall{Name: t.name, Arguments: t.args.String()},
			})
		}
		resp.Choices = append(resp.Choices, openai.ChatCompletionChoice{
			Index:                c.index,
			Message:              msg,
			FinishReason:         c.finish,
			ContentFilterResults: c.filter,
		})
		if c.finish == "" {
			incomplete = append(incomplete, c.index)
		}
	}
	if len(incomplete) > 0 {
		return resp, fmt.Errorf("%w: choice %v of %d chunks", ErrIncompleteStream, incomplete, a.chunks)
	}
	return resp, nil
}

// addUsage adds u to sum, details included.
func addUsage(sum, u *openai.Usage) *openai.Usage {
	if sum == nil {
		sum = &openai.Usage{}
	}
	sum.PromptTokens += u.PromptTokens
	sum.CompletionTokens += u.CompletionTokens
	sum.TotalTokens += u.TotalTokens
	if d := u.PromptTokensDetails; d != nil {
		if sum.PromptTokensDetails == nil {
			sum.PromptTokensDetails = &openai.PromptTokensDetails{}
		}
		sum.PromptTokensDetails.AudioTokens += d.AudioTokens
		sum.PromptTokensDetails.CachedTokens += d.CachedTokens
	}
	if d := u.CompletionTokensDetails; d != nil {
		if sum.CompletionTokensDetails == nil {
			sum.CompletionTokensDetails = &openai.CompletionTokensDetails{}
		}
		s := sum.CompletionTokensDetails
		s.AudioTokens += d.AudioTokens
		s.ReasoningTokens += d.ReasoningTokens
		s.AcceptedPredictionTokens += d.AcceptedPredictionTokens
		s.RejectedPredictionTokens += d.RejectedPredictionTokens
	}
	return sum
}
