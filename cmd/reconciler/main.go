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
		{"keygen", "create a ledger signing key", cmdKeygen},
		{"ledger", "verify or list the evidence ledger", cmdLedger},
		{"plan", "show what a pass would do, and decisions on a change", cmdPlan},
		{"replay", "re-execute a recorded model run and compare its tree", cmdReplay},
		{"trigger", "start a manual run of an agent", cmdTrigger},
		{"status", "show the reconciler's status", cmdStatus},
		{"roi", "report work-unit value against cost, from the ledger", cmdROI},
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
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.short)
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

// parse parses flags, returning an exit code when the command should stop.
func parse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

// fail prints one line of error and returns exitFail.
func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "reconciler: %s\n", strings.TrimSpace(err.Error()))
	return exitFail
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
