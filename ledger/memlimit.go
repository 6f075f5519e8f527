package ledger

import (
	"os"
	"runtime/debug"
)

// VerifyMemoryLimit is the soft memory limit `reconciler ledger verify`
// runs Verify under (runtime/debug.SetMemoryLimit). Most of what Verify
// allocates is garbage at once (bundles, statements, trees), and without a
// limit the heap grows to twice what is live between collections: 336-342
// MB of peak RSS for 100k entries, against 219 MB under a limit of 200 MiB,
// in the same time (BenchmarkVerify, idle machine). A soft limit never
// fails an allocation: past it, the collector runs more often.
const VerifyMemoryLimit = 256 << 20

// LimitMemoryForVerify sets VerifyMemoryLimit as the process's soft
// memory limit, unless the operator set one (GOMEMLIMIT) or a lower one is
// in force, and returns a function restoring the limit before.
func LimitMemoryForVerify() (restore func()) {
	prev := debug.SetMemoryLimit(-1)
	if _, set := os.LookupEnv("GOMEMLIMIT"); set || prev <= VerifyMemoryLimit {
		return func() {}
	}
	debug.SetMemoryLimit(VerifyMemoryLimit)
	return func() { debug.SetMemoryLimit(prev) }
}
