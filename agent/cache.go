package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/internal/atomicfile"
)

// DefaultCacheMaxBytes bounds a ResponseCache opened with a size of 0.
const DefaultCacheMaxBytes int64 = 256 << 20

// cacheVersion is the version of the entries a ResponseCache writes.
const cacheVersion = 1

// ResponseCache answers identical chat-completion requests from files on
// disk, for agents with cache = true. An entry's key is the hex SHA-256
// of the request's JSON (model, messages, tools and parameters, as
// encoding/json writes an openai.ChatCompletionRequest: fields in
// declaration order, map keys sorted); it is stored at
// <dir>/<key[:2]>/<key>.json with the request itself, so that an entry
// whose request does not hash to its key (planted, or corrupt) is a miss,
// never an answer. Entries are written atomically (temporary file, fsync,
// rename), so that processes sharing the directory never read a partial
// one. The directory is bounded: when an entry takes it over its size
// cap, the least recently used entries (by modification time, which a hit
// renews) are removed until it is at most nine tenths of the cap. A store
// costs O(1) in the number of entries: the size is counted by walking the
// directory on a process's first store, when its count reaches the cap,
// and at least every cacheRescan, so what other processes store is seen
// within that time (until then the directory may hold more than the cap,
// by what they stored).
//
// The API key is never stored: it travels in a header, not in the
// request, and an entry whose request or response holds one of the
// secrets given to put is not written.
//
// A ResponseCache is safe for concurrent use, also by several processes.
type ResponseCache struct {
	dir      string
	maxBytes int64
	now      func() time.Time
	mu       sync.Mutex // serializes eviction within a process, guards size and scanned
	// size is what the directory holds as far as this process knows:
	// the bytes its last walk counted, plus what it stored since;
	// scanned is when that walk ran (zero: never).
	size    int64
	scanned time.Time

	partsMu sync.Mutex
	parts   map[string]*ResponseCache // ForEndpoint's, by base URL
}

// cacheRescan bounds how long a ResponseCache goes without walking its
// directory to count what other processes stored.
const cacheRescan = time.Minute

// NewResponseCache returns the cache in dir (created when first written,
// 0700), holding at most maxBytes (0 means DefaultCacheMaxBytes).
func NewResponseCache(dir string, maxBytes int64) *ResponseCache {
	if maxBytes <= 0 {
		maxBytes = DefaultCacheMaxBytes
	}
	return &ResponseCache{dir: dir, maxBytes: maxBytes, now: time.Now}
}

// Dir is the cache's directory.
func (c *ResponseCache) Dir() string { return c.dir }

// ForEndpoint is the part of the cache for one provider endpoint (its base
// URL; "" is the provider's default): the same model name at two endpoints
// is two models, whose replies are never shared. Each part has its own cap.
func (c *ResponseCache) ForEndpoint(baseURL string) *ResponseCache {
	if c == nil || baseURL == "" {
		return c
	}
	c.partsMu.Lock()
	defer c.partsMu.Unlock()
	if p := c.parts[baseURL]; p != nil {
		return p
	}
	sum := sha256.Sum256([]byte(baseURL))
	p := &ResponseCache{dir: filepath.Join(c.dir, "endpoint-"+hex.EncodeToString(sum[:8])), maxBytes: c.maxBytes, now: c.now}
	if c.parts == nil {
		c.parts = map[string]*ResponseCache{}
	}
	c.parts[baseURL] = p
	return p
}

// cacheEntry is a cached exchange as stored.
type cacheEntry struct {
	Version int    `json:"version"`
	Key     string `json:"key"`
	// Request is the request's JSON; its SHA-256 is Key.
	Request  json.RawMessage               `json:"request"`
	Response openai.ChatCompletionResponse `json:"response"`
	Stored   string                        `json:"stored"`
}

// CacheKey returns the JSON of req, as the cache hashes it, and its key:
// the hex SHA-256 of that JSON.
func CacheKey(req openai.ChatCompletionRequest) ([]byte, string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		return nil, "", fmt.Errorf("response cache: encode request: %w", err)
	}
	body := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	sum := sha256.Sum256(body)
	return body, hex.EncodeToString(sum[:]), nil
}

func (c *ResponseCache) path(key string) string {
	return filepath.Join(c.dir, key[:2], key+".json")
}

// get returns the cached response to the request whose JSON is body and
// key is key. Any entry that cannot be read, does not decode, is of
// another version, or holds a request other than body (whose digest is
// not its key) is a miss; it is left for eviction.
func (c *ResponseCache) get(body []byte, key string) (openai.ChatCompletionResponse, bool) {
	p := c.path(key)
	b, err := os.ReadFile(p)
	if err != nil {
		return openai.ChatCompletionResponse{}, false
	}
	var e cacheEntry
	if err := json.Unmarshal(b, &e); err != nil || e.Version != cacheVersion || e.Key != key {
		return openai.ChatCompletionResponse{}, false
	}
	sum := sha256.Sum256(e.Request)
	if hex.EncodeToString(sum[:]) != key || !bytes.Equal(e.Request, body) || len(e.Response.Choices) == 0 {
		return openai.ChatCompletionResponse{}, false
	}
	now := c.now()
	os.Chtimes(p, now, now) // recently used; a failure only ages it
	return e.Response, true
}

// put stores resp as the answer to the request whose JSON is body, unless
// either holds one of secrets or the entry alone would pass a tenth of
// the cap. It then evicts what takes the cache over its cap. Errors are
// returned for the caller to ignore: a cache that cannot be written only
// costs the next run its hits.
func (c *ResponseCache) put(body []byte, key string, resp openai.ChatCompletionResponse, secrets []string) error {
	if len(resp.Choices) == 0 {
		return nil
	}
	e := cacheEntry{Version: cacheVersion, Key: key, Request: body, Response: resp, Stored: stamp(c.now())}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // the request as hashed, byte for byte
	if err := enc.Encode(e); err != nil {
		return fmt.Errorf("response cache: encode entry: %w", err)
	}
	b := buf.Bytes()
	for _, s := range secrets {
		if s != "" && bytes.Contains(b, []byte(s)) {
			return errors.New("response cache: the exchange holds a secret; not stored")
		}
	}
	if int64(len(b)) > c.maxBytes/10 {
		return nil
	}
	if err := atomicfile.Write(c.path(key), b); err != nil {
		return fmt.Errorf("response cache: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); !c.scanned.IsZero() && now.Sub(c.scanned) < cacheRescan && !now.Before(c.scanned) && c.size+int64(len(b)) <= c.maxBytes {
		c.size += int64(len(b)) // an overwritten entry is counted twice: the next walk comes sooner
		return nil
	}
	return c.evict()
}

// evict walks the directory, counting its size, and removes the least
// recently used entries (oldest modification time first) while the cache
// holds more than its cap, down to nine tenths of it. Files another
// process removed meanwhile are skipped. c.mu must be held.
func (c *ResponseCache) evict() error {
	type file struct {
		path  string
		size  int64
		mtime time.Time
	}
	var files []file
	var total int64
	err := filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".json") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		files = append(files, file{p, fi.Size(), fi.ModTime()})
		total += fi.Size()
		return nil
	})
	if err != nil {
		return fmt.Errorf("response cache: %w", err)
	}
	c.scanned = c.now()
	c.size = total
	defer func() { c.size = total }()
	if total <= c.maxBytes {
		return nil
	}
	slices.SortFunc(files, func(a, b file) int { return a.mtime.Compare(b.mtime) })
	for _, f := range files {
		if total <= c.maxBytes*9/10 {
			break
		}
		if err := os.Remove(f.path); err == nil || errors.Is(err, fs.ErrNotExist) {
			total -= f.size
		}
	}
	return nil
}

// complete returns the reply to req: from the cache for an agent with
// cache = true whose identical request was answered before (rec is then
// marked cached, with the entry's key), else from model, storing a
// successful reply for next time. In a replay every reply is the
// transcript's, and a step the recording answered from the cache is
// marked cached again, so that it is charged nothing again.
func (l *loop) complete(ctx context.Context, model Model, req openai.ChatCompletionRequest, rec *TranscriptStep) (openai.ChatCompletionResponse, error) {
	if l.replayed != nil {
		if n := rec.Step; n <= len(l.replayed) && l.replayed[n-1].Cached {
			rec.Cached, rec.CacheKey = true, l.replayed[n-1].CacheKey
		}
		return model.CreateChatCompletion(ctx, req)
	}
	c := l.opts.cache
	if c == nil {
		return model.CreateChatCompletion(ctx, req)
	}
	if p := l.task.Agent.Provider; p != nil {
		c = c.ForEndpoint(p.BaseURL)
	}
	body, key, err := CacheKey(req)
	if err != nil {
		return model.CreateChatCompletion(ctx, req)
	}
	if resp, ok := c.get(body, key); ok {
		rec.Cached, rec.CacheKey = true, key
		return resp, nil
	}
	resp, err := model.CreateChatCompletion(ctx, req)
	if err == nil {
		// A cache that cannot be written costs the next run its hits,
		// never this run its reply.
		_ = c.put(body, key, resp, l.opts.secrets)
	}
	return resp, err
}
