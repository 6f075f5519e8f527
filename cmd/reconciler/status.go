package main

import (
	"context"
	"errors"
	"io"
)

// cmdStatus is being built (issue 11); this placeholder keeps the command list
// compiling until it lands.
func cmdStatus(_ context.Context, _ []string, _, stderr io.Writer) int {
	return fail(stderr, errors.New("status: not built yet"))
}
