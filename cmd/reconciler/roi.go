package main

import (
	"context"
	"errors"
	"io"
)

// cmdROI is being built (issue 11); this placeholder keeps the command list
// compiling until it lands.
func cmdROI(_ context.Context, _ []string, _, stderr io.Writer) int {
	return fail(stderr, errors.New("roi: not built yet"))
}
