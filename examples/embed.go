// Package examples embeds the example desired-state repository that
// `reconciler demo` runs and the tests exercise.
package examples

import (
	"embed"
	"io/fs"
)

//go:embed all:repo-layout
var repoLayout embed.FS

// RepoLayout returns the files of examples/repo-layout, rooted at its top.
func RepoLayout() fs.FS {
	sub, err := fs.Sub(repoLayout, "repo-layout")
	if err != nil {
		panic(err) // the embedded directory always exists
	}
	return sub
}
