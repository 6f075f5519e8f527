package agent

import (
	"context"

	"github.com/sashabaranov/go-openai"
)

// Model is an OpenAI-compatible chat-completion endpoint. *openai.Client
// satisfies it; so do the retrying Provider and the recorded replay model.
type Model interface {
	CreateChatCompletion(ctx context.Context, req openai.ChatCompletionRequest) (openai.ChatCompletionResponse, error)
}

var _ Model = (*openai.Client)(nil)
