// Command reconciler is the GitOps control plane for AI agents: it reads
// agent tasks and policies from a git repository, runs the agents, proposes
// their changes as branches, and records every event in a signed ledger.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/agentgitops/reconciler/sandbox"
)

func main() {
	// A reconciler started by its own exec runner is the agent sandbox's
	// helper (a hidden argument); it never returns then.
	sandbox.Init()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// command is a subcommand.
type command struct {
	name  string
	short string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"once", "run one reconcile pass and exit", cmdOnce},
		{"run", "run the reconciler daemon", cmdRun},
		{"demo", "run the embedded example end to end", cmdDemo},
		{"validate", "check a desired-state checkout", cmdValidate},
		{"policy", "test policies against example changes (policy test)", cmdPolicy},
		{"eval", "run the prompt regression evals of evals/<agent>/*.hcl", cmdEval},
		{"keygen", "create a ledger signing key", cmdKeygen},
		{"ledger", "verify or list the evidence ledger", cmdLedger},
		{"plan", "show what a pass would do, and decisions on a change", cmdPlan},
		{"replay", "re-execute a recorded model run and compare its tree", cmdReplay},
		{"trigger", "start a manual run of an agent", cmdTrigger},
		{"revert", "open a proposal reverting a merged agent change", cmdRevert},
		{"status", "show the reconciler's status", cmdStatus},
		{"roi", "report work-unit value against cost, from the ledger", cmdROI},
		{"version", "print the version, the source revision and the Go version", cmdVersion},
		{"healthcheck", "exit 0 when a running daemon answers /healthz (the image's HEALTHCHECK)", cmdHealthcheck},
		{"controller", "run the Kubernetes controller (AgentRepository)", cmdController},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] == "--version" || args[0] == "-version" {
		return cmdVersion(ctx, args[1:], stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "reconciler: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: reconciler <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	cs := commands()
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.short)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'reconciler <command> -h' for a command's flags.")
}

// newFlagSet returns a FlagSet whose usage names the command.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("reconciler "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: reconciler %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may come before, between or after positional
// arguments, returning an exit code when the command should stop (-h: 0;
// a bad flag: 2, the flag package having printed why). "--" ends the
// flags: everything after it is positional. Afterwards fs.Args() (and
// fs.NArg(), fs.Arg(i)) hold every positional argument in order, so
// "validate DIR --format json" and "validate --format json DIR" mean the
// same.
func parse(fs *flag.FlagSet, args []string) (int, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK, false
			}
			return exitUsage, false
		}
		rest := fs.Args()
		if endsWithTerminator(fs, args[:len(args)-len(rest)]) {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		// The flag package stops at the first positional argument:
		// keep it and go on parsing flags after it.
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	// Parsing "--" and the positionals sets no flag and leaves them as
	// fs.Args(), for callers that read them there.
	_ = fs.Parse(append([]string{"--"}, pos...))
	return 0, true
}

// parseNoArgs is parse for commands that take no positional arguments:
// one is a usage error.
func parseNoArgs(fs *flag.FlagSet, args []string) (int, bool) {
	if code, ok := parse(fs, args); !ok {
		return code, false
	}
	if fs.NArg() > 0 {
		return usageError(fs.Output(), "%s takes no arguments, got %q", strings.TrimPrefix(fs.Name(), "reconciler "), fs.Args()), false
	}
	return 0, true
}

// endsWithTerminator reports whether consumed, the arguments one
// fs.Parse consumed, ended with the terminator "--" rather than with a
// flag's value that happens to be "--" (as in --run --).
func endsWithTerminator(fs *flag.FlagSet, consumed []string) bool {
	for i := 0; i < len(consumed); i++ {
		s := consumed[i]
		if s == "--" {
			return true
		}
		name := strings.TrimPrefix(s[1:], "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				continue
			}
		}
		i++ // the flag's value
	}
	return false
}

// defaultListen is the default address of the daemon's HTTP endpoints:
// $RECONCILER_LISTEN (the container image sets :8080, so probes from
// outside the container reach it), else loopback only, 127.0.0.1:8080,
// so that a reconciler started on a workstation is not reachable from
// the network unless asked.
func defaultListen() string {
	if v := strings.TrimSpace(os.Getenv("RECONCILER_LISTEN")); v != "" {
		return v
	}
	return "127.0.0.1:8080"
}

// fail prints one line of error and returns exitFail.
func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "reconciler: %s\n", strings.TrimSpace(err.Error()))
	return exitFail
}

// flagFailure reports err from checking flags: a usageErr exits 2, any
// other error 1.
func flagFailure(stderr io.Writer, err error) int {
	var ue usageErr
	if errors.As(err, &ue) {
		return usageError(stderr, "%s", ue)
	}
	return fail(stderr, err)
}

// usageError prints a usage problem and returns exitUsage.
func usageError(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "reconciler: "+format+"\n", args...)
	return exitUsage
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
