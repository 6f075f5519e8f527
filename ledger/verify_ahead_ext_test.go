package ledger_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/signing"
)

// The entries after a keys.changed entry are verified against the keys it
// leaves in force, though they were verified ahead against the genesis
// keys (see verifyAhead): an entry signed by the key the rotation removed
// is untrusted, on every reader.
func TestVerifyAheadAfterRotation(t *testing.T) {
	ctx := context.Background()
	newKey, err := signing.GenerateKey(filepath.Join(t.TempDir(), "new.key"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, false)
	_, l := f.ledger(t, f.signer)
	// Entry 3 replaces the genesis key by newKey.
	if _, err := l.Append(ctx, f.event(1), f.keysChanged(newKey.PublicKey())); err != nil {
		t.Fatal(err)
	}
	_, nl := f.ledger(t, newKey)
	if _, err := nl.Append(ctx, f.event(2), f.event(3)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.verify(t); err != nil {
		t.Fatalf("the rotated ledger: %v", err)
	}
	// Entry 4 re-signed by the removed genesis key.
	es, err := ledger.New(f.open(t), ledger.Options{}).Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bundles, paths := split(es)
	b, err := f.signer.SignStatement(ctx, mustPayload(t, bundles[3]))
	if err != nil {
		t.Fatal(err)
	}
	bundles[3] = b
	rebuild(t, f, bundles, paths)
	_, err = f.verify(t)
	var ve *ledger.VerifyError
	if !errors.As(err, &ve) || ve.Seq != 4 || !errors.Is(err, ledger.ErrUntrusted) {
		t.Fatalf("Verify = %v, want entry 4 untrusted", err)
	}
	if _, err := ledger.New(f.open(t), ledger.Options{}).Sync(ctx); !errors.As(err, &ve) || ve.Seq != 4 || !errors.Is(err, ledger.ErrUntrusted) {
		t.Fatalf("Sync = %v, want entry 4 untrusted", err)
	}
}
