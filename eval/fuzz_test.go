package eval_test

import (
	"io/fs"
	"os"
	"testing"
	"testing/fstest"

	"github.com/agentgitops/reconciler/eval"
	"github.com/agentgitops/reconciler/hclspec"
)

// Load never panics on an eval file, and returns scenarios only when it
// reports no error.
func FuzzLoad(f *testing.F) {
	for _, name := range []string{"testdata/repo/evals/responder/latency.hcl", "testdata/repo/evals/sorter/sort.hcl"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`scenario "x" { input = { a = [1, "b", null] } expect { matches = ["(", "a{1000000}"] } }`))
	f.Add([]byte("scenario \"\\u0000\" {\n file \"../x\" { content = file(\"/etc/passwd\") }\n}\n"))
	base := fstest.MapFS{}
	dir := os.DirFS("testdata/repo")
	for _, name := range []string{"providers.hcl", "reviewers.hcl", "agents/responder.hcl", "agents/sorter.hcl", "policies/config.hcl", "tools/sort.sh", "evals/responder/alert.json"} {
		b, err := fs.ReadFile(dir, name)
		if err != nil {
			f.Fatal(err)
		}
		base[name] = &fstest.MapFile{Data: b}
	}
	spec, diags := hclspec.Load(base, hclspec.Options{})
	if diags.HasErrors() {
		f.Fatal(diags)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		fsys := fstest.MapFS{"evals/responder/x.hcl": &fstest.MapFile{Data: src}}
		for k, v := range base {
			fsys[k] = v
		}
		scs, diags := eval.Load(fsys, spec, "")
		if diags.HasErrors() && scs != nil {
			t.Fatalf("scenarios despite errors: %v", diags)
		}
		for _, sc := range scs {
			if eval.Slug(sc.Name) == "" || len(eval.RunID(sc)) != 12 {
				t.Fatalf("scenario %q has no slug or run id", sc.Name)
			}
		}
	})
}
