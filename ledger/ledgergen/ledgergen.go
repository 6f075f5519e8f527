// Package ledgergen writes long, valid ledgers quickly, for benchmarks and
// load tests: a genesis entry and realistic filler entries, signed and
// chained exactly as ledger.Append would chain them, written with one
// `git fast-import` process.
//
// Entries are a chain (each statement's prev is the sha256 of the previous
// signed bundle, and signatures are randomized), so signing cannot be split
// across cores; Generate instead pipelines the work: events are built on
// every core but one, the chain of statements and signatures runs on one
// goroutine, and the fast-import stream is written by another while git
// packs the objects in its own process.
package ledgergen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/signing"
)

// Options configure Generate. The zero value is usable.
type Options struct {
	// Protected is the branch whose head the genesis entry and the filler
	// entries name as their subject and spec commit; "" means main. It
	// must exist.
	Protected string
	// RepoKeys are trusted by the genesis entry besides the signer's key,
	// as the keys under .reconciler/keys/ at the protected head are when
	// the reconciler starts a ledger.
	RepoKeys []signing.PublicKey
	// Start is the time of entry 1; zero means n*Interval before now, so
	// that the last generated entry is just in the past and real appends
	// (stamped with the current time) continue the sequence of times.
	Start time.Time
	// Interval separates consecutive entries; 0 means one second.
	Interval time.Duration
	// Agents is the number of filler agent names (gen-000, gen-001, ...);
	// 0 means 100. None should be an agent of the spec.
	Agents int
	// Name and Email are the author and committer of the evidence
	// commits; "" means "Reconciler <reconciler@localhost>" (the
	// reconciler's default identity).
	Name, Email string
	// Git is the git binary; "" means "git" on $PATH.
	Git string
	// Progress, when set, receives a line every 10000 entries.
	Progress io.Writer
}

func (o *Options) defaults(n int) {
	if o.Protected == "" {
		o.Protected = "main"
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Start.IsZero() {
		o.Start = time.Now().Add(-time.Duration(n+1) * o.Interval)
	}
	o.Start = o.Start.UTC().Truncate(time.Millisecond)
	if o.Agents <= 0 {
		o.Agents = 100
	}
	if o.Name == "" {
		o.Name = "Reconciler"
	}
	if o.Email == "" {
		o.Email = "reconciler@localhost"
	}
	if o.Git == "" {
		o.Git = "git"
	}
}

// Generate writes a ledger of n entries (n >= 1) signed by signer onto
// branch agent-evidence of the bare repository bareDir, which must have the
// protected branch and no agent-evidence branch, and returns the head
// commit of agent-evidence.
//
// Entry 1 is a ledger.genesis entry trusting signer's key (and
// opts.RepoKeys) whose subject is the protected branch's head; entries
// 2..n alternate run.held entries of filler agents that belong to no spec
// and policy.violation entries that belong to no agent, with bundles of
// about the size of real ones. Each entry is one commit adding exactly its
// ledger/<seq/1000>/<seq>.json on top of the previous one, with the
// entry's summary as message and the entry's time as author and committer
// date, as ledger.Append writes it: the result verifies with ledger.Verify,
// reads with ledger.Ledger.Sync, and real appends continue it.
func Generate(ctx context.Context, bareDir string, signer *signing.Signer, n int, opts Options) (plumbing.Hash, error) {
	if n < 1 {
		return plumbing.ZeroHash, fmt.Errorf("ledgergen: n is %d, want at least 1 (the genesis entry)", n)
	}
	if signer == nil {
		return plumbing.ZeroHash, errors.New("ledgergen: no signer")
	}
	opts.defaults(n)
	g := &gen{bare: bareDir, opts: opts}
	head, err := g.git(ctx, nil, "rev-parse", "--verify", "--quiet", "refs/heads/"+opts.Protected+"^{commit}")
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("ledgergen: branch %s of %s: %w", opts.Protected, bareDir, err)
	}
	if _, err := g.git(ctx, nil, "rev-parse", "--verify", "--quiet", "refs/heads/"+ledger.Branch); err == nil {
		return plumbing.ZeroHash, fmt.Errorf("ledgergen: %s already has a %s branch; generate into a repository without one", bareDir, ledger.Branch)
	}
	g.subject = head
	own := signer.PublicKey()
	own.Source = "reconciler"
	g.keys = ledger.KeySet(append([]signing.PublicKey{own}, opts.RepoKeys...)...)

	if err := g.run(ctx, signer, n); err != nil {
		return plumbing.ZeroHash, err
	}
	tip, err := g.git(ctx, nil, "rev-parse", "--verify", "refs/heads/"+ledger.Branch)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("ledgergen: %w", err)
	}
	return plumbing.NewHash(tip), nil
}

type gen struct {
	bare    string
	opts    Options
	subject string // the protected head
	keys    []ledger.Key
}

// git runs git on the bare repository and returns its trimmed stdout.
func (g *gen) git(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, g.opts.Git, append([]string{"--git-dir", g.bare}, args...)...)
	cmd.Env = gitEnv()
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// gitEnv is the process environment without GIT_* variables, with the
// user's and system's git configuration ignored.
func gitEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	return append(env, "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
}

// signed is one entry ready to be written.
type signed struct {
	seq     uint64
	when    time.Time
	summary string
	bundle  []byte
}

func (g *gen) run(ctx context.Context, signer *signing.Signer, n int) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	cmd := exec.CommandContext(ctx, g.opts.Git, "--git-dir", g.bare, "fast-import", "--quiet", "--done")
	cmd.Env = gitEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("ledgergen: git fast-import: %w", err)
	}

	// Stage 1: events, on all cores but the one the chain needs. Events
	// come out in order through per-batch slots.
	const batch = 256
	type slot struct {
		first  uint64
		events []ledger.Event
		ready  chan struct{}
	}
	slots := make(chan *slot, 4*runtime.NumCPU())
	work := make(chan *slot, 4*runtime.NumCPU())
	go func() {
		defer close(slots)
		defer close(work)
		for first := uint64(1); first <= uint64(n); first += batch {
			s := &slot{first: first, ready: make(chan struct{})}
			select {
			case slots <- s:
			case <-ctx.Done():
				return
			}
			select {
			case work <- s:
			case <-ctx.Done():
				return
			}
		}
	}()
	workers := max(1, runtime.NumCPU()-1)
	for range workers {
		go func() {
			for s := range work {
				last := min(s.first+batch-1, uint64(n))
				s.events = make([]ledger.Event, 0, last-s.first+1)
				for seq := s.first; seq <= last; seq++ {
					s.events = append(s.events, g.event(seq))
				}
				close(s.ready)
			}
		}()
	}

	// Stage 3: the fast-import stream.
	entries := make(chan signed, 1024)
	werr := make(chan error, 1)
	go func() {
		werr <- g.write(ctx, stdin, entries)
	}()

	// Stage 2: the chain.
	var chainErr error
	prev := ""
	start := time.Now()
chain:
	for s := range slots {
		select {
		case <-s.ready:
		case <-ctx.Done():
			chainErr = ctx.Err()
			break chain
		}
		for i, ev := range s.events {
			seq := s.first + uint64(i)
			p := ledger.Predicate{Seq: seq, Prev: prev, Time: g.opts.Start.Add(time.Duration(seq-1) * g.opts.Interval), Event: ev}
			st, err := ledger.Statement(p)
			if err != nil {
				chainErr = fmt.Errorf("ledgergen: entry %d: %w", seq, err)
				break chain
			}
			bundle, err := signer.SignStatement(ctx, st)
			if err != nil {
				chainErr = fmt.Errorf("ledgergen: sign entry %d: %w", seq, err)
				break chain
			}
			sum := sha256.Sum256(bundle)
			prev = hex.EncodeToString(sum[:])
			select {
			case entries <- signed{seq: seq, when: p.Time, summary: ev.Summary, bundle: bundle}:
			case <-ctx.Done():
				chainErr = ctx.Err()
				break chain
			}
			if g.opts.Progress != nil && seq%10000 == 0 {
				fmt.Fprintf(g.opts.Progress, "ledgergen: %d/%d entries signed in %s\n", seq, n, time.Since(start).Round(time.Millisecond))
			}
		}
	}
	if chainErr != nil {
		cancel() // stops the producers and kills fast-import: nothing is kept
	}
	close(entries)
	for range slots { // let the producer finish
	}
	writeErr := <-werr
	waitErr := cmd.Wait()
	switch {
	case chainErr != nil:
		return chainErr
	case writeErr != nil:
		return fmt.Errorf("ledgergen: write to git fast-import: %w: %s", writeErr, strings.TrimSpace(stderr.String()))
	case waitErr != nil:
		return fmt.Errorf("ledgergen: git fast-import: %w: %s", waitErr, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// write streams entries to fast-import: one commit per entry on
// agent-evidence, the first a root commit, each adding exactly the
// entry's file. "done" ends the stream only when every entry was written,
// so a stream cut short by an error fails the import and writes no ref.
func (g *gen) write(ctx context.Context, stdin io.WriteCloser, entries <-chan signed) error {
	w := bufio.NewWriterSize(stdin, 1<<20)
	var err error
	count := 0
	for e := range entries {
		if err != nil {
			continue // drain
		}
		ident := fmt.Sprintf("%s <%s> %d +0000", g.opts.Name, g.opts.Email, e.when.Unix())
		msg := e.summary + "\n"
		fmt.Fprintf(w, "commit refs/heads/%s\nmark :%d\nauthor %s\ncommitter %s\ndata %d\n%s", ledger.Branch, e.seq, ident, ident, len(msg), msg)
		if e.seq > 1 {
			fmt.Fprintf(w, "from :%d\n", e.seq-1)
		}
		fmt.Fprintf(w, "M 100644 inline %s\ndata %d\n", ledger.EntryPath(e.seq), len(e.bundle))
		w.Write(e.bundle)
		_, err = w.WriteString("\n\n")
		count++
	}
	if err == nil && count > 0 && ctx.Err() == nil {
		_, err = w.WriteString("done\n")
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if cerr := stdin.Close(); err == nil {
		err = cerr
	}
	return err
}
