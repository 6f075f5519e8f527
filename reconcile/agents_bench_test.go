//go:build linux

package reconcile_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/sandbox"
)

// BenchmarkAgentsPass measures one pass from trigger to the last proposal
// pushed, for 1 and 100 exec agents on a repository of 10,000 files
// (1,000 directories of 10), each agent scoped to its own directory: the
// figure of issue 10 is the 100-agent time over the 1-agent time. Agents
// run Config.Concurrency at once (0: one per core); concurrency=1 shows the
// sequential cost. Each iteration is a fresh repository and ledger.
func BenchmarkAgentsPass(b *testing.B) {
	// helper: the sandbox's helper is a reconciler-sandbox built from this
	// tree (as make build installs it) rather than this test binary.
	helper := filepath.Join(b.TempDir(), sandbox.HelperName)
	built := false
	for _, tc := range []struct {
		agents, concurrency int
		helper              bool
	}{{1, 0, false}, {100, 0, false}, {100, 1, false}, {100, 8, false}, {1, 0, true}, {100, 0, true}, {100, 8, true}} {
		// The helper comes first: a name that does not match -bench at
		// one level still runs once when it matches all the levels it
		// has.
		name := fmt.Sprintf("helper=self/agents=%d/concurrency=%d", tc.agents, tc.concurrency)
		if tc.helper {
			name = fmt.Sprintf("helper=%s/agents=%d/concurrency=%d", sandbox.HelperName, tc.agents, tc.concurrency)
		}
		b.Run(name, func(b *testing.B) {
			if tc.helper && !built {
				built = true
				if out, err := exec.Command("go", "build", "-o", helper, "../cmd/reconciler-sandbox").CombinedOutput(); err != nil {
					b.Fatalf("build the helper: %v\n%s", err, out)
				}
			}
			use := ""
			if tc.helper {
				use = helper
			}
			if err := sandbox.UseHelper(use); err != nil {
				b.Fatal(err)
			}
			defer sandbox.UseHelper("")
			for range b.N {
				b.StopTimer()
				e := newEnv(b, false, func(dir string) {
					os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
					os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
					os.Remove(filepath.Join(dir, "agents/incident-responder.hcl"))
					for d := range 1000 {
						sub := filepath.Join(dir, "data", fmt.Sprintf("d%03d", d))
						os.MkdirAll(sub, 0o755)
						for f := range 10 {
							os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%03d.txt", f)), []byte(strings.Repeat("line\n", 20)), 0o644)
						}
					}
					os.WriteFile(filepath.Join(dir, "tools/bump.sh"), []byte("#!/bin/sh\nset -eu\necho \"bumped $1\" >> \"data/$1/f000.txt\"\necho \"Bump $1\"\n"), 0o755)
					for i := range tc.agents {
						d := fmt.Sprintf("d%03d", i)
						os.WriteFile(filepath.Join(dir, "agents", fmt.Sprintf("bump-%03d.hcl", i)), []byte(fmt.Sprintf(`agent "bump-%03d" {
  provider = provider.exec.local
  command  = ["sh", "tools/bump.sh", %q]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["data/%s/**"]
  }
}
`, i, d, d)), 0o644)
					}
				})
				r := e.reconcilerConfig(nil, func(c *reconcile.Config) { c.Concurrency = tc.concurrency; c.Logger = nil })
				b.StartTimer()
				start, cpu := time.Now(), cpuTime()
				if err := r.Reconcile(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/pass")
				// The CPU of the pass and of every process it waited for
				// (sandboxes, git): steadier than the time on a busy machine.
				b.ReportMetric(float64((cpuTime() - cpu).Milliseconds()), "cpu-ms/pass")
				b.StopTimer()
				if n := len(e.branches()); n != tc.agents {
					b.Fatalf("%d proposals, want %d", n, tc.agents)
				}
				r.Close()
				b.StartTimer()
			}
		})
	}
}

// cpuTime is the user and system CPU time of this process and of the
// children it has waited for.
func cpuTime() time.Duration {
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}
