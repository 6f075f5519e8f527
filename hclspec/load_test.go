package hclspec

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/rogpeppe/go-internal/txtar"
)

const exampleDir = "../examples/repo-layout"

// copyFS reads a directory tree into a MapFS that tests can change.
func copyFS(t testing.TB, dir string) fstest.MapFS {
	t.Helper()
	out := fstest.MapFS{}
	err := fs.WalkDir(os.DirFS(dir), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(os.DirFS(dir), name)
		out[name] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func cloneFS(fsys fstest.MapFS) fstest.MapFS {
	out := fstest.MapFS{}
	for k, v := range fsys {
		out[k] = &fstest.MapFile{Data: slices.Clone(v.Data)}
	}
	return out
}

// edit replaces old with new in a file of fsys, failing when old is not
// there so that a mistyped edit cannot pass as "no change".
func edit(t testing.TB, fsys fstest.MapFS, name, old, new string) {
	t.Helper()
	f, ok := fsys[name]
	if !ok || !strings.Contains(string(f.Data), old) {
		t.Fatalf("%s does not contain %q", name, old)
	}
	f.Data = []byte(strings.Replace(string(f.Data), old, new, 1))
}

// txtarFS lays the files of testdata archives over each other, later ones
// replacing earlier ones.
func txtarFS(t testing.TB, archives ...string) fstest.MapFS {
	t.Helper()
	out := fstest.MapFS{}
	for _, name := range archives {
		a, err := txtar.ParseFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range a.Files {
			out[f.Name] = &fstest.MapFile{Data: f.Data}
		}
	}
	return out
}

// rangeString is file:line:col-line:col, the whole range as hcl's
// specsuite checks it.
func rangeString(r *hcl.Range) string {
	if r == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%s:%d:%d-%d:%d", r.Filename, r.Start.Line, r.Start.Column, r.End.Line, r.End.Column)
}

func load(t testing.TB, fsys fs.FS) *Spec {
	t.Helper()
	spec, diags := Load(fsys, Options{})
	if len(diags) > 0 || spec == nil {
		t.Fatalf("Load: %v", diags)
	}
	return spec
}

func TestLoadExample(t *testing.T) {
	env := map[string]string{"OPENAI_BASE_URL": "https://llm.example.com/v1"}
	spec, diags := Load(os.DirFS(exampleDir), Options{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	if len(diags) > 0 {
		t.Fatalf("Load: %v", diags)
	}
	if len(spec.Agents) != 3 || len(spec.Policies) != 2 || len(spec.Providers) != 2 || len(spec.Groups) != 2 {
		t.Fatalf("got %d agents, %d policies, %d providers, %d groups; want 3 agents and 2 of the others",
			len(spec.Agents), len(spec.Policies), len(spec.Providers), len(spec.Groups))
	}
	prompt := func(name string) string {
		b, err := os.ReadFile(filepath.Join(exampleDir, "prompts", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	exec, openai := spec.Providers[0], spec.Providers[1]
	if exec.Ref() != "provider.exec.local" || exec.Timeout != 2*time.Minute || exec.MaxOutputBytes != 65536 {
		t.Errorf("exec provider = %s timeout %s max_output_bytes %d, want provider.exec.local 2m0s 65536", exec.Ref(), exec.Timeout, exec.MaxOutputBytes)
	}
	wantPrices := map[string]Price{"gpt-4o-mini": {InputPerMTok: 0.15, OutputPerMTok: 0.60}}
	if openai.Ref() != "provider.openai.default" || openai.BaseURL != env["OPENAI_BASE_URL"] || openai.APIKeyEnv != "OPENAI_API_KEY" || !reflect.DeepEqual(openai.Prices, wantPrices) {
		t.Errorf("openai provider = %s %q %q %v", openai.Ref(), openai.BaseURL, openai.APIKeyEnv, openai.Prices)
	}

	for _, tc := range []struct {
		name, description string
		command           []string
		prompt            string
		scope             []string
		limits            Limits
		workUnit          WorkUnit
		triggers          []string
		declRange         string
	}{
		{
			name:        "env-normaliser",
			description: "Keep config/*.env sorted and free of duplicate keys",
			command:     []string{"sh", "tools/normalise-env.sh"},
			prompt:      prompt("env-normaliser.md"),
			scope:       []string{"config/*.env"},
			limits:      Limits{MaxSteps: 20, MaxTokens: 50000, Timeout: 10 * time.Minute, Retries: DefaultRetries}.WithWorkDefaults(),
			workUnit:    WorkUnit{Kind: "config-hygiene", HumanMinutes: 10},
			triggers:    []string{"on_spec_change"},
			declRange:   "agents/env-normaliser.hcl:1:1-1:23",
		},
		{
			name:        "image-pinner",
			description: "Pin container images in deploy/ to the digests in deploy/images.lock",
			command:     []string{"sh", "tools/pin-images.sh"},
			prompt:      prompt("image-pinner.md"),
			scope:       []string{"deploy/**"},
			limits:      Limits{MaxSteps: 20, MaxTokens: 50000, Timeout: time.Minute, Retries: DefaultRetries}.WithWorkDefaults(),
			workUnit:    WorkUnit{Kind: "image-pin", HumanMinutes: 20},
			triggers:    []string{"on_spec_change", "schedule 0 7 * * MON-FRI Europe/Berlin"},
			declRange:   "agents/image-pinner.hcl:1:1-1:21",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := spec.Agent(tc.name)
			if a == nil {
				t.Fatalf("no agent %q", tc.name)
			}
			if a.Provider != exec {
				t.Errorf("Provider = %v, want the exec provider", a.Provider)
			}
			if got := rangeString(&a.ProviderRange); got != fmt.Sprintf("agents/%s.hcl:3:17-3:36", tc.name) {
				t.Errorf("ProviderRange = %s", got)
			}
			if got := rangeString(&a.DeclRange); got != tc.declRange {
				t.Errorf("DeclRange = %s, want %s", got, tc.declRange)
			}
			if a.Description != tc.description {
				t.Errorf("Description = %q, want %q", a.Description, tc.description)
			}
			if !slices.Equal(a.Command, tc.command) {
				t.Errorf("Command = %q, want %q", a.Command, tc.command)
			}
			if a.Prompt != tc.prompt || a.Prompt == "" {
				t.Errorf("Prompt = %q, want the text of the prompt file %q", a.Prompt, tc.prompt)
			}
			if a.Model != "" || len(a.Tools) != 0 || a.Suspend {
				t.Errorf("Model %q, Tools %q, Suspend %v; want none set", a.Model, a.Tools, a.Suspend)
			}
			if !slices.Equal(a.Scope, tc.scope) {
				t.Errorf("Scope = %q, want %q", a.Scope, tc.scope)
			}
			if a.Limits != tc.limits {
				t.Errorf("Limits = %+v, want %+v", a.Limits, tc.limits)
			}
			if a.WorkUnit != tc.workUnit {
				t.Errorf("WorkUnit = %+v, want %+v", a.WorkUnit, tc.workUnit)
			}
			var triggers []string
			for _, tr := range a.Triggers {
				switch {
				case tr.OnSpecChange:
					triggers = append(triggers, "on_spec_change")
				case tr.Manual:
					triggers = append(triggers, "manual")
				default:
					triggers = append(triggers, "schedule "+tr.Schedule+" "+tr.Timezone.String())
				}
			}
			if !slices.Equal(triggers, tc.triggers) {
				t.Errorf("Triggers = %q, want %q", triggers, tc.triggers)
			}
			if len(a.Digest) != 64 {
				t.Errorf("Digest = %q, want 64 hex digits", a.Digest)
			}
			if got := len(spec.PoliciesFor(a.Name)); got != 2 {
				t.Errorf("PoliciesFor = %d policies, want both (applies_to = [\"*\"])", got)
			}
		})
	}

	// The schedule trigger is parsed in its time zone: 07:00 in Berlin on
	// a winter Monday is 06:00 UTC.
	sched := spec.Agent("image-pinner").Triggers[1]
	next, ok := sched.NextSlot(time.Date(2026, 1, 4, 12, 0, 0, 0, time.UTC))
	if want := time.Date(2026, 1, 5, 6, 0, 0, 0, time.UTC); !ok || !next.Equal(want) {
		t.Errorf("NextSlot = %s, %v; want %s", next, ok, want)
	}

	prod := spec.Policies[1]
	var rules []string
	for _, r := range prod.Denies {
		rules = append(rules, "deny "+r.Name+": "+r.Message)
	}
	for _, r := range prod.Approvals {
		rules = append(rules, fmt.Sprintf("require_approval %s: %d of %s at %s", r.Name, r.Min, r.Reviewers, rangeString(&r.DeclRange)))
	}
	wantRules := []string{
		"deny secrets: agents must not touch secrets",
		"deny too-large: changes over 400 lines must be split or made by a person",
		"require_approval production: 1 of [sre] at policies/protect-prod.hcl:6:3-6:32",
	}
	if prod.Name != "protect-prod" || prod.Enforcement != Hard || !slices.Equal(prod.AppliesTo, []string{"*"}) || !slices.Equal(rules, wantRules) {
		t.Errorf("policy %s %s %q: rules %q, want protect-prod hard [*] %q", prod.Name, prod.Enforcement, prod.AppliesTo, rules, wantRules)
	}
	if cf := spec.Policies[0]; cf.Name != "control-files" || len(cf.Denies) != 1 || len(cf.Approvals) != 0 {
		t.Errorf("policy %s has %d denies, %d approvals; want control-files with 1 deny", cf.Name, len(cf.Denies), len(cf.Approvals))
	}

	var members []string
	for _, g := range spec.Groups {
		for _, m := range g.Members {
			members = append(members, g.Name+"/"+m.Name+" "+m.Email+" "+m.ForgeLogin)
		}
	}
	wantMembers := []string{"sre/rita rita@example.com rita", "sre/sam sam@example.com sam", "payments/paula paula@example.com paula"}
	if !slices.Equal(members, wantMembers) {
		t.Errorf("members = %q, want %q", members, wantMembers)
	}

	var files []string
	for name := range spec.Files {
		files = append(files, name)
	}
	slices.Sort(files)
	wantFiles := []string{"agents/env-normaliser.hcl", "agents/image-pinner.hcl", "agents/incident-responder.hcl", "policies/control-files.hcl", "policies/protect-prod.hcl", "providers.hcl", "reviewers.hcl"}
	if !slices.Equal(files, wantFiles) {
		t.Errorf("Files = %q, want %q", files, wantFiles)
	}
}

func TestAgentDigest(t *testing.T) {
	// The example plus a policy that applies to env-normaliser only.
	base := copyFS(t, exampleDir)
	base["policies/env-only.hcl"] = &fstest.MapFile{Data: []byte(`policy "env-only" {
  applies_to = ["env-*"]

  deny "deletes" {
    condition = anytrue([for f in change.files : f.status == "deleted"])
    message   = "env files are normalised, never deleted"
  }
}
`)}
	digests := func(t *testing.T, fsys fs.FS) map[string]string {
		t.Helper()
		out := map[string]string{}
		for _, a := range load(t, fsys).Agents {
			out[a.Name] = a.Digest
		}
		return out
	}
	want := digests(t, base)

	t.Run("stable", func(t *testing.T) {
		if again := digests(t, cloneFS(base)); !reflect.DeepEqual(again, want) {
			t.Errorf("second load gave %v, first %v", again, want)
		}
		if want["image-pinner"] == want["env-normaliser"] {
			t.Errorf("two agents share digest %s", want["image-pinner"])
		}
		// The example on disk and its copy load to the same digests,
		// except env-normaliser, to which env-only applies.
		disk := digests(t, os.DirFS(exampleDir))
		if disk["image-pinner"] != want["image-pinner"] || disk["env-normaliser"] == want["env-normaliser"] {
			t.Errorf("digests from disk %v, from the copy with env-only %v", disk, want)
		}
	})

	for _, tc := range []struct {
		name     string
		file     string
		old, new string   // old "" writes a new file
		changed  []string // agents whose digest must change; the others must not
	}{
		{"agent block", "agents/image-pinner.hcl", `timeout = "1m"`, `timeout = "2m"`, []string{"image-pinner"}},
		{"comment inside the agent block", "agents/env-normaliser.hcl", "  trigger {", "  # runs on every edit\n  trigger {", []string{"env-normaliser"}},
		{"comment before the agent block", "agents/image-pinner.hcl", `agent "`, "# Maintained by the platform team.\n\nagent \"", nil},
		{"prompt file", "prompts/image-pinner.md", "Pin every", "Pin each", []string{"image-pinner"}},
		{"command script", "tools/pin-images.sh", "set -eu", "set -eux", []string{"image-pinner"}},
		{"other agent's command script", "tools/normalise-env.sh", "set -eu", "set -eux", []string{"env-normaliser"}},
		{"provider block used by both", "providers.hcl", `timeout          = "2m"`, `timeout          = "3m"`, []string{"env-normaliser", "image-pinner"}},
		{"provider block used by the model agent only", "providers.hcl", "0.60", "0.65", []string{"incident-responder"}},
		{"policy applying to every agent", "policies/protect-prod.hcl", "> 400", "> 300", []string{"env-normaliser", "image-pinner", "incident-responder"}},
		{"policy applying to env-normaliser only", "policies/env-only.hcl", "never deleted", "not deleted", []string{"env-normaliser"}},
		{"unrelated file", "deploy/prod/payments-api.yaml", "payments-api", "payments-api-v2", nil},
		{"policy test file", "policies/protect-prod_test.hcl", "", "not even HCL {", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := cloneFS(base)
			if tc.old == "" {
				fsys[tc.file] = &fstest.MapFile{Data: []byte(tc.new)}
			} else {
				edit(t, fsys, tc.file, tc.old, tc.new)
			}
			got := digests(t, fsys)
			for name, old := range want {
				if changed := got[name] != old; changed != slices.Contains(tc.changed, name) {
					t.Errorf("%s: digest changed = %v, want %v", name, changed, !changed)
				}
			}
		})
	}
}

// TestLoadDiagnostics loads each testdata/errors scenario laid over
// base.txtar and checks every diagnostic: its summary, the exact range of
// its subject and that its detail says how to fix the mistake.
func TestLoadDiagnostics(t *testing.T) {
	type diag struct {
		subject string // file:line:col-line:col
		summary string
		detail  string // must be part of the detail
	}
	tests := []struct {
		scenario string
		want     []diag
	}{
		{"alert-trigger", []diag{
			{"agents/paged.hcl:7:18-7:47", "Invalid regular expression", "is not a valid RE2 expression"},
			{"agents/paged.hcl:11:5-11:13", "Alert trigger matches everything", "needs at least one matcher"},
			{"agents/paged.hcl:13:3-13:10", "Invalid trigger", "exactly one of schedule, on_spec_change = true, manual = true or an on_alert block"},
		}},
		{"budget", []diag{
			{"policies/spend.hcl:6:28-6:30", "Invalid budget", "max_cost_usd_per_day must be a positive number"},
			{"policies/spend.hcl:5:28-5:31", "Invalid budget", "1.5 is not a whole number"},
			{"policies/spend.hcl:10:3-10:9", "Duplicate budget block", "put all limits in one"},
		}},
		{"freeze", []diag{
			{"policies/freeze.hcl:5:16-5:27", "Invalid freeze", "not @every"},
			{"policies/freeze.hcl:10:16-10:33", "Invalid schedule", "Use five cron fields, such as \"0 16 * * FRI\""},
			{"policies/freeze.hcl:14:24-14:24", "Missing required argument", "The argument \"duration\" is required"},
			{"policies/freeze.hcl:21:16-21:30", "Unknown time zone", "is not an IANA time zone name"},
		}},
		{"openai-agent", []diag{
			{"agents/model.hcl:4:14-4:40", "Unknown tool", "Did you mean \"write_file\"?"},
			{"agents/model.hcl:1:1-1:14", "Missing prompt", "add prompt = file(\"prompts/model.md\")"},
			{"agents/model.hcl:5:3-5:10", "Unsupported argument", "command is for exec providers"},
		}},
		{"network", []diag{
			{"agents/fetcher.hcl:4:15-4:25", "Unsuitable value type", "a bool is required"},
			{"agents/model.hcl:5:3-5:10", "Unsupported argument", "network is for exec agents"},
		}},
		{"provider-settings", []diag{
			{"providers.hcl:4:17-4:46", "Invalid base URL", "must be an http(s) URL including /v1"},
			{"providers.hcl:5:17-5:31", "Invalid variable name", "never put the key itself in git"},
			{"providers.hcl:14:14-14:59", "Credentials in base URL", "name the variable holding the key in api_key_env"},
		}},
		{"signing-key", []diag{
			{"reviewers.hcl:4:19-4:43", "Invalid signing key", "an SSH public key as in authorized_keys"},
			{"reviewers.hcl:8:19-8:68", "Invalid signing key", "not terminated by -----END PGP PUBLIC KEY BLOCK-----"},
			{"reviewers.hcl:12:19-12:114", "Invalid signing key", "options"},
		}},
		{"syntax-error", []diag{
			{"agents/broken.hcl:3:20-3:21", "Missing item separator", "Expected a comma"},
		}},
		{"unknown-block-type", []diag{
			{"agents/typo.hcl:1:1-1:6", "Unsupported block type", `Did you mean "agent"?`},
		}},
		{"unknown-argument", []diag{
			{"agents/typo.hcl:4:3-4:8", "Unsupported argument", `Did you mean "prompt"?`},
		}},
		{"missing-provider", []diag{
			{"agents/noprov.hcl:1:16-1:16", "Missing required argument", `The argument "provider" is required`},
		}},
		{"unknown-provider", []diag{
			{"agents/typo.hcl:2:14-2:32", "Unknown provider", `provider.exec.locl is not declared in providers.hcl. Did you mean "provider.exec.local"?`},
		}},
		{"invalid-provider-reference", []diag{
			{"agents/quoted.hcl:2:14-2:26", "Invalid provider reference", "Refer to a provider as provider.<kind>.<name>"},
			{"agents/short.hcl:2:14-2:27", "Invalid provider reference", "Refer to a provider as provider.<kind>.<name>"},
		}},
		{"unknown-provider-kind", []diag{
			{"providers.hcl:4:10-4:18", "Unknown provider kind", `Did you mean "openai"?`},
		}},
		{"provider-argument-of-other-kind", []diag{
			{"providers.hcl:2:3-2:11", "Unsupported argument", `"base_url" is an argument of openai providers`},
			{"providers.hcl:6:3-6:10", "Unsupported argument", `"timeout" is an argument of exec providers`},
		}},
		{"duplicate-agent", []diag{
			{"agents/z-copy.hcl:1:7-1:14", "Duplicate agent", `"fixer" is already declared at agents/fixer.hcl:1,1-14; agent names must be unique`},
		}},
		{"duplicate-policy", []diag{
			{"policies/z-copy.hcl:1:8-1:14", "Duplicate policy", `"prod" is already declared at policies/prod.hcl:1,1-14; policy names must be unique`},
		}},
		{"duplicate-provider", []diag{
			{"providers.hcl:5:1-5:24", "Duplicate provider", `already declared at providers.hcl:1,1-24; each provider needs a unique kind and name`},
		}},
		{"duplicate-group", []diag{
			{"reviewers.hcl:7:1-7:12", "Duplicate reviewer group", `"sre" is already declared at reviewers.hcl:1,1-12`},
		}},
		{"duplicate-rule", []diag{
			{"policies/rules.hcl:8:20-8:27", "Duplicate rule", `already has a rule "large" at policies/rules.hcl:4,3-15; rule names are unique within a policy`},
		}},
		{"invalid-agent-name", []diag{
			{"agents/upper.hcl:1:7-1:14", "Invalid agent name", "use lowercase letters, digits, '-' and '_'"},
		}},
		{"missing-scope", []diag{
			{"agents/noscope.hcl:1:1-1:16", "Missing scope block", `add scope { paths = ["deploy/**"] }`},
		}},
		{"scope-without-paths", []diag{
			{"agents/nopaths.hcl:9:9-9:9", "Missing required argument", `The argument "paths" is required`},
		}},
		{"duplicate-scope-block", []diag{
			{"agents/twoscopes.hcl:13:3-13:8", "Duplicate scope block", "at most one scope block; the first is at agents/twoscopes.hcl:9,3-8"},
		}},
		{"invalid-glob-scope", []diag{
			{"agents/glob.hcl:10:13-10:45", "Invalid glob", `"deploy/[prod" is not a valid glob pattern: check its brackets`},
		}},
		{"invalid-glob-applies-to", []diag{
			{"policies/glob.hcl:2:16-2:34", "Invalid glob", `"{fixer,image-*" is not a valid glob pattern: check its brackets and braces`},
		}},
		{"invalid-schedule", []diag{
			{"agents/cron.hcl:6:16-6:33", "Invalid schedule", `Use five cron fields ("0 6 * * MON-FRI")`},
		}},
		{"schedule-never-fires", []diag{
			{"agents/cron.hcl:6:16-6:28", "Invalid schedule", `"0 0 30 2 *": it never fires`},
		}},
		{"empty-schedule", []diag{
			{"agents/cron.hcl:6:16-6:18", "Invalid schedule", `Use five cron fields`},
		}},
		{"every-too-short", []diag{
			{"agents/cron.hcl:6:16-6:28", "Invalid schedule", "shorter than the minimum of one minute"},
		}},
		{"unknown-time-zone", []diag{
			{"agents/cron.hcl:7:16-7:30", "Unknown time zone", `write it like "Europe/Berlin" or "UTC"`},
		}},
		{"time-zone-without-schedule", []diag{
			{"agents/tz.hcl:7:5-7:13", "Time zone without schedule", "timezone only applies to schedule triggers"},
		}},
		{"trigger-two-kinds", []diag{
			{"agents/both.hcl:5:3-5:10", "Invalid trigger", "use one block per trigger"},
		}},
		{"invalid-duration", []diag{
			{"agents/slow.hcl:14:15-14:28", "Invalid duration", `write it like "90s", "10m" or "1h30m"`},
		}},
		{"invalid-retries", []diag{
			{"agents/eager.hcl:14:15-14:17", "Invalid retries", "a whole number from 0 (never) to 10; 11 is not"},
			{"agents/fickle.hcl:14:15-14:18", "Invalid retries", "1.5 is not"},
			{"agents/sulky.hcl:14:15-14:17", "Invalid retries", "-1 is not"},
		}},
		{"invalid-work-limits", []diag{
			{"agents/greedy.hcl:14:31-14:32", "Invalid limit", "max_tool_calls_per_step bounds the tool calls of one model reply: a whole number from 1 to 1024; 0 is not. Leave it out for the default of 64."},
			{"agents/greedy.hcl:15:31-15:34", "Invalid limit", "max_tool_calls bounds the tool calls of a run: a whole number from 1 to 100000; 2.5 is not"},
			{"agents/greedy.hcl:16:31-16:33", "Invalid limit", "-3 is not"},
			{"agents/greedy.hcl:17:31-17:53", "Invalid limit", "max_bytes_written bounds the total size in bytes of the files a run writes: a whole number from 1 to 1073741824; 2147483648 is not. Leave it out for the default of 8388608."},
			{"agents/greedy.hcl:18:32-18:36", "Unsuitable value type", "a number is required"},
		}},
		{"negative-human-minutes", []diag{
			{"agents/cheap.hcl:15:21-15:23", "Invalid work unit", "must not be negative"},
		}},
		{"wrong-attribute-type", []diag{
			{"agents/string.hcl:3:14-3:15", "Unsuitable value type", "list of string required"},
		}},
		{"exec-without-command", []diag{
			{"agents/nocmd.hcl:2:14-2:33", "Missing command", `add command = ["sh", "tools/fix.sh"]`},
		}},
		{"openai-without-model", []diag{
			{"agents/nomodel.hcl:2:14-2:37", "Missing model", `add model = "gpt-4o-mini"`},
		}},
		{"file-outside-repository", []diag{
			{"agents/absolute.hcl:4:20-4:31", "Invalid function argument", `path "/etc/passwd" is absolute; paths are relative to the repository root`},
			{"agents/climb.hcl:4:20-4:45", "Invalid function argument", `path "prompts/../../secrets.txt" leaves the repository`},
		}},
		{"file-missing", []diag{
			{"agents/missing.hcl:4:20-4:38", "Invalid function argument", `read "prompts/missing.md": file does not exist`},
		}},
		{"templatefile-errors", []diag{
			{"agents/listvars.hcl:4:51-4:52", "Invalid function argument", `vars must be an object, such as { service = "api" }`},
			{"agents/novars.hcl:4:51-4:52", "Invalid function argument", `Invalid value for "vars" parameter: template prompts/service.tmpl: prompts/service.tmpl:1,21-28: Unknown variable; There is no variable named "service".`},
		}},
		{"unknown-reviewer-group", []diag{
			{"policies/typo.hcl:6:17-6:25", "Unknown reviewer group", `names group "sres", which reviewers.hcl does not declare. Did you mean "sre"?`},
		}},
		{"approval-without-reviewers", []diag{
			{"policies/nobody.hcl:4:29-4:29", "Missing required argument", `The argument "reviewers" is required`},
		}},
		{"invalid-minimum", []diag{
			{"policies/zero.hcl:6:17-6:18", "Invalid minimum", "must be at least 1"},
		}},
		{"deny-without-condition", []diag{
			{"policies/always.hcl:4:21-4:21", "Missing required argument", `The argument "condition" is required`},
		}},
		{"invalid-enforcement", []diag{
			{"policies/typo.hcl:3:17-3:23", "Invalid enforcement level", `Did you mean "hard"?`},
		}},
		{"condition-unsupported-attribute", []diag{
			// As hcl's own traversal diagnostics, the range starts at the
			// dot before the attribute name.
			{"policies/typo.hcl:5:30-5:36", "Unsupported attribute", `change has no attribute "fiels"; it has added, bytes, count, evals, files, paths, removed. Did you mean "files"?`},
		}},
		{"condition-iterator-attribute", []diag{
			{"policies/typo.hcl:5:60-5:64", "Unsupported attribute", `f has no attribute "pth"; it has added, bytes, mode, path, removed, status. Did you mean "path"?`},
		}},
		{"condition-unknown-variable", []diag{
			{"policies/typo.hcl:5:17-5:29", "Unknown variable", `there is no variable "chnage". Did you mean "change"?`},
		}},
		{"condition-unknown-function", []diag{
			{"policies/typo.hcl:5:50-5:55", "Call to unknown function", `There is no function "globb" in policy conditions. Did you mean "glob"?`},
		}},
		{"condition-file-and-env", []diag{
			{"policies/outside.hcl:5:17-5:21", "Call to unknown function", "file() is not available in policy conditions: conditions see only agent, run and change"},
			{"policies/outside.hcl:9:17-9:20", "Call to unknown function", "env() is not available in policy conditions: conditions see only agent, run and change"},
		}},
		{"condition-not-bool", []diag{
			{"policies/number.hcl:5:17-5:29", "Condition is not a bool", "must evaluate to true or false; this one gives number"},
		}},
		{"member-without-identity", []diag{
			{"reviewers.hcl:5:3-5:17", "Member cannot be identified", "needs an email (matched against merge commits) or a forge_login"},
		}},
		{"three-mistakes", []diag{
			{"agents/many.hcl:1:7-1:13", "Invalid agent name", "use lowercase letters"},
			{"agents/many.hcl:2:14-2:32", "Unknown provider", `Did you mean "provider.exec.local"?`},
			{"agents/many.hcl:14:15-14:21", "Invalid duration", `"soon" is not a positive duration`},
		}},
	}

	t.Run("base", func(t *testing.T) {
		load(t, txtarFS(t, "testdata/errors/base.txtar"))
	})
	scenarios := map[string]bool{}
	for _, tc := range tests {
		scenarios[tc.scenario] = true
		t.Run(tc.scenario, func(t *testing.T) {
			fsys := txtarFS(t, "testdata/errors/base.txtar", "testdata/errors/"+tc.scenario+".txtar")
			spec, diags := Load(fsys, Options{})
			if spec != nil {
				t.Errorf("Load returned a Spec despite errors")
			}
			if !diags.HasErrors() {
				t.Errorf("no errors")
			}
			var got []diag
			for _, d := range diags {
				got = append(got, diag{rangeString(d.Subject), d.Summary, d.Detail})
			}
			for i := range max(len(got), len(tc.want)) {
				switch {
				case i >= len(got):
					t.Errorf("missing diagnostic %s: %s", tc.want[i].subject, tc.want[i].summary)
				case i >= len(tc.want):
					t.Errorf("unexpected diagnostic %s: %s; %s", got[i].subject, got[i].summary, got[i].detail)
				case got[i].subject != tc.want[i].subject || got[i].summary != tc.want[i].summary || !strings.Contains(got[i].detail, tc.want[i].detail):
					t.Errorf("diagnostic %d:\n got %s: %s; %s\nwant %s: %s; ...%s...", i, got[i].subject, got[i].summary, got[i].detail, tc.want[i].subject, tc.want[i].summary, tc.want[i].detail)
				}
				if i < len(diags) && diags[i].Severity != hcl.DiagError {
					t.Errorf("diagnostic %d is not an error: %s", i, diags[i].Summary)
				}
			}
		})
	}

	// Every scenario written down is also run.
	files, err := filepath.Glob("testdata/errors/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if name := strings.TrimSuffix(filepath.Base(f), ".txtar"); name != "base" && !scenarios[name] {
			t.Errorf("%s is not in the table", f)
		}
	}
}

func TestLoadEmpty(t *testing.T) {
	for _, tc := range []struct {
		name string
		fsys fs.FS
	}{
		{"empty file system", fstest.MapFS{}},
		{"missing directory", os.DirFS(filepath.Join(t.TempDir(), "missing"))},
		{"no spec files", fstest.MapFS{"README.md": {Data: []byte("# hello\n")}, "deploy/app.yaml": {Data: []byte("kind: Pod\n")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, diags := Load(tc.fsys, Options{})
			if len(diags) > 0 {
				t.Fatalf("diagnostics: %v", diags)
			}
			if spec == nil {
				t.Fatal("nil Spec")
			}
			if len(spec.Agents)+len(spec.Policies)+len(spec.Providers)+len(spec.Groups)+len(spec.Files) != 0 {
				t.Errorf("Spec is not empty: %+v", spec)
			}
		})
	}
}

// A warning alone does not withhold the Spec.
func TestLoadWarning(t *testing.T) {
	fsys := txtarFS(t, "testdata/errors/base.txtar")
	edit(t, fsys, "agents/fixer.hcl", "  trigger {\n    on_spec_change = true\n  }\n", "")
	spec, diags := Load(fsys, Options{})
	if spec == nil || len(spec.Agents) != 1 {
		t.Fatalf("Load returned no Spec or no agent for a warning: %v", diags)
	}
	if len(diags) != 1 || diags[0].Severity != hcl.DiagWarning || diags[0].Summary != "Agent never runs" ||
		rangeString(diags[0].Subject) != "agents/fixer.hcl:1:1-1:14" || !strings.Contains(diags[0].Detail, `Add trigger { schedule = "@every 6h" }`) {
		t.Errorf("diagnostics = %v, want one warning Agent never runs at agents/fixer.hcl:1:1-1:14", diags)
	}
}

func TestLoadFileFunctions(t *testing.T) {
	fsys := txtarFS(t, "testdata/errors/base.txtar")
	fsys["prompts/pin.tmpl"] = &fstest.MapFile{Data: []byte(`Pin the images of ${service} in ${upper(env)}.`)}
	fsys["prompts/plain.md"] = &fstest.MapFile{Data: []byte("Tidy up.\n")}
	fsys["agents/templated.hcl"] = &fstest.MapFile{Data: []byte(`agent "templated" {
  provider = provider.openai.default
  model    = "gpt-4o-mini"
  prompt   = templatefile("prompts/pin.tmpl", { service = "payments-api", env = "prod" })

  trigger {
    manual = true
  }

  scope {
    paths = ["deploy/**"]
  }
}
`)}
	fsys["agents/plain.hcl"] = &fstest.MapFile{Data: []byte(`agent "plain" {
  provider = provider.openai.default
  model    = "gpt-4o-mini"
  prompt   = file("./prompts/../prompts/plain.md")

  trigger {
    manual = true
  }

  scope {
    paths = ["deploy/**"]
  }
}
`)}
	spec := load(t, fsys)
	for name, want := range map[string]string{
		"templated": "Pin the images of payments-api in PROD.",
		"plain":     "Tidy up.\n",
	} {
		if got := spec.Agent(name).Prompt; got != want {
			t.Errorf("%s: Prompt = %q, want %q", name, got, want)
		}
	}

	// The digest follows the template, as it follows a file() prompt.
	before := spec.Agent("templated").Digest
	edit(t, fsys, "prompts/pin.tmpl", "Pin the", "Pin all")
	if after := load(t, fsys).Agent("templated").Digest; after == before {
		t.Error("digest did not change with the template")
	}
}

func TestLoadEnv(t *testing.T) {
	fsys := txtarFS(t, "testdata/errors/base.txtar")
	edit(t, fsys, "providers.hcl", `base_url    = "http://localhost:8080/v1"`, `base_url    = env("LLM_URL")`)
	for _, tc := range []struct {
		name   string
		lookup func(string) (string, bool)
		want   string
	}{
		{"set", func(k string) (string, bool) {
			return map[string]string{"LLM_URL": "http://gw:4000"}[k], k == "LLM_URL"
		}, "http://gw:4000"},
		{"unset", func(string) (string, bool) { return "", false }, ""},
		{"no lookup", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, diags := Load(fsys, Options{LookupEnv: tc.lookup})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			if got := spec.Providers[1].BaseURL; got != tc.want {
				t.Errorf("BaseURL = %q, want %q", got, tc.want)
			}
		})
	}
}

// BenchmarkLoad loads 1,000 agents and 200 policies.
func BenchmarkLoad(b *testing.B) {
	fsys := txtarFS(b, "testdata/errors/base.txtar")
	delete(fsys, "agents/fixer.hcl")
	delete(fsys, "policies/prod.hcl")
	for i := range 1000 {
		name := fmt.Sprintf("agent-%04d", i)
		fsys[path.Join("prompts", name+".md")] = &fstest.MapFile{Data: []byte("Fix everything under deploy/" + name + ".\n")}
		fsys[path.Join("agents", name+".hcl")] = &fstest.MapFile{Data: fmt.Appendf(nil, `agent %q {
  description = "Benchmark agent %d"
  provider    = provider.exec.local
  command     = ["sh", "tools/fix.sh"]
  prompt      = file("prompts/%s.md")

  trigger {
    on_spec_change = true
  }
  trigger {
    schedule = "0 7 * * MON-FRI"
    timezone = "Europe/Berlin"
  }

  scope {
    paths = ["deploy/%s/**", "config/%s.env"]
  }

  limits {
    timeout = "2m"
  }

  work_unit {
    kind          = "bench"
    human_minutes = 5
  }
}
`, name, i, name, name, name)}
	}
	for i := range 200 {
		fsys[fmt.Sprintf("policies/p-%03d.hcl", i)] = &fstest.MapFile{Data: fmt.Appendf(nil, `policy "p-%03d" {
  applies_to  = ["agent-%d*"]
  enforcement = "hard"

  require_approval "prod" {
    condition = anytrue([for f in change.files : glob(f.path, "deploy/prod/**")])
    reviewers = ["sre"]
    min       = 1
  }

  deny "large" {
    condition = change.added + change.removed > 400
    message   = "too large"
  }
}
`, i, i%10)}
	}
	b.ReportAllocs()
	for b.Loop() {
		spec, diags := Load(fsys, Options{})
		if diags.HasErrors() || len(spec.Agents) != 1000 || len(spec.Policies) != 200 {
			b.Fatalf("Load: %v", diags)
		}
	}
}

// FuzzLoad lays an arbitrary agent file and policy file over base.txtar:
// Load must not panic, must withhold the Spec exactly when there are
// errors, and must point every diagnostic at a file.
func FuzzLoad(f *testing.F) {
	files, err := filepath.Glob("testdata/errors/*.txtar")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		a, err := txtar.ParseFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range a.Files {
			if strings.HasPrefix(file.Name, "agents/") {
				f.Add(file.Data, []byte(nil))
			}
			if strings.HasPrefix(file.Name, "policies/") {
				f.Add([]byte(nil), file.Data)
			}
		}
	}
	base := txtarFS(f, "testdata/errors/base.txtar")
	f.Fuzz(func(t *testing.T, agent, policy []byte) {
		fsys := cloneFS(base)
		fsys["agents/fuzz.hcl"] = &fstest.MapFile{Data: agent}
		fsys["policies/fuzz.hcl"] = &fstest.MapFile{Data: policy}
		spec, diags := Load(fsys, Options{})
		if (spec == nil) != diags.HasErrors() {
			t.Fatalf("Spec %v with diagnostics %v", spec != nil, diags)
		}
		for _, d := range diags {
			if d.Subject == nil || d.Subject.Filename == "" {
				t.Errorf("diagnostic without a subject: %s; %s", d.Summary, d.Detail)
			}
		}
	})
}

// The limits on a run's work default to the Default* values; each may be
// set on its own, with arithmetic.
func TestLoadWorkLimits(t *testing.T) {
	defaults := Limits{}.WithWorkDefaults()
	for _, tc := range []struct {
		limits string
		want   func(*Limits)
	}{
		{"", func(*Limits) {}},
		{"  limits {\n    max_steps = 5\n  }\n", func(*Limits) {}},
		{"  limits {\n    max_tool_calls_per_step = 8\n    max_tool_calls = 40\n  }\n", func(l *Limits) { l.MaxToolCallsPerStep, l.MaxToolCalls = 8, 40 }},
		{"  limits {\n    max_files_written = 1\n    max_bytes_written = 64 * 1024\n  }\n", func(l *Limits) { l.MaxFilesWritten, l.MaxBytesWritten = 1, 64<<10 }},
		{"  limits {\n    max_bytes_read = 1024 * 1024 * 1024\n    max_transcript_bytes = 1073741824\n  }\n", func(l *Limits) { l.MaxBytesRead, l.MaxTranscriptBytes = 1<<30, 1<<30 }},
	} {
		t.Run(strings.TrimSpace(tc.limits), func(t *testing.T) {
			fsys := txtarFS(t, "testdata/errors/base.txtar")
			edit(t, fsys, "agents/fixer.hcl", "  scope {", tc.limits+"  scope {")
			spec, diags := Load(fsys, Options{})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			want := defaults
			tc.want(&want)
			got := spec.Agent("fixer").Limits
			got.MaxSteps, got.MaxTokens, got.Timeout, got.Retries = 0, 0, 0, 0
			want.MaxSteps, want.MaxTokens, want.Timeout, want.Retries = 0, 0, 0, 0
			if got != want {
				t.Errorf("Limits = %+v, want %+v", got, want)
			}
		})
	}
	if d := (Limits{MaxToolCalls: 7}).WithWorkDefaults(); d.MaxToolCalls != 7 || d.MaxToolCallsPerStep != DefaultMaxToolCallsPerStep || d.MaxTranscriptBytes != DefaultMaxTranscriptBytes {
		t.Errorf("WithWorkDefaults = %+v", d)
	}
}

// env = { ... } gives an exec agent's command literal variables: never
// the reconciler's environment (env() is not there), never the sandbox's
// own names, and only for exec agents.
func TestLoadAgentEnv(t *testing.T) {
	for _, tc := range []struct {
		attr    string
		want    map[string]string
		summary string
		detail  string
	}{
		{"  env = { REGION = \"eu-west-1\", Mode_2 = \"x\" }\n", map[string]string{"REGION": "eu-west-1", "Mode_2": "x"}, "", ""},
		{"  env = { KEY = env(\"OPENAI_API_KEY\") }\n", nil, "Call to unknown function", "env"},
		{"  env = { PATH = \"/tmp\" }\n", nil, "Invalid environment variable", "the sandbox sets itself"},
		{"  env = { RECONCILER_RUN_ID = \"x\" }\n", nil, "Invalid environment variable", "RECONCILER_*"},
		{"  env = { LD_PRELOAD = \"/tmp/x.so\" }\n", nil, "Invalid environment variable", "LD_*"},
		{"  env = { \"A-B\" = \"x\" }\n", nil, "Invalid environment variable", "not a variable name"},
		{"  env = { A = [1] }\n", nil, "Unsuitable value type", "string required"},
	} {
		t.Run(strings.TrimSpace(tc.attr), func(t *testing.T) {
			t.Setenv("OPENAI_API_KEY", "sk-must-never-reach-an-agent-0123456789")
			fsys := txtarFS(t, "testdata/errors/base.txtar")
			edit(t, fsys, "agents/fixer.hcl", "  scope {", tc.attr+"  scope {")
			spec, diags := Load(fsys, Options{LookupEnv: os.LookupEnv})
			if tc.summary == "" {
				if diags.HasErrors() {
					t.Fatal(diags)
				}
				if got := spec.Agent("fixer").Env; !maps.Equal(got, tc.want) {
					t.Errorf("Env = %v, want %v", got, tc.want)
				}
				return
			}
			if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.summary) || !strings.Contains(diags.Error(), tc.detail) {
				t.Errorf("diagnostics %v, want %q mentioning %q", diags, tc.summary, tc.detail)
			}
			if d := diags[0]; d.Subject == nil || d.Subject.Filename != "agents/fixer.hcl" {
				t.Errorf("diagnostic %v is not positioned in agents/fixer.hcl", d)
			}
		})
	}
}

// limits { retries } defaults to DefaultRetries; 0 turns retries off.
func TestLoadNetwork(t *testing.T) {
	for _, tc := range []struct {
		attr string
		want bool
	}{
		{"", false},
		{"  network = false\n", false},
		{"  network = true\n", true},
	} {
		t.Run(strings.TrimSpace(tc.attr), func(t *testing.T) {
			fsys := txtarFS(t, "testdata/errors/base.txtar")
			edit(t, fsys, "agents/fixer.hcl", "  scope {", tc.attr+"  scope {")
			spec, diags := Load(fsys, Options{})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			if got := spec.Agent("fixer").Network; got != tc.want {
				t.Errorf("Network = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLoadRetries(t *testing.T) {
	for _, tc := range []struct {
		limits string
		want   int
	}{
		{"", DefaultRetries},
		{"  limits {\n    max_steps = 5\n  }\n", DefaultRetries},
		{"  limits {\n    retries = 0\n  }\n", 0},
		{"  limits {\n    retries = 10\n  }\n", 10},
	} {
		t.Run(strings.TrimSpace(tc.limits), func(t *testing.T) {
			fsys := txtarFS(t, "testdata/errors/base.txtar")
			edit(t, fsys, "agents/fixer.hcl", "  scope {", tc.limits+"  scope {")
			spec, diags := Load(fsys, Options{})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			if got := spec.Agent("fixer").Limits.Retries; got != tc.want {
				t.Errorf("Retries = %d, want %d", got, tc.want)
			}
		})
	}
}
