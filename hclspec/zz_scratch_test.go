package hclspec

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/rogpeppe/go-internal/txtar"
)

func TestZZScratch(t *testing.T) {
	names, _ := filepath.Glob("testdata/errors/*.txtar")
	for _, n := range names {
		fsys := fstest.MapFS{}
		for _, a := range []string{"testdata/errors/base.txtar", n} {
			ar, err := txtar.ParseFile(a)
			if err != nil { t.Fatal(err) }
			for _, f := range ar.Files {
				fsys[f.Name] = &fstest.MapFile{Data: f.Data}
			}
		}
		func() {
			defer func() {
				if r := recover(); r != nil { fmt.Printf("== %s PANIC %v\n", n, r) }
			}()
			s, diags := Load(fsys, Options{})
			fmt.Printf("== %s spec=%v\n", strings.TrimSuffix(filepath.Base(n), ".txtar"), s != nil)
			for _, d := range diags {
				fmt.Printf("   %s | %s | %s\n", d.Subject, d.Summary, d.Detail)
			}
		}()
	}
}
