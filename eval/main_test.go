package eval_test

import (
	"os"
	"testing"

	"github.com/agentgitops/reconciler/sandbox"
)

// TestMain lets the test binary be the sandbox's helper: the exec agents
// of these tests run sandboxed, as in production.
func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(m.Run())
}
