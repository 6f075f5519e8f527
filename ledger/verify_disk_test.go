package ledger

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"testing"

	"github.com/agentgitops/reconciler/gitstore"
)

// In the tests (not the benchmarks, which measure what users run), scans
// switch to a gitstore.ObjectReader after 3 commits, so that both ways of
// reading run in each test that reads more than that; and every scan of a
// ledger from its start verifies all its entries ahead before the walker
// starts (see verifyAhead).
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		readerAfter = 3
		aheadMin, aheadComplete = 2, true
	}
	os.Exit(m.Run())
}

// VerifyMemoryAndDisk runs Verify of the repository at url on an in-memory
// clone (go-git's reads) and on an on-disk mirror (the scan's
// gitstore.ObjectReader), fails the test unless both give the same report
// or the same error, and returns the in-memory result. For the tests of
// ledger_test too.
func VerifyMemoryAndDisk(t *testing.T, url string, opts VerifyOptions) (*Report, error) {
	t.Helper()
	ctx := context.Background()
	mem, err := gitstore.Open(ctx, url, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	disk, err := gitstore.Open(ctx, url, gitstore.Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	rep, err := Verify(ctx, mem, opts)
	drep, derr := Verify(ctx, disk, opts)
	if fmt.Sprint(err) != fmt.Sprint(derr) {
		t.Errorf("Verify on disk = %v, in memory %v", derr, err)
	}
	for _, target := range []error{ErrInvalid, ErrUntrusted, ErrRewritten} {
		if errors.Is(err, target) != errors.Is(derr, target) {
			t.Errorf("Verify on disk = %v, in memory %v: differ on %v", derr, err, target)
		}
	}
	if err == nil && derr == nil && !reflect.DeepEqual(rep, drep) {
		t.Errorf("Verify on disk = %+v, in memory %+v", drep, rep)
	}
	return rep, err
}
