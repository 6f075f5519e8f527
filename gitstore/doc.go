// Package gitstore is the reconciler's only door to git: it mirrors the
// branches of a remote repository in memory or in a bare mirror on disk
// (reused across processes, fetched incrementally, locked while open),
// materializes commits into directories and reads back what changed, builds
// trees and commits directly in the object store (including parentless
// commits for orphan branches), and moves remote branches with
// compare-and-swap pushes that send only the objects the Repo created.
//
// All git I/O goes through go-git; the git CLI is only needed on the machine
// because go-git's file transport runs git-upload-pack and git-receive-pack.
// Three exceptions read or index pack entries without go-git's storage,
// each built from go-git's own pieces (its pack scanner, idxfile,
// PatchDelta and hasher) and handing anything unusual back to go-git:
// [ObjectReader], which reads the objects of a mirror's packs from many
// goroutines; the mirror's storage (mirrorstore.go), which looks objects up
// in each pack's .idx in place (packindex.go, mmap and binary search)
// instead of go-git's decode of every index and map of every object's
// offset, so that opening a mirror and reading a few objects costs the same
// at any size; and the indexer of fetched packs (indexpack.go), which
// resolves their deltas on every core and writes the same .idx go-git
// would, every object id computed from its content with go-git's
// collision-detecting SHA-1.
//
// Promises:
//   - A push never overwrites a remote branch whose value is not the one the
//     caller expected, nor creates one that exists: the server checks the
//     expected value under its ref lock. Such a push fails with an error
//     wrapping [ErrStale].
//   - The cost of a push does not grow with the size of the repository or of
//     its history on the client (the server's own connectivity check still
//     walks the new commit's tree).
//   - An on-disk mirror that is locked by another process past
//     Options.LockTimeout gives an error wrapping [ErrCacheLocked]; one that
//     cannot be written or is corrupt gives an error wrapping
//     [ErrCacheUnusable] naming the path, never a panic.
//   - Missing branches, commits and paths are reported with errors wrapping
//     [ErrNotFound].
//   - [Repo.Checkout] never writes outside the target directory, and neither
//     Checkout nor [Repo.Changes] follows symbolic links.
//   - Credentials embedded in repository URLs never appear in errors or in
//     [Repo.URL].
package gitstore
