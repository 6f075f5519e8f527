package hclspec

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"path"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// The files and directories of the desired state, relative to the
// repository root.
const (
	ProvidersFile = "providers.hcl"
	ReviewersFile = "reviewers.hcl"
	AgentsGlob    = "agents/*.hcl"
	PoliciesGlob  = "policies/*.hcl"
	TestSuffix    = "_test.hcl"
)

// ControlPaths are the globs of the files that define what agents may do.
// An agent's change to any of them is a change to its own permissions.
var ControlPaths = []string{"agents/**", "policies/**", ProvidersFile, ReviewersFile, ".reconciler/**"}

// IsControlPath reports whether a repository path is one of ControlPaths.
func IsControlPath(p string) bool { return MatchAny(ControlPaths, p) }

// ForgePaths are the globs of the files that steer CI and the forge: an
// agent's change to them is guarded like a change to the control files.
var ForgePaths = []string{".github/**", ".gitea/**", ".gitlab/**", ".gitlab-ci.yml", "CODEOWNERS", "docs/CODEOWNERS", ".gitattributes", ".gitmodules"}

// readSet records the files file() and templatefile() read, shared by a
// loader and its forks.
type readSet struct {
	mu    sync.Mutex
	paths map[string]bool
}

func (r *readSet) add(p string) {
	r.mu.Lock()
	r.paths[p] = true
	r.mu.Unlock()
}

// Options tune Load.
type Options struct {
	// LookupEnv resolves env() in providers.hcl. Nil means env() always
	// returns "" (the variable is unset).
	LookupEnv func(string) (string, bool)
}

// Load reads and validates the desired state from fsys, rooted at the
// repository's top. It returns all diagnostics found; the Spec is nil when
// any of them is an error. A repository without any of the files loads as
// an empty Spec.
func Load(fsys fs.FS, opts Options) (*Spec, hcl.Diagnostics) {
	l := &loader{fsys: fsys, opts: opts, ctx: map[bool]*hcl.EvalContext{}, locMu: &sync.Mutex{}, locations: map[string]*time.Location{}, agents: map[string]*Agent{},
		read: &readSet{paths: map[string]bool{}}}
	return l.load()
}

type loader struct {
	fsys  fs.FS
	opts  Options
	diags hcl.Diagnostics
	spec  Spec

	ctx       map[bool]*hcl.EvalContext // by withEnv
	locMu     *sync.Mutex               // guards locations, shared with forks
	locations map[string]*time.Location
	agents    map[string]*Agent // by name, for duplicate checks
	read      *readSet          // files file() and templatefile() read, shared with forks
}

// fork returns a loader that decodes one file on its own goroutine: it
// shares the read-only state (file system, providers, evaluation
// contexts, time zones) and collects its own diagnostics and agents.
func (l *loader) fork() *loader {
	return &loader{fsys: l.fsys, opts: l.opts, ctx: l.ctx, locMu: l.locMu, locations: l.locations, read: l.read,
		agents: map[string]*Agent{}, spec: Spec{Providers: l.spec.Providers, Prometheus: l.spec.Prometheus, Kubernetes: l.spec.Kubernetes}}
}

// job is one file to load: parsed concurrently, decoded in order.
type job struct {
	name      string
	blockType string
	labels    []string
	decode    func(f *hcl.File, b *hcl.Block)

	file  *hcl.File
	diags hcl.Diagnostics
}

func (l *loader) load() (*Spec, hcl.Diagnostics) {
	l.spec.Files = map[string]*hcl.File{}
	jobs := []*job{
		{name: ProvidersFile, blockType: "provider", labels: []string{"kind", "name"}, decode: l.decodeProvider},
		{name: ReviewersFile, blockType: "group", labels: []string{"name"}, decode: l.decodeGroup},
	}
	for _, name := range l.glob(AgentsGlob) {
		jobs = append(jobs, &job{name: name, blockType: "agent", labels: []string{"name"}, decode: l.decodeAgent})
	}
	for _, name := range l.glob(PoliciesGlob) {
		if !strings.HasSuffix(name, TestSuffix) {
			jobs = append(jobs, &job{name: name, blockType: "policy", labels: []string{"name"}, decode: l.decodePolicy})
		}
	}
	l.parseAll(jobs)
	// Providers and reviewers first: agents refer to providers. Agents
	// are then decoded concurrently, each file by a fork of the loader,
	// and merged in file order, so diagnostics keep their order.
	l.evalCtx(false)
	l.evalCtx(true)
	forks := make([]*loader, len(jobs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for _, j := range jobs[:2] {
		l.diags = append(l.diags, j.diags...)
		if j.file != nil {
			l.spec.Files[j.name] = j.file
		}
		if j.file != nil && !j.diags.HasErrors() {
			l.decodeFile(j.file, j.blockType, j.labels, j.decode)
		}
	}
	for i, j := range jobs {
		if j.blockType != "agent" || j.file == nil || j.diags.HasErrors() {
			continue
		}
		f := l.fork()
		forks[i] = f
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f.decodeFile(j.file, j.blockType, j.labels, f.decodeAgent)
		}()
	}
	wg.Wait()
	for i, j := range jobs[2:] {
		i += 2
		l.diags = append(l.diags, j.diags...)
		if j.file != nil {
			l.spec.Files[j.name] = j.file
		}
		if j.file == nil || j.diags.HasErrors() {
			continue
		}
		f := forks[i]
		if f == nil {
			l.decodeFile(j.file, j.blockType, j.labels, j.decode)
			continue
		}
		l.diags = append(l.diags, f.diags...)
		for _, a := range f.spec.Agents {
			l.addAgent(a)
		}
	}
	l.crossCheck()
	if l.diags.HasErrors() {
		return nil, l.diags
	}
	l.digests()
	l.spec.PolicyDigest = policyDigest(l.spec.Files)
	l.spec.Protected = slices.Sorted(maps.Keys(l.read.paths))
	return &l.spec, l.diags
}

// parseAll reads and parses the jobs' files on all CPUs: parsing is most
// of a large spec's load time, and files are independent.
func (l *loader) parseAll(jobs []*job) {
	next := make(chan *job)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				j.file, j.diags = l.parse(j.name)
			}
		}()
	}
	for _, j := range jobs {
		next <- j
	}
	close(next)
	wg.Wait()
}

func (l *loader) glob(pattern string) []string {
	names, err := fs.Glob(l.fsys, pattern)
	if err != nil {
		l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot list files", Detail: fmt.Sprintf("Listing %s: %v.", pattern, err)})
		return nil
	}
	sort.Strings(names)
	return names
}

// parse reads and parses one file. A missing providers.hcl or
// reviewers.hcl is no error; a file that was listed and then cannot be read
// (a dangling symlink) is, so a policy never vanishes silently. It is safe
// for concurrent use.
func (l *loader) parse(name string) (*hcl.File, hcl.Diagnostics) {
	src, err := fs.ReadFile(l.fsys, name)
	if err != nil {
		if errorsIsNotExist(err) && (name == ProvidersFile || name == ReviewersFile) {
			return nil, nil
		}
		// A directory named like a file, or an unreadable file: point
		// at its start, since there is no line to point at.
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read file", Detail: fmt.Sprintf("Reading %s: %v. It must be a readable regular file.", name, err),
			Subject: &hcl.Range{Filename: name, Start: hcl.InitialPos, End: hcl.InitialPos}}}
	}
	return ParseFile(src, name)
}

// decodeFile decodes the blocks of one file, which may only hold blocks of
// the given type.
func (l *loader) decodeFile(f *hcl.File, blockType string, labels []string, decode func(f *hcl.File, b *hcl.Block)) {
	schema := &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: blockType, LabelNames: labels}}}
	if blockType == "provider" {
		// providers.hcl also holds the forge proposals are reviewed on.
		schema.Blocks = append(schema.Blocks, hcl.BlockHeaderSchema{Type: "forge", LabelNames: []string{"kind"}})
		schema.Blocks = append(schema.Blocks, perceptionBlocks...) // perception.go
	}
	content, diags := f.Body.Content(schema)
	l.diags = append(l.diags, diags...)
	if content == nil {
		return
	}
	for _, b := range content.Blocks {
		if b.Type == "forge" {
			l.decodeForge(f, b)
			continue
		}
		if l.decodePerceptionBlock(f, b) {
			continue
		}
		decode(f, b)
	}
}

// blockSource returns the exact text of a block.
func blockSource(f *hcl.File, b *hcl.Block) []byte {
	body, ok := b.Body.(*hclsyntax.Body)
	if !ok {
		return nil
	}
	r := hcl.RangeBetween(b.DefRange, body.SrcRange)
	if r.Start.Byte <= r.End.Byte && r.End.Byte <= len(f.Bytes) {
		return f.Bytes[r.Start.Byte:r.End.Byte]
	}
	return nil
}

func (l *loader) content(body hcl.Body, schema *hcl.BodySchema) *hcl.BodyContent {
	c, diags := body.Content(schema)
	l.diags = append(l.diags, diags...)
	return c
}

// evalCtx is the context for attributes of agents, reviewers and policies;
// env() only where withEnv. Built once per load.
func (l *loader) evalCtx(withEnv bool) *hcl.EvalContext {
	if ctx, ok := l.ctx[withEnv]; ok {
		return ctx
	}
	funcs := stdFunctions()
	for k, v := range fileFunctions(l.fsys, l.read.add) {
		funcs[k] = v
	}
	if withEnv {
		funcs["env"] = envFunc(l.opts.LookupEnv)
	}
	l.ctx[withEnv] = &hcl.EvalContext{Functions: funcs}
	return l.ctx[withEnv]
}

// location loads a time zone once per load; "Local" and "" are refused so
// that schedules never depend on the host.
func (l *loader) location(name string) (*time.Location, error) {
	l.locMu.Lock()
	defer l.locMu.Unlock()
	if loc, ok := l.locations[name]; ok {
		return loc, nil
	}
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("not an IANA time zone name")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	l.locations[name] = loc
	return loc, nil
}

// decodeAttr decodes an attribute into target (a pointer), recording
// diagnostics. It reports whether the attribute was present and valid.
func (l *loader) decodeAttr(attrs hcl.Attributes, name string, ctx *hcl.EvalContext, target any) bool {
	a, ok := attrs[name]
	if !ok {
		return false
	}
	v, diags := a.Expr.Value(ctx)
	l.diags = append(l.diags, diags...)
	if diags.HasErrors() {
		// v is unknown: converting it would only add "value must be known".
		return false
	}
	diags = gohcl.DecodeExpression(evaluated{a.Expr, v}, nil, target)
	l.diags = append(l.diags, diags...)
	return !diags.HasErrors()
}

// evaluated is an expression whose value is already known, so that
// gohcl.DecodeExpression converts it without evaluating it (and reading
// files) again, and still reports conversion errors at the expression.
type evaluated struct {
	hcl.Expression
	v cty.Value
}

func (e evaluated) Value(*hcl.EvalContext) (cty.Value, hcl.Diagnostics) { return e.v, nil }

func (l *loader) errorf(rng hcl.Range, summary, detail string, args ...any) {
	r := rng
	l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(detail, args...), Subject: &r})
}

func (l *loader) decodeDuration(attrs hcl.Attributes, name string, ctx *hcl.EvalContext, target *time.Duration) {
	var s string
	if !l.decodeAttr(attrs, name, ctx, &s) {
		return
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		l.errorf(attrs[name].Expr.Range(), "Invalid duration", "%q is not a positive duration; write it like \"90s\", \"10m\" or \"1h30m\".", s)
		return
	}
	*target = d
}

// decodeRetries decodes limits { retries }: a whole number from 0 to
// MaxRetries.
func (l *loader) decodeRetries(attrs hcl.Attributes, ctx *hcl.EvalContext, target *int) {
	var v float64
	if !l.decodeAttr(attrs, "retries", ctx, &v) {
		return
	}
	if v < 0 || v > MaxRetries || v != math.Trunc(v) {
		l.errorf(attrs["retries"].Expr.Range(), "Invalid retries", "retries is how many times a failed run is attempted again: a whole number from 0 (never) to %d; %v is not. Leave it out for the default of %d.", MaxRetries, v, DefaultRetries)
		return
	}
	*target = int(v)
}

var providerSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "base_url"}, {Name: "api_key_env"}, {Name: "timeout"}, {Name: "max_output_bytes"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "price", LabelNames: []string{"model"}}},
}

var priceSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "input_per_mtok", Required: true}, {Name: "output_per_mtok", Required: true},
}}

func (l *loader) decodeProvider(f *hcl.File, b *hcl.Block) {
	p := &Provider{Kind: b.Labels[0], Name: b.Labels[1], DeclRange: b.DefRange, Source: blockSource(f, b)}
	c := l.content(b.Body, providerSchema)
	if c == nil {
		return
	}
	ctx := l.evalCtx(true)
	switch p.Kind {
	case ProviderOpenAI:
		if l.decodeAttr(c.Attributes, "base_url", ctx, &p.BaseURL) {
			l.checkBaseURL(p, c.Attributes["base_url"].Expr.Range())
		}
		if l.decodeAttr(c.Attributes, "api_key_env", ctx, &p.APIKeyEnv) && !envName.MatchString(p.APIKeyEnv) {
			l.errorf(c.Attributes["api_key_env"].Expr.Range(), "Invalid variable name", "api_key_env names the environment variable that holds the key, such as \"OPENAI_API_KEY\"; never put the key itself in git.")
		}
		p.Prices = map[string]Price{}
		for _, pb := range c.Blocks {
			pc := l.content(pb.Body, priceSchema)
			if pc == nil {
				continue
			}
			var pr Price
			l.decodeAttr(pc.Attributes, "input_per_mtok", ctx, &pr.InputPerMTok)
			l.decodeAttr(pc.Attributes, "output_per_mtok", ctx, &pr.OutputPerMTok)
			p.Prices[pb.Labels[0]] = pr
		}
		for _, n := range []string{"timeout", "max_output_bytes"} {
			if a, ok := c.Attributes[n]; ok {
				l.errorf(a.NameRange, "Unsupported argument", "%q is an argument of exec providers; an openai provider does not take it.", n)
			}
		}
	case ProviderExec:
		p.Timeout = 5 * time.Minute
		p.MaxOutputBytes = 1 << 20
		l.decodeDuration(c.Attributes, "timeout", ctx, &p.Timeout)
		l.decodeAttr(c.Attributes, "max_output_bytes", ctx, &p.MaxOutputBytes)
		for _, n := range []string{"base_url", "api_key_env"} {
			if a, ok := c.Attributes[n]; ok {
				l.errorf(a.NameRange, "Unsupported argument", "%q is an argument of openai providers; an exec provider does not take it.", n)
			}
		}
		for _, pb := range c.Blocks {
			l.errorf(pb.DefRange, "Unsupported block type", "Exec providers have no prices; put price blocks in an openai provider.")
		}
	default:
		l.errorf(b.LabelRanges[0], "Unknown provider kind", "Provider kind %q is not supported. Use %q (any OpenAI-compatible endpoint) or %q (a command run in a temporary worktree).%s",
			p.Kind, ProviderOpenAI, ProviderExec, suggest(p.Kind, []string{ProviderOpenAI, ProviderExec}))
		return
	}
	for _, other := range l.spec.Providers {
		if other.Kind == p.Kind && other.Name == p.Name {
			l.errorf(b.DefRange, "Duplicate provider", "A provider %q %q is already declared at %s; each provider needs a unique kind and name.", p.Kind, p.Name, other.DeclRange)
			return
		}
	}
	l.spec.Providers = append(l.spec.Providers, p)
}

var groupSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "accept_unsigned"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "member", LabelNames: []string{"name"}}},
}

var memberSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "email"}, {Name: "signing_key"}, {Name: "forge_login"},
}}

func (l *loader) decodeGroup(_ *hcl.File, b *hcl.Block) {
	g := &Group{Name: b.Labels[0], DeclRange: b.DefRange}
	c := l.content(b.Body, groupSchema)
	if c == nil {
		return
	}
	ctx := l.evalCtx(false)
	l.decodeAttr(c.Attributes, "accept_unsigned", ctx, &g.AcceptUnsigned)
	for _, mb := range c.Blocks {
		m := &Member{Name: mb.Labels[0], DeclRange: mb.DefRange}
		mc := l.content(mb.Body, memberSchema)
		if mc == nil {
			continue
		}
		l.decodeAttr(mc.Attributes, "email", ctx, &m.Email)
		if l.decodeAttr(mc.Attributes, "signing_key", ctx, &m.SigningKey) {
			l.checkSigningKey(m.SigningKey, mc.Attributes["signing_key"].Expr.Range())
		}
		l.decodeAttr(mc.Attributes, "forge_login", ctx, &m.ForgeLogin)
		if m.Email == "" && m.ForgeLogin == "" {
			l.errorf(mb.DefRange, "Member cannot be identified", "Member %q of group %q needs an email (matched against merge commits) or a forge_login (matched against pull request reviews).", m.Name, g.Name)
		}
		g.Members = append(g.Members, m)
	}
	if other := l.spec.Group(g.Name); other != nil {
		l.errorf(b.DefRange, "Duplicate reviewer group", "A group %q is already declared at %s.", g.Name, other.DeclRange)
		return
	}
	l.spec.Groups = append(l.spec.Groups, g)
}

var agentSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "description"}, {Name: "provider", Required: true}, {Name: "model"}, {Name: "prompt"},
		{Name: "command"}, {Name: "network"}, {Name: "env"}, {Name: "tools"}, {Name: "suspend"},
		{Name: "prometheus"}, {Name: "kubernetes"}, {Name: "http_allow"}, // perception.go
		{Name: "models"}, {Name: "cache"}, // llmops.go
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "trigger"}, {Type: "scope"}, {Type: "limits"}, {Type: "work_unit"},
		{Type: "escalate"}, // llmops.go
	},
}

var triggerSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "schedule"}, {Name: "timezone"}, {Name: "on_spec_change"}, {Name: "manual"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "on_alert"}},
}

var scopeSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "paths", Required: true}}}

var limitsSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "max_steps"}, {Name: "max_tokens"}, {Name: "timeout"}, {Name: "retries"},
	{Name: "max_tool_calls_per_step"}, {Name: "max_tool_calls"}, {Name: "max_files_written"},
	{Name: "max_bytes_written"}, {Name: "max_bytes_read"}, {Name: "max_transcript_bytes"},
}}

// workLimits are the limits { } attributes bounding a run's work: what
// each counts, its default, the largest value it takes and where it goes.
var workLimits = []struct {
	name, what string
	def, max   int64
	set        func(*Limits, int64)
}{
	{"max_tool_calls_per_step", "the tool calls of one model reply", DefaultMaxToolCallsPerStep, 1 << 10,
		func(l *Limits, v int64) { l.MaxToolCallsPerStep = int(v) }},
	{"max_tool_calls", "the tool calls of a run", DefaultMaxToolCalls, 100_000,
		func(l *Limits, v int64) { l.MaxToolCalls = int(v) }},
	{"max_files_written", "the files a run writes, edits or deletes", DefaultMaxFilesWritten, 100_000,
		func(l *Limits, v int64) { l.MaxFilesWritten = int(v) }},
	{"max_bytes_written", "the total size in bytes of the files a run writes", DefaultMaxBytesWritten, 1 << 30,
		func(l *Limits, v int64) { l.MaxBytesWritten = v }},
	{"max_bytes_read", "the bytes of file content a run reads", DefaultMaxBytesRead, 16 << 30,
		func(l *Limits, v int64) { l.MaxBytesRead = v }},
	{"max_transcript_bytes", "the size in bytes of a run's transcript", DefaultMaxTranscriptBytes, 1 << 30,
		func(l *Limits, v int64) { l.MaxTranscriptBytes = v }},
}

// decodeWorkLimits decodes the limits on a run's work: each a whole
// number from 1 to its maximum.
func (l *loader) decodeWorkLimits(attrs hcl.Attributes, ctx *hcl.EvalContext, lim *Limits) {
	for _, w := range workLimits {
		var v float64
		if !l.decodeAttr(attrs, w.name, ctx, &v) {
			continue
		}
		if v < 1 || v > float64(w.max) || v != math.Trunc(v) {
			l.errorf(attrs[w.name].Expr.Range(), "Invalid limit", "%s bounds %s: a whole number from 1 to %d; %s is not. Leave it out for the default of %d.", w.name, w.what, w.max, strconv.FormatFloat(v, 'f', -1, 64), w.def)
			continue
		}
		w.set(lim, int64(v))
	}
}

var workUnitSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "kind", Required: true}, {Name: "human_minutes", Required: true},
}}

// agentNameOK is what an agent name may be: it becomes part of a branch name.
func agentNameOK(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[0] == '.' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (l *loader) decodeAgent(f *hcl.File, b *hcl.Block) {
	a := &Agent{
		Name: b.Labels[0], DeclRange: b.DefRange, Source: blockSource(f, b),
		Limits: Limits{MaxSteps: 20, MaxTokens: 50000, Timeout: 10 * time.Minute, Retries: DefaultRetries}.WithWorkDefaults(),
	}
	if !agentNameOK(a.Name) {
		l.errorf(b.LabelRanges[0], "Invalid agent name", "Agent name %q becomes part of branch names: use lowercase letters, digits, '-' and '_', at most 63 characters, not starting with '-'.", a.Name)
	}
	c := l.content(b.Body, agentSchema)
	if c == nil {
		return
	}
	ctx := l.evalCtx(false)
	l.decodeAttr(c.Attributes, "description", ctx, &a.Description)
	// A model or command that is present but invalid has its own
	// diagnostic; only a missing one is reported as missing below.
	_, hasModel := c.Attributes["model"]
	_, hasCommand := c.Attributes["command"]
	modelOK := l.decodeAttr(c.Attributes, "model", ctx, &a.Model) || !hasModel
	l.decodeAttr(c.Attributes, "prompt", ctx, &a.Prompt)
	commandOK := l.decodeAttr(c.Attributes, "command", ctx, &a.Command) || !hasCommand
	if l.decodeAttr(c.Attributes, "tools", ctx, &a.Tools) {
		for _, tool := range a.Tools {
			if !slices.Contains(Tools, tool) {
				l.errorf(c.Attributes["tools"].Expr.Range(), "Unknown tool", "%q is not a tool agents can use; the tools are %s.%s", tool, strings.Join(Tools, ", "), suggest(tool, Tools))
			}
		}
	}
	l.decodeAttr(c.Attributes, "suspend", ctx, &a.Suspend)
	l.decodeAttr(c.Attributes, "network", ctx, &a.Network)
	if attr, ok := c.Attributes["env"]; ok && l.decodeAttr(c.Attributes, "env", ctx, &a.Env) {
		// Evaluated without env(): an agent's variables are what git
		// holds, never the reconciler's own (its secrets).
		for _, name := range slices.Sorted(maps.Keys(a.Env)) {
			if why := reservedEnv(name); why != "" {
				l.errorf(attr.Expr.Range(), "Invalid environment variable", "env sets %q, which %s.", name, why)
			}
		}
	}
	if attr, ok := c.Attributes["provider"]; ok {
		a.ProviderRange = attr.Expr.Range()
		a.Provider = l.providerRef(attr)
	}
	var seen = map[string]*hcl.Block{}
	triggers := 0
	for _, blk := range c.Blocks {
		if blk.Type == "trigger" {
			triggers++
		} else {
			if prev, dup := seen[blk.Type]; dup {
				l.errorf(blk.DefRange, "Duplicate "+blk.Type+" block", "An agent has at most one %s block; the first is at %s.", blk.Type, prev.DefRange)
				continue
			}
			seen[blk.Type] = blk
		}
		switch blk.Type {
		case "trigger":
			if t, ok := l.decodeTrigger(blk, ctx); ok {
				a.Triggers = append(a.Triggers, t)
			}
		case "scope":
			if sc := l.content(blk.Body, scopeSchema); sc != nil && sc.Attributes["paths"] != nil {
				a.ScopeRange = sc.Attributes["paths"].Expr.Range()
				if l.decodeAttr(sc.Attributes, "paths", ctx, &a.Scope) {
					l.checkGlobs(a.Scope, a.ScopeRange)
				}
			}
		case "limits":
			if lc := l.content(blk.Body, limitsSchema); lc != nil {
				l.decodeAttr(lc.Attributes, "max_steps", ctx, &a.Limits.MaxSteps)
				l.decodeAttr(lc.Attributes, "max_tokens", ctx, &a.Limits.MaxTokens)
				l.decodeDuration(lc.Attributes, "timeout", ctx, &a.Limits.Timeout)
				l.decodeRetries(lc.Attributes, ctx, &a.Limits.Retries)
				l.decodeWorkLimits(lc.Attributes, ctx, &a.Limits)
			}
		case "work_unit":
			if wc := l.content(blk.Body, workUnitSchema); wc != nil {
				l.decodeAttr(wc.Attributes, "kind", ctx, &a.WorkUnit.Kind)
				if l.decodeAttr(wc.Attributes, "human_minutes", ctx, &a.WorkUnit.HumanMinutes) && a.WorkUnit.HumanMinutes < 0 {
					l.errorf(wc.Attributes["human_minutes"].Expr.Range(), "Invalid work unit", "human_minutes must not be negative.")
				}
			}
		}
	}
	if _, ok := seen["scope"]; !ok {
		l.errorf(b.DefRange, "Missing scope block", "Agent %q has no scope: add scope { paths = [\"deploy/**\"] } naming what it may read and write.", a.Name)
	}
	l.decodeLLMOps(c, a, ctx)
	l.decodePerception(c, a, ctx)
	if triggers == 0 {
		l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Agent never runs", Detail: fmt.Sprintf("Agent %q has no trigger block, so it only runs when asked manually. Add trigger { schedule = \"@every 6h\" } or trigger { on_spec_change = true }.", a.Name), Subject: &a.DeclRange})
	}
	if a.Provider != nil {
		switch a.Provider.Kind {
		case ProviderExec:
			if len(a.Command) == 0 && commandOK {
				l.errorf(a.ProviderRange, "Missing command", "Agent %q uses exec provider %q, which runs a command: add command = [\"sh\", \"tools/fix.sh\"].", a.Name, a.Provider.Name)
			}
		case ProviderOpenAI:
			if a.Model == "" && modelOK {
				l.errorf(a.ProviderRange, "Missing model", "Agent %q uses openai provider %q: add model = \"gpt-4o-mini\" (or the model your endpoint serves).", a.Name, a.Provider.Name)
			} else if _, priced := a.Provider.Prices[a.Model]; !priced && a.Model != "" && hasModel {
				rng := c.Attributes["model"].Expr.Range()
				l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Model has no price",
					Detail: fmt.Sprintf("Provider %q declares no price for %q, so this agent's cost counts as zero and money budgets cannot hold it back. Add price %q { input_per_mtok = ..., output_per_mtok = ... } to the provider.", a.Provider.Name, a.Model, a.Model), Subject: &rng})
			}
			if _, ok := c.Attributes["prompt"]; !ok {
				l.errorf(a.DeclRange, "Missing prompt", "Agent %q uses a model, which needs a prompt: add prompt = file(\"prompts/%s.md\").", a.Name, a.Name)
			}
			if _, ok := c.Attributes["command"]; ok {
				l.errorf(c.Attributes["command"].NameRange, "Unsupported argument", "command is for exec providers; agent %q uses openai provider %q.", a.Name, a.Provider.Name)
			}
			if attr, ok := c.Attributes["network"]; ok {
				l.errorf(attr.NameRange, "Unsupported argument", "network is for exec agents, whose command runs in a sandbox without network unless it declares network = true; agent %q uses openai provider %q, whose tools only touch the workspace. Remove network.", a.Name, a.Provider.Name)
			}
			if attr, ok := c.Attributes["env"]; ok {
				l.errorf(attr.NameRange, "Unsupported argument", "env is for exec agents, whose command runs with the variables it declares; agent %q uses openai provider %q, which runs no command. Remove env.", a.Name, a.Provider.Name)
			}
		}
	}
	a.nameRange = b.LabelRanges[0]
	l.addAgent(a)
}

// addAgent adds a decoded agent, unless one of that name exists.
func (l *loader) addAgent(a *Agent) {
	if other := l.agents[a.Name]; other != nil {
		l.errorf(a.nameRange, "Duplicate agent", "An agent %q is already declared at %s; agent names must be unique across agents/*.hcl.", a.Name, other.DeclRange)
		return
	}
	l.spec.Agents = append(l.spec.Agents, a)
	l.agents[a.Name] = a
}

func (l *loader) decodeTrigger(blk *hcl.Block, ctx *hcl.EvalContext) (Trigger, bool) {
	t := Trigger{Range: blk.DefRange, Timezone: time.UTC}
	c := l.content(blk.Body, triggerSchema)
	if c == nil {
		return t, false
	}
	set := 0
	hasSchedule := l.decodeAttr(c.Attributes, "schedule", ctx, &t.Schedule)
	if hasSchedule {
		set++
	}
	if l.decodeAttr(c.Attributes, "on_spec_change", ctx, &t.OnSpecChange) && t.OnSpecChange {
		set++
	}
	if l.decodeAttr(c.Attributes, "manual", ctx, &t.Manual) && t.Manual {
		set++
	}
	for i, ab := range c.Blocks {
		if i > 0 {
			l.errorf(ab.DefRange, "Duplicate on_alert block", "A trigger has at most one on_alert block; put all matchers in one, or use another trigger block.")
			return t, false
		}
		set++
		if t.Alert = l.decodeAlert(ab, ctx); t.Alert == nil {
			return t, false
		}
	}
	var tz string
	if l.decodeAttr(c.Attributes, "timezone", ctx, &tz) {
		loc, err := l.location(tz)
		if err != nil {
			l.errorf(c.Attributes["timezone"].Expr.Range(), "Unknown time zone", "%q is not an IANA time zone name; write it like \"Europe/Berlin\" or \"UTC\".", tz)
			return t, false
		}
		t.Timezone = loc
		if !hasSchedule {
			l.errorf(c.Attributes["timezone"].NameRange, "Time zone without schedule", "timezone only applies to schedule triggers.")
		}
	}
	if set != 1 {
		l.errorf(blk.DefRange, "Invalid trigger", "A trigger block sets exactly one of schedule, on_spec_change = true, manual = true or an on_alert block; use one block per trigger.")
		return t, false
	}
	if hasSchedule {
		s, err := parseSchedule(t.Schedule, t.Timezone)
		if err != nil {
			l.errorf(c.Attributes["schedule"].Expr.Range(), "Invalid schedule", "%q: %v. Use five cron fields (\"0 6 * * MON-FRI\"), a descriptor (\"@daily\") or \"@every 6h\".", t.Schedule, err)
			return t, false
		}
		t.schedule = s
	}
	return t, true
}

// providerRef resolves `provider = provider.<kind>.<name>`.
func (l *loader) providerRef(attr *hcl.Attribute) *Provider {
	trav, diags := hcl.AbsTraversalForExpr(attr.Expr)
	if diags.HasErrors() || len(trav) != 3 || trav.RootName() != "provider" {
		l.errorf(attr.Expr.Range(), "Invalid provider reference", "Refer to a provider as provider.<kind>.<name>, for example provider.exec.local or provider.openai.default.")
		return nil
	}
	kind, ok1 := trav[1].(hcl.TraverseAttr)
	name, ok2 := trav[2].(hcl.TraverseAttr)
	if !ok1 || !ok2 {
		l.errorf(attr.Expr.Range(), "Invalid provider reference", "Refer to a provider as provider.<kind>.<name>.")
		return nil
	}
	var known []string
	for _, p := range l.spec.Providers {
		if p.Kind == kind.Name && p.Name == name.Name {
			return p
		}
		known = append(known, p.Ref())
	}
	ref := "provider." + kind.Name + "." + name.Name
	l.errorf(attr.Expr.Range(), "Unknown provider", "%s is not declared in %s.%s", ref, ProvidersFile, suggest(ref, known))
	return nil
}

var policySchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "applies_to", Required: true}, {Name: "enforcement"}},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "deny", LabelNames: []string{"name"}},
		{Type: "require_approval", LabelNames: []string{"name"}},
		{Type: "budget"},
		{Type: "freeze", LabelNames: []string{"name"}},
		{Type: "require_review", LabelNames: []string{"name"}}, // review.go
	},
}

var denySchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "condition", Required: true}, {Name: "message"}}}

var approvalSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "condition"}, {Name: "reviewers", Required: true}, {Name: "min"}, {Name: "allow_control_changes"},
}}

func (l *loader) decodePolicy(f *hcl.File, b *hcl.Block) {
	p := &Policy{Name: b.Labels[0], Enforcement: Hard, DeclRange: b.DefRange, Source: blockSource(f, b)}
	c := l.content(b.Body, policySchema)
	if c == nil {
		return
	}
	ctx := l.evalCtx(false)
	if l.decodeAttr(c.Attributes, "applies_to", ctx, &p.AppliesTo) {
		l.checkGlobs(p.AppliesTo, c.Attributes["applies_to"].Expr.Range())
	}
	if l.decodeAttr(c.Attributes, "enforcement", ctx, &p.Enforcement) {
		switch p.Enforcement {
		case Advisory, Soft, Hard:
		default:
			l.errorf(c.Attributes["enforcement"].Expr.Range(), "Invalid enforcement level", "%q is not an enforcement level: use \"advisory\" (recorded, never blocks), \"soft\" (blocks, reviewers may override) or \"hard\" (blocks).%s",
				p.Enforcement, suggest(p.Enforcement, []string{Advisory, Soft, Hard}))
		}
	}
	rules := map[string]hcl.Range{}
	for _, blk := range c.Blocks {
		if blk.Type == "budget" {
			if p.Budget != nil {
				l.errorf(blk.DefRange, "Duplicate budget block", "Policy %q already has a budget block at %s; put all limits in one.", p.Name, p.Budget.DeclRange)
				continue
			}
			p.Budget = l.decodeBudget(blk, ctx)
			continue
		}
		name := blk.Labels[0]
		if prev, dup := rules[name]; dup {
			l.errorf(blk.LabelRanges[0], "Duplicate rule", "Policy %q already has a rule %q at %s; rule names are unique within a policy.", p.Name, name, prev)
			continue
		}
		rules[name] = blk.DefRange
		switch blk.Type {
		case "deny":
			dc := l.content(blk.Body, denySchema)
			if dc == nil {
				continue
			}
			cond, ok := dc.Attributes["condition"]
			if !ok {
				continue // a missing condition is reported by Content
			}
			r := &DenyRule{Name: name, DeclRange: blk.DefRange, Condition: cond.Expr}
			l.decodeAttr(dc.Attributes, "message", ctx, &r.Message)
			if d := CheckCondition(r.Condition); !d.HasErrors() {
				r.fast = compileCondition(r.Condition)
			} else {
				l.diags = append(l.diags, d...)
			}
			p.Denies = append(p.Denies, r)
		case "require_approval":
			ac := l.content(blk.Body, approvalSchema)
			if ac == nil || ac.Attributes["reviewers"] == nil {
				continue // a missing reviewers is reported by Content
			}
			r := &ApprovalRule{Name: name, DeclRange: blk.DefRange, Min: 1}
			if a, ok := ac.Attributes["condition"]; ok {
				r.Condition = a.Expr
				if d := CheckCondition(r.Condition); d.HasErrors() {
					l.diags = append(l.diags, d...)
				} else {
					r.fast = compileCondition(r.Condition)
				}
			}
			l.decodeAttr(ac.Attributes, "reviewers", ctx, &r.Reviewers)
			if l.decodeAttr(ac.Attributes, "min", ctx, &r.Min) && r.Min < 1 {
				l.errorf(ac.Attributes["min"].Expr.Range(), "Invalid minimum", "min is the number of approvals required and must be at least 1.")
			}
			r.ReviewersRange = ac.Attributes["reviewers"].Expr.Range()
			if l.decodeAttr(ac.Attributes, "allow_control_changes", ctx, &r.AllowControlChanges) && r.AllowControlChanges && p.Enforcement != Hard {
				l.errorf(ac.Attributes["allow_control_changes"].NameRange, "Control changes need a hard policy", "allow_control_changes lets agents change agents/, policies/ and the other control files with this rule's approval; it is only honoured in a policy with enforcement = \"hard\", so that no override or advisory setting can weaken it.")
			}
			p.Approvals = append(p.Approvals, r)
		case "freeze":
			if fr := l.decodeFreeze(blk, ctx); fr != nil {
				p.Freezes = append(p.Freezes, fr)
			}
		case "require_review":
			if rr := l.decodeReview(blk, ctx, p); rr != nil {
				p.Reviews = append(p.Reviews, rr)
			}
		}
	}
	for _, other := range l.spec.Policies {
		if other.Name == p.Name {
			l.errorf(b.LabelRanges[0], "Duplicate policy", "A policy %q is already declared at %s; policy names must be unique across policies/*.hcl.", p.Name, other.DeclRange)
			return
		}
	}
	l.spec.Policies = append(l.spec.Policies, p)
}

func (l *loader) checkGlobs(globs []string, rng hcl.Range) {
	for _, g := range globs {
		if !doublestar.ValidatePattern(g) {
			l.errorf(rng, "Invalid glob", "%q is not a valid glob pattern: check its brackets and braces. Use * within a path segment and ** across segments.", g)
		}
	}
}

// crossCheck validates references between files: reviewer groups used by
// policies.
func (l *loader) crossCheck() {
	var groups []string
	for _, g := range l.spec.Groups {
		groups = append(groups, g.Name)
	}
	for _, p := range l.spec.Policies {
		for _, r := range p.Approvals {
			for _, name := range r.Reviewers {
				if l.spec.Group(name) == nil {
					l.errorf(r.ReviewersRange, "Unknown reviewer group", "Rule %q of policy %q names group %q, which %s does not declare.%s", r.Name, p.Name, name, ReviewersFile, suggest(name, groups))
				}
			}
		}
	}
}

// digests computes each agent's spec digest: what defines its runs.
func (l *loader) digests() {
	for _, a := range l.spec.Agents {
		h := sha256.New()
		part := func(kind string, b []byte) {
			fmt.Fprintf(h, "%s %d\n", kind, len(b))
			h.Write(b)
		}
		part("agent", a.Source)
		part("prompt", []byte(a.Prompt))
		if a.Provider != nil {
			part("provider", a.Provider.Source)
		}
		a.perceptionDigest(part)
		for _, arg := range a.Command {
			if clean, err := repoPath(arg); err == nil && path.Ext(clean) != "" {
				if b, err := fs.ReadFile(l.fsys, clean); err == nil {
					part("command-file "+clean, b)
					l.read.add(clean)
				}
			}
		}
		for _, p := range l.spec.PoliciesFor(a.Name) {
			part("policy", p.Source)
		}
		a.Digest = hex.EncodeToString(h.Sum(nil))
	}
}

func envFunc(lookup func(string) (string, bool)) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "name", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			if lookup == nil {
				return cty.StringVal(""), nil
			}
			v, _ := lookup(args[0].AsString())
			return cty.StringVal(v), nil
		},
	})
}

// policyDigest hashes the policy files in name order.
func policyDigest(files map[string]*hcl.File) string {
	names := make([]string, 0, len(files))
	for name := range files {
		if strings.HasPrefix(name, "policies/") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	h := sha256.New()
	for _, name := range names {
		fmt.Fprintf(h, "%s %d\n", name, len(files[name].Bytes))
		h.Write(files[name].Bytes)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// reservedEnv says why an agent may not set the variable name, or "".
func reservedEnv(name string) string {
	if !envName.MatchString(name) {
		return "is not a variable name (letters, digits and underscores, not starting with a digit)"
	}
	switch name {
	case "PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ":
		return "the sandbox sets itself"
	}
	switch {
	case strings.HasPrefix(name, "RECONCILER_"):
		return "names the run (RECONCILER_* are the reconciler's)"
	case strings.HasPrefix(name, "LD_"), strings.HasPrefix(name, "GIT_"):
		return "changes how programs or git run (LD_* and GIT_* are refused)"
	}
	return ""
}
