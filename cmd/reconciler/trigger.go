package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/server"
)

const triggerHelp = `Trigger starts a manual run of AGENT, which must declare
trigger { manual = true }.

With --addr (the default: the daemon's default --listen address,
$RECONCILER_LISTEN, else 127.0.0.1:8080) it asks a running 'reconciler run'
(POST /api/v1/agents/AGENT/runs, authenticated with the secret in
--webhook-secret-file, the daemon's own) and prints the request id once
the daemon has queued it; the daemon's next pass runs the agent. With
--repo URL it runs one pass here with the request (as 'once' does, with
once's flags) and prints what the pass made of it.

--id names the request (default: a random id): the run's trigger is
manual:ID, so a request repeated with the same id runs once. --by and
--reason are recorded with the run, as given.

It exits 0 when the request was queued (or, with --repo, answered by a
run), 1 when the daemon refused it (unknown agent, no manual trigger, no
spec loaded yet, a full queue, a wrong secret: the daemon's message is
printed) or the pass failed or dropped it, and 2 on a usage error.`

func cmdTrigger(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("trigger", "trigger AGENT [--addr URL --webhook-secret-file FILE | --repo URL [once flags]] [--id ID] [--by NAME] [--reason TEXT] [--format text|json]", stderr)
	q := daemonAsk{what: "runs"}
	q.register(fs, "run")
	var f repoFlags
	f.register(fs)
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", triggerHelp) }
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(stderr, "trigger takes one agent name, got %d arguments %q", fs.NArg(), fs.Args())
	}
	agent := fs.Arg(0)
	if code, ok := q.check(&f, stderr); !ok {
		return code
	}
	if f.repo != "" {
		f.fs = nil // the agent is trigger's own argument
		return triggerLocal(ctx, &f, reconcile.Request{ID: q.id, Agent: agent, By: q.by, Reason: q.reason}, q.format, stdout, stderr)
	}
	acc, code, ok := askDaemon(ctx, q, stdout, stderr, "trigger "+agent, "api", "v1", "agents", agent, "runs")
	if !ok {
		return code
	}
	if q.format == "text" {
		fmt.Fprintf(stderr, "reconciler: request %s queued for agent %s; the daemon's next pass runs it\n", acc.Request, acc.Agent)
	}
	return exitOK
}

// daemonAsk is a manual-run-shaped request (id, by, reason) to a running
// daemon: trigger's and revert's.
type daemonAsk struct {
	addr, secretFile string
	timeout          time.Duration
	format           string
	what             string // what the daemon accepts only with its secret
	id, by, reason   string
}

// register adds the flags of a request to a daemon, and its --format, to
// fs; what is recorded with the caller's --by and --reason.
func (q *daemonAsk) register(fs *flag.FlagSet, what string) {
	fs.StringVar(&q.addr, "addr", "", "base `URL` of the daemon (default: from $RECONCILER_LISTEN, else http://127.0.0.1:8080)")
	fs.StringVar(&q.secretFile, "webhook-secret-file", "", "`file` holding the daemon's shared secret (its --webhook-secret-file)")
	fs.StringVar(&q.id, "id", "", "request id (default: random); the same id again is the same request")
	fs.StringVar(&q.by, "by", "", "who asks, recorded with the "+what)
	fs.StringVar(&q.reason, "reason", "", "why, recorded with the "+what)
	fs.StringVar(&q.format, "format", "text", "output `format`: text or json")
	fs.DurationVar(&q.timeout, "timeout", 30*time.Second, "give up on the daemon after this long")
}

// check refuses a bad --format, and --addr or --webhook-secret-file with
// --repo (which runs the pass here).
func (q *daemonAsk) check(f *repoFlags, stderr io.Writer) (int, bool) {
	if q.format != "text" && q.format != "json" {
		return usageError(stderr, "--format %q: use text or json", q.format), false
	}
	if f.repo != "" && (q.addr != "" || q.secretFile != "") {
		return usageError(stderr, "--repo runs the pass here: it takes neither --addr nor --webhook-secret-file"), false
	}
	return 0, true
}

// askDaemon posts q to the daemon under path with the shared secret and
// prints the request id (text) or the daemon's answer (json). When ok is
// false, code is the exit code and the error is printed; errors are
// prefixed with subject.
func askDaemon(ctx context.Context, q daemonAsk, stdout, stderr io.Writer, subject string, path ...string) (acc server.RunAccepted, code int, ok bool) {
	if q.secretFile == "" {
		return acc, usageError(stderr, "--webhook-secret-file is required: the daemon accepts %s only with its shared secret (or use --repo URL to run a pass here)", q.what), false
	}
	if q.timeout <= 0 {
		return acc, usageError(stderr, "--timeout %s: use a positive duration", q.timeout), false
	}
	u, err := daemonURL(q.addr)
	if err != nil {
		return acc, usageError(stderr, "%s", err), false
	}
	secret, err := server.LoadSecret(q.secretFile)
	if err != nil {
		return acc, fail(stderr, err), false
	}
	body, _ := json.Marshal(map[string]string{"id": q.id, "by": q.by, "reason": q.reason})
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	acc, raw, err := postRun(ctx, u.JoinPath(path...).String(), secret, body)
	if err != nil {
		return acc, fail(stderr, fmt.Errorf("%s: %w", subject, err)), false
	}
	if q.format == "json" {
		stdout.Write(raw)
	} else {
		fmt.Fprintf(stdout, "%s\n", acc.Request)
	}
	return acc, exitOK, true
}

// maxAnswerBytes bounds what is read of the daemon's answer.
const maxAnswerBytes = 1 << 20

// postRun posts a manual run request and returns the daemon's answer, or
// an error with the daemon's message when it refused the request.
func postRun(ctx context.Context, target string, secret server.Secret, body []byte) (server.RunAccepted, []byte, error) {
	var acc server.RunAccepted
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return acc, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret.Reveal())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return acc, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return acc, nil, fmt.Errorf("read the daemon's answer: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		var e struct{ Error string }
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return acc, raw, fmt.Errorf("the daemon answered %s: %s", resp.Status, msg)
	}
	if err := json.Unmarshal(raw, &acc); err != nil || acc.Request == "" {
		return acc, raw, fmt.Errorf("the daemon's answer is not a queued request: %q", raw)
	}
	return acc, raw, nil
}

// localPass runs one pass here (--repo) with req, given an id when it
// has none, and returns it with the pass's outcomes of it and the pass's
// error. When ok is false the reconciler did not start: code is the exit
// code, its error printed.
func localPass(ctx context.Context, f *repoFlags, req reconcile.Request, stderr io.Writer) (_ reconcile.Request, outs []reconcile.RequestOutcome, code int, ok bool, passErr error) {
	stopTracing, err := startTracing(ctx, f.otlpEndpoint, stderr) // tracing.go
	if err != nil {
		return req, nil, usageError(stderr, "%s", err), false, nil
	}
	defer stopTracing()
	r, err := f.reconciler(ctx, stderr, nil)
	var ue usageErr
	if errors.As(err, &ue) {
		return req, nil, usageError(stderr, "%s", ue), false, nil
	}
	if err != nil {
		return req, nil, fail(stderr, err), false, nil
	}
	defer r.Close()
	if req.ID == "" {
		req.ID = "cli-" + time.Now().UTC().Format("20060102T150405.000Z")
	}
	req.Received = time.Now().UTC()
	res, passErr := r.Pass(ctx, []reconcile.Request{req})
	for _, o := range res.Requests {
		if o.Request == req.ID {
			outs = append(outs, o)
		}
	}
	return req, outs, 0, true, passErr
}

// triggerLocal runs one pass with the request and prints its outcome.
func triggerLocal(ctx context.Context, f *repoFlags, req reconcile.Request, format string, stdout, stderr io.Writer) int {
	req, outs, code, ok, err := localPass(ctx, f, req, stderr)
	if !ok {
		return code
	}
	if format == "json" {
		b, _ := json.MarshalIndent(map[string]any{"request": req.ID, "agent": req.Agent, "outcomes": outs}, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		fmt.Fprintf(stdout, "%s\n", req.ID)
		for _, o := range outs {
			line := fmt.Sprintf("agent %s: %s", o.Agent, o.State)
			if o.RunID != "" {
				line += " run " + o.RunID
			}
			if o.Reason != "" {
				line += ": " + o.Reason
			}
			fmt.Fprintf(stderr, "reconciler: %s\n", line)
		}
	}
	if err != nil {
		return fail(stderr, err)
	}
	if len(outs) == 0 {
		return fail(stderr, fmt.Errorf("the pass did not answer request %s", req.ID))
	}
	for _, o := range outs {
		if o.State != reconcile.RequestStarted {
			return fail(stderr, fmt.Errorf("request %s for agent %s was %s: %s", req.ID, req.Agent, o.State, o.Reason))
		}
	}
	return exitOK
}
