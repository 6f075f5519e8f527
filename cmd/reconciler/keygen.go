package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/agentgitops/reconciler/signing"
)

func cmdKeygen(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("keygen", "keygen --out FILE", stderr)
	out := fs.String("out", "", "private key file to write (0600); the public key goes to FILE.pub")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *out == "" {
		return usageError(stderr, "--out is required")
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o700); err != nil {
		return fail(stderr, fmt.Errorf("keygen: %w", err))
	}
	s, err := signing.GenerateKey(*out)
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "wrote %s (private, 0600) and %s.pub\nkey id %s\ncommit %s.pub to .reconciler/keys/ on the protected branch so 'ledger verify' trusts it\n", *out, *out, s.KeyID(), *out)
	return exitOK
}
