package hclspec

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// The language reference documents every block and attribute of the schema
// with an example, and every example parses.
func TestLanguageDocs(t *testing.T) {
	b, err := os.ReadFile("../docs/language.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	examples := regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(examples) < 8 {
		t.Fatalf("only %d hcl examples in docs/language.md", len(examples))
	}
	var code strings.Builder
	for i, m := range examples {
		f, diags := hclsyntax.ParseConfig([]byte(m[1]), fmt.Sprintf("example-%d.hcl", i+1), hcl.InitialPos)
		if diags.HasErrors() {
			t.Errorf("example %d does not parse: %s\n%s", i+1, diags.Error(), m[1])
			continue
		}
		checkConditions(t, f.Body.(*hclsyntax.Body))
		code.WriteString(m[1])
	}
	schemas := map[string]*hcl.BodySchema{
		"provider": providerSchema, "price": priceSchema, "group": groupSchema, "member": memberSchema,
		"agent": agentSchema, "trigger": triggerSchema, "on_alert": alertSchema, "scope": scopeSchema,
		"limits": limitsSchema, "work_unit": workUnitSchema, "policy": policySchema, "deny": denySchema,
		"require_approval": approvalSchema, "budget": budgetSchema, "freeze": freezeSchema,
		"require_review": reviewSchema,   // review.go
		"escalate":       escalateSchema, // llmops.go
	}
	for block, s := range schemas {
		if !regexp.MustCompile(`(?m)^\s*` + block + `\b[^=\n]*\{`).MatchString(code.String()) {
			t.Errorf("no example of a %s block in docs/language.md", block)
		}
		for _, a := range s.Attributes {
			if !regexp.MustCompile(`(?m)^\s*` + a.Name + `\s*=`).MatchString(code.String()) {
				t.Errorf("attribute %s.%s has no example in docs/language.md", block, a.Name)
			}
		}
		for _, bl := range s.Blocks {
			if _, ok := schemas[bl.Type]; !ok {
				t.Errorf("block %s.%s is not covered by this test's schema list", block, bl.Type)
			}
		}
	}
	for _, f := range Tools {
		if !strings.Contains(doc, "`"+f+"`") {
			t.Errorf("tool %s is not documented", f)
		}
	}
	for name := range conditionVars {
		for attr := range conditionVars[name].AttributeTypes() {
			if !strings.Contains(doc, "`"+attr+"`") {
				t.Errorf("condition attribute %s.%s is not documented", name, attr)
			}
		}
	}
	for name := range stdFunctions() {
		if !strings.Contains(doc, "`"+name+"`") && !strings.Contains(doc, "`"+name+"(") {
			t.Errorf("function %s is not documented", name)
		}
	}
}

// checkConditions checks every condition attribute in an example as the
// loader does.
func checkConditions(t *testing.T, body *hclsyntax.Body) {
	for name, a := range body.Attributes {
		if name == "condition" {
			if diags := CheckCondition(a.Expr); diags.HasErrors() {
				t.Errorf("documented condition is invalid: %s", diags.Error())
			}
		}
	}
	for _, b := range body.Blocks {
		checkConditions(t, b.Body)
	}
}
