// Package gitstore is the reconciler's only door to git: it mirrors the
// branches of a remote repository in memory, materializes commits into
// directories and reads back what changed, builds trees and commits directly
// in the object store (including parentless commits for orphan branches), and
// moves remote branches with compare-and-swap pushes.
//
// All git I/O goes through go-git; the git CLI is only needed on the machine
// because go-git's file transport runs git-upload-pack and git-receive-pack.
//
// Promises:
//   - A push never overwrites a remote branch whose value is not the one the
//     caller expected; such a push fails with an error wrapping [ErrStale].
//     (The one exception, a branch created concurrently with a commit that
//     New descends from, loses nothing: see [Repo.Push].)
//   - Missing branches, commits and paths are reported with errors wrapping
//     [ErrNotFound].
//   - [Repo.Checkout] never writes outside the target directory, and neither
//     Checkout nor [Repo.Changes] follows symbolic links.
//   - Credentials embedded in repository URLs never appear in errors or in
//     [Repo.URL].
package gitstore
