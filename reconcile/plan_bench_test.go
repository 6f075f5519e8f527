package reconcile_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/reconcile"
)

// BenchmarkDecideChange measures plan --change-from of a one-file change
// on a repository of 10, 10,000 and 100,000 files (directories of 100),
// with one reconciler reused (its mirror fetched once, as a warm
// in-memory mirror): the change is taken from the commit's diff against
// its merge base, so the cost follows the change, not the repository.
// The change touches no agent, so no eval or review runs.
func BenchmarkDecideChange(b *testing.B) {
	for _, n := range []int{10, 10_000, 100_000} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			e := newEnv(b, false, func(dir string) {
				for i := range n {
					sub := filepath.Join(dir, "data", fmt.Sprintf("d%04d", i/100))
					if i%100 == 0 {
						os.MkdirAll(sub, 0o755)
					}
					os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%03d.txt", i%100)), []byte(strings.Repeat("line\n", 20)), 0o644)
				}
			})
			e.pushBranch("bump", "Bump one file", func(work string) {
				p := filepath.Join(work, "data/d0000/f000.txt")
				os.WriteFile(p, []byte("bumped\n"), 0o644)
			})
			r := e.reconcilerConfig(nil, func(c *reconcile.Config) { c.Logger = nil })
			ctx := context.Background()
			if _, err := r.DecideChange(ctx, "env-normaliser", "bump", reconcile.ChangeOptions{}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				cp, err := r.DecideChange(ctx, "env-normaliser", "bump", reconcile.ChangeOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if cp.Outcome != policy.RequireApproval || len(cp.Scenarios) != 0 {
					b.Fatalf("plan = %s %s", cp.Outcome, cp.Summary)
				}
			}
		})
	}
}
