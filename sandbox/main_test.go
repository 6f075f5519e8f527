package sandbox_test

import (
	"os"
	"testing"

	"github.com/agentgitops/reconciler/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(m.Run())
}
