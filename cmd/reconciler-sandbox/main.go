// Command reconciler-sandbox is the sandbox's helper: the reconciler starts
// it, in new namespaces, to confine each exec agent's command (see package
// sandbox). Installed next to the reconciler, it makes every sandboxed
// command start about ten times faster than the reconciler starting itself
// as its helper, since it links nothing but the sandbox. It does nothing
// when run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/agentgitops/reconciler/sandbox"
)

func main() {
	sandbox.Init()
	fmt.Fprintln(os.Stderr, "reconciler-sandbox: the reconciler's sandbox helper; the reconciler starts it, it is not run by hand")
	os.Exit(2)
}
