package main

import (
	"context"
	"errors"
	"io"
)

// cmdTrigger is being built (issue 11); this placeholder keeps the command list
// compiling until it lands.
func cmdTrigger(_ context.Context, _ []string, _, stderr io.Writer) int {
	return fail(stderr, errors.New("trigger: not built yet"))
}
