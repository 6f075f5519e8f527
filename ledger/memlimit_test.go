package ledger

import (
	"math"
	"os"
	"runtime/debug"
	"testing"
)

// TestLimitMemoryForVerify: the verify limit is set and restored, and an
// operator's GOMEMLIMIT or a lower limit already in force is left alone.
func TestLimitMemoryForVerify(t *testing.T) {
	before := debug.SetMemoryLimit(math.MaxInt64)
	defer debug.SetMemoryLimit(before)
	t.Setenv("GOMEMLIMIT", "") // restored after the test
	os.Unsetenv("GOMEMLIMIT")
	restore := LimitMemoryForVerify()
	if got := debug.SetMemoryLimit(-1); got != VerifyMemoryLimit {
		t.Errorf("limit %d, want %d", got, VerifyMemoryLimit)
	}
	restore()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("after restore: limit %d, want none", got)
	}
	debug.SetMemoryLimit(64 << 20)
	LimitMemoryForVerify()()
	if got := debug.SetMemoryLimit(-1); got != 64<<20 {
		t.Errorf("a lower limit became %d", got)
	}
	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOMEMLIMIT", "1GiB")
	LimitMemoryForVerify()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("with GOMEMLIMIT set the limit became %d", got)
	}
}
