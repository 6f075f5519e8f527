package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/agentgitops/reconciler/signing"
)

const keygenHelp = `Keygen creates a ledger signing key: FILE (the private key, mode 0600) and
FILE.pub. It never overwrites either, and does not create FILE's folder:
a missing folder is more often a typo than a wish.

Exit status is 0 when both were written, 1 when they could not be (either
exists, the folder is missing), 2 on usage errors.`

func cmdKeygen(_ context.Context, args []string, stdout, stderr io.Writer) int {
	flags := newFlagSet("keygen", "keygen --out FILE", stderr)
	out := flags.String("out", "", "private key `FILE` to write (0600); the public key goes to FILE.pub")
	usage := flags.Usage
	flags.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", keygenHelp) }
	if code, ok := parseNoArgs(flags, args); !ok {
		return code
	}
	if *out == "" {
		return usageError(stderr, "--out is required")
	}
	dir := filepath.Dir(*out)
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return fail(stderr, fmt.Errorf("keygen: the folder %q of --out does not exist: create it first (mkdir -m 700 %s)", dir, dir))
	case err != nil:
		return fail(stderr, fmt.Errorf("keygen: %w", err))
	case !fi.IsDir():
		return fail(stderr, fmt.Errorf("keygen: %q, the folder of --out, is not a folder", dir))
	}
	s, err := signing.GenerateKey(*out)
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "wrote %s (private, 0600) and %s.pub\nkey id %s\ncommit %s.pub to .reconciler/keys/ on the protected branch so 'ledger verify' trusts it\n", *out, *out, s.KeyID(), *out)
	return exitOK
}
