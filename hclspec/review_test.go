package hclspec

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// reviewFS is the example repository with a second openai provider and
// the given policies/review.hcl.
func reviewFS(t *testing.T, policy string) fstest.MapFS {
	t.Helper()
	fsys := copyFS(t, exampleDir)
	fsys["providers.hcl"].Data = append(fsys["providers.hcl"].Data, []byte(`
provider "openai" "local" {
  base_url = "http://127.0.0.1:11434/v1"
  price "qwen2.5-coder" {
    input_per_mtok  = 0
    output_per_mtok = 0
  }
}
`)...)
	fsys["prompts/review.md"] = &fstest.MapFile{Data: []byte("Review this change as a payments SRE would.\n")}
	fsys["policies/review.hcl"] = &fstest.MapFile{Data: []byte(policy)}
	return fsys
}

func TestLoadReviewRule(t *testing.T) {
	spec, diags := Load(reviewFS(t, `policy "second-opinion" {
  applies_to = ["*"]
  require_review "config" {
    condition = anytrue([for f in change.files : glob(f.path, "config/**")])
    models    = ["local/qwen2.5-coder", "default/gpt-4o-mini"]
    prompt    = file("prompts/review.md")
    reviewers = ["sre"]
    min       = 2
    on_error  = "abstain"
  }
  require_review "prod" {
    provider        = provider.openai.default
    models          = ["gpt-4o-mini", "org/fine-tuned"]
    on_disagreement = "deny"
  }
}
`), Options{})
	if spec == nil || diags.HasErrors() {
		t.Fatalf("Load: %v", diags)
	}
	// Only the unpriced model warns.
	if len(diags) != 1 || diags[0].Summary != "Model has no price" || !strings.Contains(diags[0].Detail, `"org/fine-tuned"`) {
		t.Errorf("diagnostics = %v", diags)
	}
	var p *Policy
	for _, q := range spec.Policies {
		if q.Name == "second-opinion" {
			p = q
		}
	}
	if p == nil || len(p.Reviews) != 2 {
		t.Fatalf("policy = %+v", p)
	}
	cfg, prod := p.Reviews[0], p.Reviews[1]
	var models []string
	for _, m := range append(slices.Clone(cfg.Models), prod.Models...) {
		models = append(models, m.Provider.Ref()+" "+m.Model)
	}
	want := []string{"provider.openai.local qwen2.5-coder", "provider.openai.default gpt-4o-mini", "provider.openai.default gpt-4o-mini", "provider.openai.default org/fine-tuned"}
	if !slices.Equal(models, want) {
		t.Errorf("models = %q, want %q", models, want)
	}
	if cfg.Name != "config" || cfg.OnDisagreement != OnDisagreementApproval || cfg.OnError != OnErrorAbstain || cfg.Min != 2 ||
		!slices.Equal(cfg.Reviewers, []string{"sre"}) || !strings.Contains(cfg.Prompt, "payments SRE") || cfg.Condition == nil {
		t.Errorf("config rule = %+v", cfg)
	}
	if prod.OnDisagreement != OnDisagreementDeny || prod.OnError != OnErrorDisagree || prod.Prompt != "" || prod.Condition != nil || len(prod.Reviewers) != 0 {
		t.Errorf("prod rule = %+v", prod)
	}
	// The prompt is a file the spec's digests cover: an agent may not
	// change it.
	if !spec.IsProtected("prompts/review.md") {
		t.Error("the review prompt is not protected")
	}
	// The condition is evaluated like any rule's.
	agent := spec.Agent("image-pinner")
	for _, tc := range []struct {
		path string
		want bool
	}{{"config/payments-api.env", true}, {"deploy/staging/x.yaml", false}} {
		got, diags := cfg.Eval(ConditionInput{Agent: agent, Change: []ChangeFile{{Path: tc.path, Status: StatusModified}}}.Context())
		if diags.HasErrors() || got != tc.want {
			t.Errorf("condition on %s = %v, %v; want %v", tc.path, got, diags, tc.want)
		}
	}
	if c := (ReviewModel{Provider: spec.Providers[1], Model: "gpt-4o-mini"}).Cost(1_000_000, 1_000_000); c != 0.75 {
		t.Errorf("cost of a million tokens each way = %v, want 0.75", c)
	}
}

func TestLoadReviewDiagnostics(t *testing.T) {
	for _, tc := range []struct {
		name, rule      string
		subject, detail string
		summary         string
	}{
		{"unknown provider", `models = ["defualt/gpt-4o"]
    reviewers = ["sre"]`, "policies/review.hcl:4:14-4:32", `names provider "defualt", which providers.hcl does not declare as provider "openai" "defualt". Did you mean "default"?`, "Unknown provider"},
		{"no provider", `models = ["gpt-4o"]
    reviewers = ["sre"]`, "policies/review.hcl:4:14-4:24", `"gpt-4o" names no provider: write "<provider>/<model>"`, "Invalid reviewer model"},
		{"exec provider", `provider = provider.exec.local
    models = ["gpt-4o"]
    reviewers = ["sre"]`, "policies/review.hcl:4:16-4:35", "provider must be an openai provider, not provider.exec.local", "Not a model provider"},
		{"unknown provider reference", `provider = provider.openai.defualt
    models = ["gpt-4o"]
    reviewers = ["sre"]`, "policies/review.hcl:4:16-4:39", `Did you mean "provider.openai.default"?`, "Unknown provider"},
		{"bad on_disagreement", `models = ["default/gpt-4o-mini"]
    on_disagreement = "reject"
    reviewers = ["sre"]`, "policies/review.hcl:5:23-5:31", `"reject" is not what a disagreement can do: use "require_approval"`, "Invalid on_disagreement"},
		{"near on_disagreement", `models = ["default/gpt-4o-mini"]
    on_disagreement = "denny"`, "policies/review.hcl:5:23-5:30", `Did you mean "deny"?`, "Invalid on_disagreement"},
		{"bad on_error", `models = ["default/gpt-4o-mini"]
    on_error = "ignore"
    reviewers = ["sre"]`, "policies/review.hcl:5:16-5:24", `use "disagree"`, "Invalid on_error"},
		{"missing reviewers", `models = ["default/gpt-4o-mini"]`, "policies/review.hcl:3:3-3:34", `name the groups who must approve, such as reviewers = ["sre"], or set on_disagreement = "deny"`, "Missing reviewers"},
		{"unknown group", `models = ["default/gpt-4o-mini"]
    reviewers = ["sr"]`, "policies/review.hcl:5:17-5:23", `names group "sr", which reviewers.hcl does not declare. Did you mean "sre"?`, "Unknown reviewer group"},
		{"reviewers with deny", `models = ["default/gpt-4o-mini"]
    on_disagreement = "deny"
    reviewers = ["sre"]`, "policies/review.hcl:6:5-6:14", "this rule denies on disagreement; remove reviewers", "Unused argument"},
		{"bad min", `models = ["default/gpt-4o-mini"]
    reviewers = ["sre"]
    min = 0`, "policies/review.hcl:6:11-6:12", "a whole number from 1 to 100", "Invalid minimum"},
		{"no models", `models = []
    reviewers = ["sre"]`, "policies/review.hcl:4:14-4:16", "needs at least one model", "No reviewer models"},
		{"duplicate model", `models = ["default/gpt-4o-mini", "default/gpt-4o-mini"]
    reviewers = ["sre"]`, "policies/review.hcl:4:14-4:60", "default/gpt-4o-mini is listed twice", "Duplicate reviewer model"},
		{"bad condition", `condition = change.fiels == []
    models = ["default/gpt-4o-mini"]
    reviewers = ["sre"]`, "policies/review.hcl:4:23-4:29", `Did you mean "files"?`, "Unsupported attribute"},
		{"missing models", `reviewers = ["sre"]`, "policies/review.hcl:3:35-3:35", `The argument "models" is required`, "Missing required argument"},
		{"empty prompt", `models = ["default/gpt-4o-mini"]
    prompt = " "
    reviewers = ["sre"]`, "policies/review.hcl:5:14-5:17", "leave it out for the built-in one", "Empty prompt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "policy \"review\" {\n  applies_to = [\"*\"]\n  require_review \"second-opinion\" {\n    " + tc.rule + "\n  }\n}\n"
			spec, diags := Load(reviewFS(t, src), Options{})
			if spec != nil || !diags.HasErrors() {
				t.Fatalf("Load succeeded: %v", diags)
			}
			var errs []string
			for _, d := range diags {
				if d.Severity != 1 { // hcl.DiagError
					continue
				}
				errs = append(errs, rangeString(d.Subject)+" "+d.Summary+": "+d.Detail)
				if rangeString(d.Subject) == tc.subject && d.Summary == tc.summary && strings.Contains(d.Detail, tc.detail) {
					return
				}
			}
			t.Errorf("no error %s %q %q; got:\n%s", tc.subject, tc.summary, tc.detail, strings.Join(errs, "\n"))
		})
	}
}

func TestLoadReviewUnpricedModelWarns(t *testing.T) {
	spec, diags := Load(reviewFS(t, `policy "review" {
  applies_to = ["*"]
  require_review "second-opinion" {
    models    = ["default/gpt-4o"]
    reviewers = ["sre"]
  }
}
`), Options{})
	if spec == nil || diags.HasErrors() {
		t.Fatalf("Load: %v", diags)
	}
	for _, d := range diags {
		if d.Summary == "Model has no price" && rangeString(d.Subject) == "policies/review.hcl:4:17-4:35" && strings.Contains(d.Detail, `price "gpt-4o"`) {
			return
		}
	}
	t.Errorf("no warning about the unpriced reviewer model: %v", diags)
}
