package hclspec

import (
	"fmt"
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoadForge(t *testing.T) {
	fsys := copyFS(t, exampleDir)
	if spec := load(t, fsys); spec.Forge != nil {
		t.Fatalf("the example has no forge block, got %+v", spec.Forge)
	}
	gitea := cloneFS(fsys)
	gitea["providers.hcl"].Data = append(gitea["providers.hcl"].Data, []byte(`
forge "gitea" {
  base_url   = "https://gitea.example.com"
  repository = "platform/desired-state"
  token_env  = "GITEA_TOKEN"
  labels     = ["agent-proposal"]
}
`)...)
	f := load(t, gitea).Forge
	if f == nil || f.Kind != ForgeGitea || f.BaseURL != "https://gitea.example.com/" || f.Owner != "platform" || f.Name != "desired-state" ||
		f.TokenEnv != "GITEA_TOKEN" || len(f.Labels) != 1 {
		t.Fatalf("gitea forge = %+v", f)
	}
	github := cloneFS(fsys)
	github["providers.hcl"].Data = append(github["providers.hcl"].Data, []byte(`
forge "github" {
  repository = "acme/desired-state"
  app {
    id               = 12345
    installation_id  = 678
    private_key_file = "/var/run/secrets/github-app/key.pem"
  }
}
`)...)
	f = load(t, github).Forge
	if f == nil || f.BaseURL != DefaultGitHubAPI || f.App == nil || f.App.ID != 12345 || f.App.InstallationID != 678 {
		t.Fatalf("github forge = %+v (app %+v)", f, f.App)
	}
}

func TestLoadForgeDiagnostics(t *testing.T) {
	for _, tt := range []struct {
		name, block string
		at          string // file:line:col where the diagnostic starts
		summary     string
	}{
		{"unknown kind", `forge "gitlab" {
  repository = "a/b"
  token_env  = "T"
}`, "providers.hcl:2:7", "Unknown forge"},
		{"gitea without base_url", `forge "gitea" {
  repository = "a/b"
  token_env  = "T"
}`, "providers.hcl:2:1", "Missing base_url"},
		{"credentials in url", `forge "gitea" {
  base_url   = "https://bot:secret@gitea.example.com/"
  repository = "a/b"
  token_env  = "T"
}`, "providers.hcl:3:16", "Credentials in base URL"},
		{"bad repository", `forge "github" {
  repository = "just-a-name"
  token_env  = "T"
}`, "providers.hcl:3:16", "Invalid repository"},
		{"no credentials", `forge "github" {
  repository = "a/b"
}`, "providers.hcl:2:1", "Forge credentials"},
		{"two credentials", `forge "github" {
  repository = "a/b"
  token_env  = "T"
  token_file = "/run/token"
}`, "providers.hcl:2:1", "Forge credentials"},
		{"relative token file", `forge "github" {
  repository = "a/b"
  token_file = "secrets/token"
}`, "providers.hcl:4:16", "Relative token file"},
		{"not a variable name", `forge "github" {
  repository = "a/b"
  token_env  = "my token"
}`, "providers.hcl:4:16", "Invalid variable name"},
		{"app on gitea", `forge "gitea" {
  base_url   = "https://gitea.example.com/"
  repository = "a/b"
  app {
    id               = 1
    installation_id  = 2
    private_key_file = "/k.pem"
  }
}`, "providers.hcl:5:3", "Unsupported block"},
		{"unknown attribute", `forge "gitea" {
  base_url   = "https://gitea.example.com/"
  repository = "a/b"
  token      = "abc"
}`, "providers.hcl:5:3", "Unsupported argument"},
		{"duplicate", `forge "github" {
  repository = "a/b"
  token_env  = "T"
}
forge "github" {
  repository = "a/c"
  token_env  = "T"
}`, "providers.hcl:6:1", "Duplicate forge"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fsys := fstest.MapFS{ProvidersFile: {Data: []byte("provider \"exec\" \"local\" {}\n" + tt.block + "\n")}}
			_, diags := Load(fsys, Options{})
			var got []string
			for _, d := range diags {
				if d.Subject != nil {
					at := fmt.Sprintf("%s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
					if at == tt.at && d.Summary == tt.summary {
						return
					}
					got = append(got, at+" "+d.Summary)
				}
			}
			t.Fatalf("want %s %q; got %s", tt.at, tt.summary, strings.Join(got, "; "))
		})
	}
}
