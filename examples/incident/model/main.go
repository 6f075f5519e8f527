// Command model serves a scripted model conversation as an
// OpenAI-compatible chat-completions endpoint, so that the incident flow
// of examples/incident runs without a hosted model: each POST
// /v1/chat/completions is answered with the next response body of the
// conversation file (a JSON array of chat completion bodies in OpenAI's
// wire format), byte for byte. It does not look at what it is asked; once
// the conversation is used up it answers 400, as OpenAI answers a request
// it refuses, which a client does not retry. Restart it to start over.
//
//	go run ./examples/incident/model [--listen 127.0.0.1:8081] examples/incident/conversation.json
//
// It logs one line per request (never a header, so never a key) and stops
// on SIGINT or SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxRequestBytes bounds a request body; the incident conversation's
// requests are a few tens of kilobytes.
const maxRequestBytes = 16 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("model", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to serve the OpenAI-compatible API on (its base URL is http://ADDR/v1)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: model [--listen ADDR] CONVERSATION.json")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "model: want one conversation file, got %d arguments\n", fs.NArg())
		fs.Usage()
		return 2
	}
	c, err := loadConversation(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "model: %v\n", err)
		return 1
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "model: %v\n", err)
		return 1
	}
	c.log = stderr
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "model: serving %d responses of %s on http://%s/v1\n", len(c.responses), fs.Arg(0), ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = srv.Shutdown(shutdown)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "model: %v\n", err)
		return 1
	}
	return 0
}

// conversation answers requests with its responses, in order.
type conversation struct {
	mu        sync.Mutex
	responses []json.RawMessage
	ids       []string
	next      int
	log       io.Writer
}

// loadConversation reads a conversation file: a JSON array of chat
// completion bodies, each with an id and at least one choice.
func loadConversation(path string) (*conversation, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := &conversation{}
	if err := json.Unmarshal(b, &c.responses); err != nil {
		return nil, fmt.Errorf("%s: want a JSON array of chat completion bodies: %w", path, err)
	}
	if len(c.responses) == 0 {
		return nil, fmt.Errorf("%s: the conversation has no responses", path)
	}
	for i, r := range c.responses {
		var head struct {
			ID      string            `json:"id"`
			Object  string            `json:"object"`
			Choices []json.RawMessage `json:"choices"`
		}
		if err := json.Unmarshal(r, &head); err != nil || head.Object != "chat.completion" || len(head.Choices) == 0 {
			return nil, fmt.Errorf("%s: response %d is not a chat completion (want an object with \"object\": \"chat.completion\" and choices)", path, i+1)
		}
		c.ids = append(c.ids, head.ID)
	}
	return c, nil
}

func (c *conversation) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/chat/completions" {
		openAIError(w, http.StatusNotFound, "unknown url "+r.URL.Path+": this server answers POST /v1/chat/completions only")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		openAIError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	var req struct {
		Model    string `json:"model"`
		Messages []struct {
			Role string `json:"role"`
		} `json:"messages"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		openAIError(w, http.StatusBadRequest, "the request is not a chat completion request: "+err.Error())
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next == len(c.responses) {
		fmt.Fprintf(c.log, "model: request %d (%s, %d messages): the conversation is used up\n", c.next+1, req.Model, len(req.Messages))
		openAIError(w, http.StatusBadRequest, fmt.Sprintf("the scripted conversation has %d responses, all given; restart the server to start over", len(c.responses)))
		return
	}
	fmt.Fprintf(c.log, "model: request %d (%s, %d messages) -> %s\n", c.next+1, req.Model, len(req.Messages), c.ids[c.next])
	w.Header().Set("Content-Type", "application/json")
	w.Write(c.responses[c.next])
	c.next++
}

// openAIError answers as the OpenAI API does when it refuses a request.
func openAIError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": msg, "type": "invalid_request_error", "param": nil, "code": strings.ReplaceAll(strings.ToLower(http.StatusText(code)), " ", "_"),
	}})
	w.Write(b)
}
