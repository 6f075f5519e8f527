package gitstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// BenchmarkOpenRead opens a warm on-disk mirror of a chain of N commits
// (3N objects, in one pack), reads the head commit and one file of its
// tree, and closes it: the reads a no-op pass starts with, in a new
// process. "mirror" is Open (NoFetch) as the reconciler does it;
// "go-git" is go-git's filesystem storage of the same mirror, which
// decodes the whole pack index and maps every object's offset first.
func BenchmarkOpenRead(b *testing.B) {
	os.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	os.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	dir := b.TempDir()
	for _, n := range benchSizes() {
		bare := chainRepo(b, dir, n)
		cacheDir := filepath.Join(dir, fmt.Sprintf("cache-%d", n))
		r, err := Open(context.Background(), bare, Options{CacheDir: cacheDir})
		if err != nil {
			b.Fatal(err)
		}
		mirror := r.disk.mirror
		head := r.mustBranchB(b, "main")
		r.Close()
		path := ledgerPath(n)
		b.Run(fmt.Sprintf("mirror/N=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r, err := Open(context.Background(), bare, Options{CacheDir: cacheDir, NoFetch: true})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := r.ReadFile(r.mustBranchB(b, "main"), path); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
		b.Run(fmt.Sprintf("go-git/N=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				st := filesystem.NewStorageWithOptions(osfs.New(mirror), cache.NewObjectLRU(objectCacheSize),
					filesystem.Options{MaxOpenDescriptors: maxOpenPacks})
				c, err := object.GetCommit(st, head)
				if err != nil {
					b.Fatal(err)
				}
				f, err := c.File(path)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := f.Contents(); err != nil {
					b.Fatal(err)
				}
				st.Close()
			}
		})
	}
}
