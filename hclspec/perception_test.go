package hclspec

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/hashicorp/hcl/v2"
)

// perceptionFS is the base repository with providers.hcl extended by
// blocks and a model agent "watcher" whose body (between its prompt and
// trigger) is body.
func perceptionFS(t *testing.T, blocks, body string) fstest.MapFS {
	t.Helper()
	fsys := txtarFS(t, "testdata/errors/base.txtar")
	fsys["providers.hcl"] = &fstest.MapFile{Data: []byte(string(fsys["providers.hcl"].Data) + blocks)}
	fsys["prompts/watcher.md"] = &fstest.MapFile{Data: []byte("Watch it.\n")}
	fsys["agents/watcher.hcl"] = &fstest.MapFile{Data: []byte("agent \"watcher\" {\n" +
		"  provider = provider.openai.default\n" +
		"  model    = \"gpt-4o-mini\"\n" +
		"  prompt   = file(\"prompts/watcher.md\")\n" +
		body +
		"  trigger {\n    manual = true\n  }\n" +
		"  scope {\n    paths = [\"deploy/**\"]\n  }\n}\n")}
	return fsys
}

const perceptionBlocksHCL = `
prometheus "main" {
  url              = env("PROM_URL")
  bearer_token_env = "PROM_TOKEN"
}

kubernetes "staging" {
  kubeconfig_env = "STAGING_KUBECONFIG"
  kinds          = ["Pod", "Deployment.apps"]
  namespaces     = ["payments-staging"]
}
`

func TestLoadPerception(t *testing.T) {
	body := "  tools      = [\"prometheus_query\", \"kubernetes_get\", \"http_get\", \"recall\"]\n" +
		"  prometheus = \"main\"\n  kubernetes = \"staging\"\n  http_allow = [\"https://status.example.com/api/\"]\n"
	env := func(name string) (string, bool) {
		if name == "PROM_URL" {
			return "http://127.0.0.1:9090", true
		}
		return "", false
	}
	spec, diags := Load(perceptionFS(t, perceptionBlocksHCL, body), Options{LookupEnv: env})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	a := spec.Agent("watcher")
	p, k := a.Perception.Prometheus, a.Perception.Kubernetes
	if p == nil || p.Name != "main" || p.URL != "http://127.0.0.1:9090" || p.BearerTokenEnv != "PROM_TOKEN" {
		t.Errorf("Prometheus = %+v", p)
	}
	if k == nil || k.KubeconfigEnv != "STAGING_KUBECONFIG" || !slices.Equal(k.Kinds, []string{"Pod", "Deployment.apps"}) || !slices.Equal(k.Namespaces, []string{"payments-staging"}) {
		t.Errorf("Kubernetes = %+v", k)
	}
	if !slices.Equal(a.Perception.HTTPAllow, []string{"https://status.example.com/api/"}) {
		t.Errorf("HTTPAllow = %v", a.Perception.HTTPAllow)
	}
	if len(spec.Prometheus) != 1 || len(spec.Kubernetes) != 1 {
		t.Errorf("spec has %d prometheus and %d kubernetes blocks, want 1 and 1", len(spec.Prometheus), len(spec.Kubernetes))
	}

	// url = env() of an unset variable loads, as base_url does; the tool
	// says so when called.
	unset, diags := Load(perceptionFS(t, perceptionBlocksHCL, body), Options{})
	if diags.HasErrors() || unset.Agent("watcher").Perception.Prometheus.URL != "" {
		t.Errorf("with PROM_URL unset: %v", diags)
	}

	// The blocks an agent uses are part of its digest; others are not.
	digest := func(blocks string) string {
		t.Helper()
		s, diags := Load(perceptionFS(t, blocks, body), Options{LookupEnv: env})
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return s.Agent("watcher").Digest
	}
	base := digest(perceptionBlocksHCL)
	if d := digest(strings.Replace(perceptionBlocksHCL, `"payments-staging"`, `"payments-staging", "payments-prod"`, 1)); d == base {
		t.Error("widening the kubernetes block left the agent's digest unchanged")
	}
	if d := digest(strings.Replace(perceptionBlocksHCL, `"PROM_TOKEN"`, `"OTHER_TOKEN"`, 1)); d == base {
		t.Error("changing the prometheus block left the agent's digest unchanged")
	}
	if d := digest(perceptionBlocksHCL + "\nprometheus \"other\" {\n  url = \"http://other:9090\"\n}\n"); d != base {
		t.Error("a prometheus block the agent does not use changed its digest")
	}
}

// Each mistake is an error at the tightest range, with the fix in its
// detail.
func TestLoadPerceptionDiagnostics(t *testing.T) {
	for _, tc := range []struct {
		name, blocks, body string
		summary, subject   string
		detail             string
	}{
		{name: "tool without prometheus", body: "  tools = [\"prometheus_query\"]\n", summary: "Missing prometheus", subject: "agents/watcher.hcl:5:11-5:31", detail: `prometheus = "main"`},
		{name: "prometheus without tool", blocks: perceptionBlocksHCL, body: "  tools = [\"read_file\"]\n  prometheus = \"main\"\n", summary: "Unused prometheus", subject: "agents/watcher.hcl:6:3-6:13", detail: `add "prometheus_query" to tools`},
		{name: "unknown prometheus", blocks: perceptionBlocksHCL, body: "  tools = [\"prometheus_query\"]\n  prometheus = \"mian\"\n", summary: "Unknown prometheus", subject: "agents/watcher.hcl:6:16-6:22", detail: `Did you mean "main"?`},
		{name: "tool without kubernetes", body: "  tools = [\"kubernetes_get\"]\n", summary: "Missing kubernetes", subject: "agents/watcher.hcl:5:11-5:29", detail: `kubernetes = "staging"`},
		{name: "unknown kubernetes", blocks: perceptionBlocksHCL, body: "  tools = [\"kubernetes_get\"]\n  kubernetes = \"prod\"\n", summary: "Unknown kubernetes", subject: "agents/watcher.hcl:6:16-6:22", detail: `add kubernetes "prod"`},
		{name: "tool without http_allow", body: "  tools = [\"http_get\"]\n", summary: "Missing http_allow", subject: "agents/watcher.hcl:5:11-5:23", detail: `http_allow = [`},
		{name: "http_allow not a URL", body: "  tools = [\"http_get\"]\n  http_allow = [\"status.example.com\"]\n", summary: "Invalid URL prefix", subject: "agents/watcher.hcl:6:16-6:38", detail: "not an absolute http(s) URL"},
		{name: "http_allow with credentials", body: "  tools = [\"http_get\"]\n  http_allow = [\"https://u:p@status.example.com/\"]\n", summary: "Invalid URL prefix", subject: "agents/watcher.hcl:6:16-6:51", detail: "carries credentials"},
		{name: "http_allow unclean", body: "  tools = [\"http_get\"]\n  http_allow = [\"https://status.example.com/a/../b/\"]\n", summary: "Invalid URL prefix", subject: "agents/watcher.hcl:6:16-6:54", detail: "write it clean"},
		{name: "http_allow empty", body: "  tools = [\"http_get\"]\n  http_allow = []\n", summary: "No URL prefixes", subject: "agents/watcher.hcl:6:16-6:18", detail: "status.example.com"},
		{name: "prometheus url", blocks: "prometheus \"main\" {\n  url = \"prometheus:9090\"\n}\n", summary: "Invalid Prometheus URL", subject: "providers.hcl:15:9-15:26", detail: "http(s) base URL"},
		{name: "prometheus credentials", blocks: "prometheus \"main\" {\n  url = \"http://admin:pw@prometheus:9090\"\n}\n", summary: "Credentials in Prometheus URL", subject: "providers.hcl:15:9-15:42", detail: "bearer_token_env"},
		{name: "prometheus token value", blocks: "prometheus \"main\" {\n  url = \"http://prometheus:9090\"\n  bearer_token_env = \"eyJhbGciOi.x\"\n}\n", summary: "Invalid variable name", subject: "providers.hcl:16:22-16:36", detail: "never put the token itself in git"},
		{name: "duplicate prometheus", blocks: "prometheus \"main\" {\n  url = \"http://a:9090\"\n}\nprometheus \"main\" {\n  url = \"http://b:9090\"\n}\n", summary: "Duplicate prometheus", subject: "providers.hcl:17:1-17:18", detail: "already declared at providers.hcl:14"},
		{name: "secret kind", blocks: "kubernetes \"k\" {\n  kinds = [\"Pod\", \"Secret\"]\n  namespaces = [\"a\"]\n}\n", summary: "Secrets are never readable", subject: "providers.hcl:15:11-15:28", detail: `remove "Secret"`},
		{name: "bad kind", blocks: "kubernetes \"k\" {\n  kinds = [\"deployments\"]\n  namespaces = [\"a\"]\n}\n", summary: "Invalid kind", subject: "providers.hcl:15:11-15:26", detail: `"Deployment.apps"`},
		{name: "namespace glob", blocks: "kubernetes \"k\" {\n  kinds = [\"Pod\"]\n  namespaces = [\"payments-*\"]\n}\n", summary: "Invalid namespace", subject: "providers.hcl:16:16-16:30", detail: "globs are not supported"},
		{name: "missing kinds", blocks: "kubernetes \"k\" {\n  namespaces = [\"a\"]\n}\n", summary: "Missing required argument", subject: "providers.hcl:14:16-14:16", detail: `"kinds" is required`},
		{name: "kubeconfig path in git", blocks: "kubernetes \"k\" {\n  kubeconfig_env = \"/home/me/.kube/config\"\n  kinds = [\"Pod\"]\n  namespaces = [\"a\"]\n}\n", summary: "Invalid variable name", subject: "providers.hcl:15:20-15:43", detail: "path of a kubeconfig file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := Load(perceptionFS(t, tc.blocks, tc.body), Options{})
			if !diags.HasErrors() {
				t.Fatalf("no errors: %v", diags)
			}
			for _, d := range diags {
				if d.Summary != tc.summary {
					continue
				}
				if got := rangeString(d.Subject); got != tc.subject {
					t.Errorf("%s at %s, want %s", d.Summary, got, tc.subject)
				}
				if !strings.Contains(d.Detail, tc.detail) {
					t.Errorf("detail %q does not mention %q", d.Detail, tc.detail)
				}
				return
			}
			t.Errorf("no %q in %v", tc.summary, diags)
		})
	}
}

func TestIsSecretKind(t *testing.T) {
	for kind, want := range map[string]bool{"Secret": true, "secret": true, "Secret.v1": true, "Secret.core": true, "SealedSecret.bitnami.com": false, "Secret.example.com": false, "Pod": false} {
		if got := IsSecretKind(kind); got != want {
			t.Errorf("IsSecretKind(%q) = %v, want %v", kind, got, want)
		}
	}
}

// docs/language.md has an example of every perception block and
// attribute (TestLanguageDocs covers the agent's).
func TestPerceptionDocs(t *testing.T) {
	b, err := os.ReadFile("../docs/language.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for block, s := range map[string][]string{"prometheus": attrNames(prometheusSchema.Attributes), "kubernetes": attrNames(kubernetesSchema.Attributes)} {
		if !regexp.MustCompile(`(?m)^` + block + ` "[^"]+" \{`).MatchString(doc) {
			t.Errorf("no example of a %s block in docs/language.md", block)
		}
		for _, a := range s {
			if !regexp.MustCompile(`(?m)^\s*` + a + `\s*=`).MatchString(doc) {
				t.Errorf("attribute %s.%s has no example in docs/language.md", block, a)
			}
		}
	}
}

func attrNames(attrs []hcl.AttributeSchema) []string {
	var out []string
	for _, a := range attrs {
		out = append(out, a.Name)
	}
	return out
}
