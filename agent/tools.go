package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/internal/textcut"
)

// Tool defaults. Tool results are deterministic: the same workspace and
// arguments give the same text (sorted listings, no timestamps).
const (
	defaultReadLines      = 200
	maxReadLines          = 2000
	defaultMaxResultBytes = 16 << 10
	maxListedFiles        = 1000
	maxSearchMatches      = 100
	maxSearchLineRunes    = 200
	maxPatternLen         = 1000
	// maxArgsBytes bounds the arguments of one call of a tool other than
	// write_file and edit_file, whose bound is contentArgsFactor times
	// the largest file. A longer call is refused before it is decoded.
	maxArgsBytes      = 64 << 10
	contentArgsFactor = 4
)

// toolDef is a tool the model can call: its name, what it does and the
// JSON schema of its arguments (written out, so requests are byte-stable).
type toolDef struct {
	name   string
	desc   string
	params string
	// hint shows the shape of the arguments in errors.
	hint string
}

// toolDefs are all tools, in the order of hclspec.Tools.
var toolDefs = []toolDef{
	{
		name:   "list_files",
		desc:   "List the files in your scope under a directory (default: the repository root), one per line with its size, in lexical order.",
		params: `{"type":"object","properties":{"path":{"type":"string","description":"Directory relative to the repository root; default the root."}},"additionalProperties":false}`,
		hint:   `{"path": "services"}`,
	},
	{
		name:   "read_file",
		desc:   "Read a text file: up to limit lines (default 200) from line offset (1-based, default 1). A notice at the end says how to read more. Binary files are not shown.",
		params: `{"type":"object","properties":{"path":{"type":"string","description":"File path relative to the repository root."},"offset":{"type":"integer","minimum":1,"description":"First line to read, 1-based; default 1."},"limit":{"type":"integer","minimum":1,"maximum":2000,"description":"Number of lines to read; default 200."}},"required":["path"],"additionalProperties":false}`,
		hint:   `{"path": "services/api/config.yaml", "offset": 1, "limit": 200}`,
	},
	{
		name:   "search",
		desc:   "Search the files in your scope for a regular expression (RE2 syntax; (?i) makes it case-insensitive), under a directory or in one file. Returns path:line: text for each matching line.",
		params: `{"type":"object","properties":{"pattern":{"type":"string","description":"RE2 regular expression matched against each line."},"path":{"type":"string","description":"Directory or file to search, relative to the repository root; default the root."}},"required":["pattern"],"additionalProperties":false}`,
		hint:   `{"pattern": "image: .*:v1", "path": "deploy"}`,
	},
	{
		name:   "write_file",
		desc:   "Create a file, or replace its whole content.",
		params: `{"type":"object","properties":{"path":{"type":"string","description":"File path relative to the repository root."},"content":{"type":"string","description":"The complete new content of the file."}},"required":["path","content"],"additionalProperties":false}`,
		hint:   `{"path": "services/api/config.yaml", "content": "..."}`,
	},
	{
		name:   "edit_file",
		desc:   "Replace one snippet of a file: old_text must occur exactly once in the file (copy it exactly, with enough surrounding lines to be unique) and is replaced by new_text.",
		params: `{"type":"object","properties":{"path":{"type":"string","description":"File path relative to the repository root."},"old_text":{"type":"string","description":"The exact text to replace; it must occur exactly once."},"new_text":{"type":"string","description":"The replacement text."}},"required":["path","old_text","new_text"],"additionalProperties":false}`,
		hint:   `{"path": "services/api/config.yaml", "old_text": "replicas: 2", "new_text": "replicas: 3"}`,
	},
	{
		name:   "delete_file",
		desc:   "Delete a file.",
		params: `{"type":"object","properties":{"path":{"type":"string","description":"File path relative to the repository root."}},"required":["path"],"additionalProperties":false}`,
		hint:   `{"path": "services/api/old.yaml"}`,
	},
	{
		name:   "finish",
		desc:   "End the run. Call it once, when your change is complete or when nothing needs to change. summary is one line for the commit title; rationale explains the change to reviewers; risk is your own assessment of the change: low, medium or high.",
		params: `{"type":"object","properties":{"summary":{"type":"string","description":"One line, at most 200 characters."},"rationale":{"type":"string","description":"Why this change, for reviewers."},"risk":{"type":"string","enum":["low","medium","high"]}},"required":["summary","rationale","risk"],"additionalProperties":false}`,
		hint:   `{"summary": "Bump api to v1.2.3", "rationale": "...", "risk": "low"}`,
	},
	// The perception tools and recall (perception.go, recall.go): they
	// read what is outside the workspace, never change it.
	{
		name:   "prometheus_query",
		desc:   "Run a PromQL query (read-only) against the Prometheus you may read. Instant query: query, and time (RFC 3339, Unix seconds, \"now\" or \"now-15m\"; default now). Range query: query, start, end, and step (such as 30s or 5m; default a sixtieth of the range). Returns one line per series.",
		params: `{"type":"object","properties":{"query":{"type":"string","description":"PromQL expression."},"time":{"type":"string","description":"Instant query: evaluation time; default now."},"start":{"type":"string","description":"Range query: start time."},"end":{"type":"string","description":"Range query: end time."},"step":{"type":"string","description":"Range query: resolution, such as 30s or 5m."}},"required":["query"],"additionalProperties":false}`,
		hint:   `{"query": "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))"}`,
	},
	{
		name:   "kubernetes_get",
		desc:   "Read the Kubernetes cluster you may read (read-only: only the kinds and namespaces allowed to you, never Secrets). action \"get\": one object by kind, namespace and name, as JSON. action \"list\": the objects of a kind in a namespace (label_selector narrows it; limit, default 50), one JSON object per line. action \"events\": the events of a kind in a namespace, of one object when name is given.",
		params: `{"type":"object","properties":{"action":{"type":"string","enum":["get","list","events"]},"kind":{"type":"string","description":"Kind, or Kind.group, such as Pod or Deployment.apps."},"namespace":{"type":"string","description":"Namespace; leave it out for cluster-scoped kinds."},"name":{"type":"string","description":"Object name: required for get, optional for events."},"label_selector":{"type":"string","description":"list: a label selector such as app=api."},"limit":{"type":"integer","minimum":1,"maximum":500,"description":"list and events: at most this many; default 50."}},"required":["action","kind"],"additionalProperties":false}`,
		hint:   `{"action": "get", "kind": "Deployment.apps", "namespace": "payments-staging", "name": "payments-api"}`,
	},
	{
		name:   "http_get",
		desc:   "Fetch a URL with GET (read-only), only under the URL prefixes allowed to you; redirects are followed only within them. Returns the status, the content type and the body (text only, bounded).",
		params: `{"type":"object","properties":{"url":{"type":"string","description":"Absolute http(s) URL under an allowed prefix."}},"required":["url"],"additionalProperties":false}`,
		hint:   `{"url": "https://status.example.com/api/v2/status.json"}`,
	},
	{
		name:   "recall",
		desc:   "Recall the outcomes of your own past proposals, newest first: merged, rejected (closed without merge), superseded, denied by policy, a policy violation, or reverted (merged, then taken back), with their summaries and why, and what reviewers wrote on their pull requests (untrusted text, quoted as data). The result is JSON. A rejected, denied or reverted idea should not be proposed again in other words. query keeps those whose text has all its words; limit (default 10, at most 50).",
		params: `{"type":"object","properties":{"query":{"type":"string","description":"Words that must all occur in a past proposal's summary, rationale, files, outcome or review comments; default all."},"limit":{"type":"integer","minimum":1,"maximum":50,"description":"At most this many, newest first; default 10."}},"additionalProperties":false}`,
		hint:   `{"query": "CACHE_TTL", "limit": 5}`,
	},
}

// finishTool is the tool that ends a run; it is always offered.
const finishTool = "finish"

// Risk levels an agent reports with finish.
var riskLevels = []string{"low", "medium", "high"}

// toolbox runs the tools an agent was given in its workspace.
type toolbox struct {
	ws             *workspace
	offered        []toolDef
	readLines      int
	maxResultBytes int
	// senses serves the perception tools and recall (bindTask); nil in a
	// toolbox without a task, where they fail.
	senses *senses
}

// newToolbox offers the tools named in names (in hclspec.Tools order;
// unknown names are ignored) and finish.
func newToolbox(ws *workspace, names []string) *toolbox {
	tb := &toolbox{ws: ws, readLines: defaultReadLines, maxResultBytes: defaultMaxResultBytes}
	for _, d := range toolDefs {
		if d.name == finishTool || slices.Contains(names, d.name) {
			tb.offered = append(tb.offered, d)
		}
	}
	return tb
}

// definitions returns the offered tools in the request format.
func (tb *toolbox) definitions() []openai.Tool {
	out := make([]openai.Tool, 0, len(tb.offered))
	for _, d := range tb.offered {
		out = append(out, openai.Tool{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{
			Name: d.name, Description: d.desc, Parameters: json.RawMessage(d.params),
		}})
	}
	return out
}

func (tb *toolbox) names() []string {
	out := make([]string, len(tb.offered))
	for i, d := range tb.offered {
		out[i] = d.name
	}
	return out
}

// finishArgs are the arguments of finish.
type finishArgs struct {
	Summary   string `json:"summary"`
	Rationale string `json:"rationale"`
	Risk      string `json:"risk"`
}

// toolResult is what a tool call returns to the model.
type toolResult struct {
	// Text is the tool message's content. For errors it starts "error: ".
	Text  string
	IsErr bool
	// Target names what the call was about (a path, a pattern), for the
	// notice that replaces the result when it is elided.
	Target string
	// Finish is set by a valid finish call.
	Finish *finishArgs
}

// run calls a tool. Every problem (unknown tool, malformed or too long
// arguments, refused path) is returned as an error result the model sees;
// only a cancelled context and a limit on work (a *LimitError) are errors
// of the run.
func (tb *toolbox) run(ctx context.Context, name, args string) (toolResult, error) {
	var def *toolDef
	for i := range tb.offered {
		if tb.offered[i].name == name {
			def = &tb.offered[i]
		}
	}
	if def == nil {
		return errResult("", fmt.Errorf("unknown tool %q; the tools are %s", clipRunes(name, maxToolNameLen), strings.Join(tb.names(), ", "))), nil
	}
	if limit := tb.maxArgs(name); len(args) > limit {
		why := ""
		if name == "write_file" || name == "edit_file" {
			why = fmt.Sprintf(" (a file may be at most %d bytes)", tb.ws.maxBytes)
		}
		return errResult("", refusef("the arguments of %s are %d bytes, over the %d-byte limit of one call%s", name, len(args), limit, why)), nil
	}
	var (
		res toolResult
		err error
	)
	switch name {
	case "list_files":
		res, err = tb.listFiles(ctx, def, args)
	case "read_file":
		res, err = tb.readFile(def, args)
	case "search":
		res, err = tb.search(ctx, def, args)
	case "write_file":
		res, err = tb.writeFile(def, args)
	case "edit_file":
		res, err = tb.editFile(def, args)
	case "delete_file":
		res, err = tb.deleteFile(def, args)
	case finishTool:
		res, err = tb.finish(def, args)
	case "prometheus_query":
		res, err = tb.prometheusQuery(ctx, def, args)
	case "kubernetes_get":
		res, err = tb.kubernetesGet(ctx, def, args)
	case "http_get":
		res, err = tb.httpGet(ctx, def, args)
	case "recall":
		res, err = tb.recall(def, args)
	}
	if err != nil {
		if ctx.Err() != nil {
			return toolResult{}, ctx.Err()
		}
		if le := (*LimitError)(nil); errors.As(err, &le) {
			return toolResult{Target: res.Target}, err
		}
		return errResult(res.Target, err), nil
	}
	res.Text = truncate(res.Text, tb.maxResultBytes)
	return res, nil
}

// maxArgs is the longest arguments a call of the tool may have.
func (tb *toolbox) maxArgs(name string) int {
	if name == "write_file" || name == "edit_file" {
		return int(contentArgsFactor * tb.ws.maxBytes)
	}
	return maxArgsBytes
}

func errResult(target string, err error) toolResult {
	return toolResult{Text: "error: " + err.Error(), IsErr: true, Target: target}
}

// decodeArgs decodes a tool call's JSON arguments into v. Unknown
// arguments, wrong types and trailing data are errors.
func decodeArgs(def *toolDef, args string, v any) error {
	args = strings.TrimSpace(args)
	if args == "" {
		args = "{}"
	}
	dec := json.NewDecoder(strings.NewReader(args))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("unexpected data after the JSON object")
	}
	if err == nil {
		return nil
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("the arguments of %s are not valid JSON (%v); send an object such as %s", def.name, err, def.hint)
	case errors.As(err, &typ) && typ.Field != "":
		return fmt.Errorf("argument %q of %s must be %s, not a JSON %s; send an object such as %s", typ.Field, def.name, jsonType(typ.Type), typ.Value, def.hint)
	case errors.As(err, &typ):
		return fmt.Errorf("the arguments of %s must be a JSON object, not a JSON %s; send an object such as %s", def.name, typ.Value, def.hint)
	}
	return fmt.Errorf("invalid arguments for %s (%v); send an object such as %s", def.name, err, def.hint)
}

// jsonType names a Go type the way a JSON schema does, with an article.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Bool:
		return "a boolean"
	}
	return "a " + t.String()
}

func required(def *toolDef, name, value string) error {
	if value == "" {
		return fmt.Errorf("argument %q of %s is required; send an object such as %s", name, def.name, def.hint)
	}
	return nil
}

func (tb *toolbox) listFiles(ctx context.Context, def *toolDef, args string) (toolResult, error) {
	var a struct {
		Path string `json:"path"`
	}
	if err := decodeArgs(def, args, &a); err != nil {
		return toolResult{}, err
	}
	if a.Path == "" {
		a.Path = "."
	}
	rel, files, err := tb.ws.files(ctx, a.Path)
	res := toolResult{Target: rel}
	if err != nil {
		return res, err
	}
	if len(files) == 0 {
		res.Text = fmt.Sprintf("no files in scope under %s (scope: %s)", rel, strings.Join(tb.ws.scope, ", "))
		return res, nil
	}
	var b strings.Builder
	for i, f := range files {
		if i == maxListedFiles {
			fmt.Fprintf(&b, "[showing %d of %d files; list a subdirectory to see the rest]\n", maxListedFiles, len(files))
			break
		}
		fmt.Fprintf(&b, "%s (%d bytes)\n", f.Path, f.Size)
	}
	res.Text = strings.TrimSuffix(b.String(), "\n")
	return res, nil
}

func (tb *toolbox) readFile(def *toolDef, args string) (toolResult, error) {
	var a struct {
		Path   string `json:"path"`
		Offset *int   `json:"offset"`
		Limit  *int   `json:"limit"`
	}
	if err := decodeArgs(def, args, &a); err != nil {
		return toolResult{}, err
	}
	res := toolResult{Target: a.Path}
	if err := required(def, "path", a.Path); err != nil {
		return res, err
	}
	offset, limit := 1, tb.readLines
	if a.Offset != nil {
		if offset = *a.Offset; offset < 1 {
			return res, fmt.Errorf("offset is the first line to read, 1 or more; got %d", offset)
		}
	}
	if a.Limit != nil {
		if limit = *a.Limit; limit < 1 {
			return res, fmt.Errorf("limit is the number of lines to read, 1 or more; got %d", limit)
		}
		limit = min(limit, maxReadLines)
	}
	rel, data, err := tb.ws.read(a.Path)
	res.Target = rel
	if err != nil {
		return res, err
	}
	if isBinary(data) {
		res.Text = fmt.Sprintf("binary file, %d bytes: not shown", len(data))
		return res, nil
	}
	if len(data) == 0 {
		res.Text = "(empty file)"
		return res, nil
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	n := len(lines)
	if offset > n {
		return res, fmt.Errorf("offset %d is past the end of %s, which has %d lines", offset, rel, n)
	}
	end := min(offset-1+limit, n)
	text := strings.Join(lines[offset-1:end], "\n")
	switch {
	case end < n:
		text += fmt.Sprintf("\n[lines %d-%d of %d; call again with offset=%d to read more]", offset, end, n, end+1)
	case offset > 1:
		text += fmt.Sprintf("\n[lines %d-%d of %d]", offset, end, n)
	}
	res.Text = text
	return res, nil
}

func (tb *toolbox) search(ctx context.Context, def *toolDef, args string) (toolResult, error) {
	var a struct {
		Pattern string `json:"pattern"`
		Path    string `json:"path"`
	}
	if err := decodeArgs(def, args, &a); err != nil {
		return toolResult{}, err
	}
	if a.Path == "" {
		a.Path = "."
	}
	res := toolResult{Target: fmt.Sprintf("%q in %s", a.Pattern, a.Path)}
	if err := required(def, "pattern", a.Pattern); err != nil {
		return res, err
	}
	if len(a.Pattern) > maxPatternLen {
		return res, fmt.Errorf("the pattern is %d bytes; the limit is %d", len(a.Pattern), maxPatternLen)
	}
	re, err := regexp.Compile(a.Pattern)
	if err != nil {
		return res, fmt.Errorf("invalid pattern (RE2 syntax): %v", err)
	}
	rel, files, err := tb.ws.files(ctx, a.Path)
	res.Target = fmt.Sprintf("%q in %s", a.Pattern, rel)
	if err != nil {
		return res, err
	}
	var b strings.Builder
	matches, skipped := 0, 0
scan:
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		_, data, err := tb.ws.read(f.Path)
		if le := (*LimitError)(nil); errors.As(err, &le) {
			return res, err
		}
		if err != nil || isBinary(data) {
			skipped++
			continue
		}
		for i, line := range strings.Split(string(data), "\n") {
			if !re.MatchString(line) {
				continue
			}
			if matches == maxSearchMatches {
				fmt.Fprintf(&b, "[only the first %d matches are shown; narrow the pattern or the path]\n", maxSearchMatches)
				break scan
			}
			matches++
			fmt.Fprintf(&b, "%s:%d: %s\n", f.Path, i+1, clipRunes(line, maxSearchLineRunes))
		}
	}
	if matches == 0 {
		b.WriteString(fmt.Sprintf("no matches for %q in %d files in scope under %s\n", a.Pattern, len(files)-skipped, rel))
	}
	if skipped > 0 {
		fmt.Fprintf(&b, "[%d binary or oversized files were not searched]\n", skipped)
	}
	res.Text = strings.TrimSuffix(b.String(), "\n")
	return res, nil
}

func (tb *toolbox) writeFile(def *toolDef, args string) (toolResult, error) {
	var a struct {
		Path    string  `json:"path"`
		Content *string `json:"content"`
	}
	if err := decodeArgs(def, args, &a); err != nil {
		return toolResult{}, err
	}
	res := toolResult{Target: a.Path}
	if err := required(def, "path", a.Path); err != nil {
		return res, err
	}
	if a.Content == nil {
		return res, fmt.Errorf("argument \"content\" of write_file is required (an empty string makes an empty file); send an object such as %s", def.hint)
	}
	rel, err := tb.ws.write(a.Path, []byte(*a.Content))
	res.Target = rel
	if err != nil {
		return res, err
	}
	res.Text = fmt.Sprintf("wrote %s (%d bytes)", rel, len(*a.Content))
	return res, nil
}

func (tb *toolbox) editFile(def *toolDef, args string) (toolResult, error) {
	var a struct {
		Path    string  `json:"path"`
		OldText string  `json:"old_text"`
		NewText *string `json:"new_text"`
	}
	if err := decodeArgs(def, args, &a); err != nil {
		return toolResult{}, err
	}
	res := toolResult{Target: a.Path}
	if err := required(def, "path", a.Path); err != nil {
		return res, err
	}
	if err := required(def, "old_text", a.OldText); err != nil {
		return res, err
	}
	if a.NewText == nil {
		return res, fmt.Errorf("argument \"new_text\" of edit_file is required (an empty string deletes old_text); send an object such as %s", def.hint)
	}
	rel, data, err := tb.ws.read(a.Path)
	res.Target = rel
	if err != nil {
		return res, err
	}
	if isBinary(data) {
		return res, refusef("%q is a binary file, %d bytes; it cannot be edited", rel, len(data))
	}
	content := string(data)
	switch n := strings.Count(content, a.OldText); n {
	case 0:
		return res, fmt.Errorf("old_text does not occur in %s; read_file shows the current content (copy whitespace and indentation exactly)", rel)
	case 1:
	default:
		return res, fmt.Errorf("old_text occurs %d times in %s; include more surrounding lines so it occurs exactly once", n, rel)
	}
	updated := strings.Replace(content, a.OldText, *a.NewText, 1)
	if _, err := tb.ws.write(rel, []byte(updated)); err != nil {
		return res, err
	}
	res.Text = fmt.Sprintf("edited %s: replaced %s with %s", rel, plural(countLines(a.OldText), "line"), plural(countLines(*a.NewText), "line"))
	return res, nil
}

func (tb *toolbox) deleteFile(def *toolDef, args string) (toolResult, error) {
	var a struct {
		Path string `json:"path"`
	}
	if err := decodeArgs(def, args, &a); err != nil {
		return toolResult{}, err
	}
	res := toolResult{Target: a.Path}
	if err := required(def, "path", a.Path); err != nil {
		return res, err
	}
	rel, err := tb.ws.remove(a.Path)
	res.Target = rel
	if err != nil {
		return res, err
	}
	res.Text = "deleted " + rel
	return res, nil
}

func (tb *toolbox) finish(def *toolDef, args string) (toolResult, error) {
	var a finishArgs
	if err := decodeArgs(def, args, &a); err != nil {
		return toolResult{}, err
	}
	a.Summary = strings.TrimSpace(a.Summary)
	a.Rationale = strings.TrimSpace(a.Rationale)
	a.Risk = strings.ToLower(strings.TrimSpace(a.Risk))
	if err := required(def, "summary", a.Summary); err != nil {
		return toolResult{}, err
	}
	if !slices.Contains(riskLevels, a.Risk) {
		return toolResult{}, fmt.Errorf("risk must be one of %s, got %q", strings.Join(riskLevels, ", "), a.Risk)
	}
	return toolResult{Text: "finished", Finish: &a}, nil
}

// truncate cuts a tool result over max bytes, at a character boundary,
// with a notice saying so.
func truncate(s string, max int) string {
	if max <= 0 || len(s) <= max {
		return s
	}
	cut := len(textcut.Prefix(s, max))
	return s[:cut] + fmt.Sprintf("\n[truncated: the result is %d bytes, only the first %d are shown; ask for less, e.g. read_file with offset and limit or a narrower search]", len(s), cut)
}

func clipRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func countLines(s string) int {
	if s == "" {
		return 0
	}
	return strings.Count(strings.TrimSuffix(s, "\n"), "\n") + 1
}
