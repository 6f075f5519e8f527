package sandbox_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/agentgitops/reconciler/sandbox"
)

// helperEnvVar, set by TestSeparateHelper, makes this test binary run every
// test with the reconciler-sandbox it names as the helper.
const helperEnvVar = "RECONCILER_TEST_SANDBOX_HELPER"

func TestMain(m *testing.M) {
	sandbox.Init()
	if p := os.Getenv(helperEnvVar); p != "" {
		if err := sandbox.UseHelper(p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}
