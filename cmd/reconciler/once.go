package main

import (
	"context"
	"errors"
	"fmt"
	"io"
)

func cmdOnce(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("once", "once --repo URL [--branch main] [--key FILE] [--identity \"Name <email>\"]", stderr)
	var f repoFlags
	f.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	r, err := f.reconciler(ctx, stderr, nil)
	var ue usageErr
	if errors.As(err, &ue) {
		return usageError(stderr, "%s", ue)
	}
	if err != nil {
		return fail(stderr, err)
	}
	defer r.Close()
	err = r.Reconcile(ctx)
	st := r.Status()
	for _, c := range st.Conditions {
		fmt.Fprintf(stdout, "%s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	for _, d := range st.Diagnostics {
		fmt.Fprintf(stdout, "  %s\n", d)
	}
	if err != nil {
		return fail(stderr, err)
	}
	if len(st.Diagnostics) > 0 {
		return exitFail
	}
	return exitOK
}
