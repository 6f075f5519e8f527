package ledger

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// validStatement is a statement as newStatement writes it, in a fixed
// layout (protojson varies its spacing) so that the cases can edit it.
func validStatement(t testing.TB) string {
	t.Helper()
	commit := strings.Repeat("cd", 20)
	pred, err := json.Marshal(Predicate{Seq: 7, Prev: strings.Repeat("ab", 32), Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		Event: Event{Type: RunStarted, Agent: "a", RunID: "run1", SpecCommit: commit, Trigger: "manual",
			SpecDigest: "d1", Summary: "run.started a run1"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(statement{Type: StatementType, Subject: []subject{{Name: "main", Digest: map[string]string{"gitCommit": commit}}},
		PredicateType: PredicateType, Predicate: pred})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseStatement(b); err != nil {
		t.Fatalf("the valid statement: %v", err)
	}
	return string(b)
}

// parseStatementOnce accepts what parseStatement accepts, with the same
// result, and fails as it fails, on statements that one JSON pass could
// read differently: the predicate key twice (in any case, or escaped), a
// null predicate, wrong types, a bad subject.
func TestParseStatementOnce(t *testing.T) {
	valid := validStatement(t)
	pred := valid[strings.Index(valid, `"predicate":`)+len(`"predicate":`) : len(valid)-1]
	other := strings.Replace(pred, `"seq":7`, `"seq":8`, 1)
	extra := `{"summary":"x"}`
	cases := map[string]string{
		"valid":                  valid,
		"predicate twice":        strings.Replace(valid, `"predicate":`, `"predicate":`+extra+`,"predicate":`, 1),
		"predicate twice, case":  strings.Replace(valid, `"predicate":`, `"Predicate":`+other+`,"predicate":`, 1),
		"predicate last, case":   valid[:len(valid)-1] + `,"PREDICATE":` + extra + `}`,
		"escaped key":            strings.Replace(valid, `"predicate":`, `"\u0070redicate":`+extra+`,"predicate":`, 1),
		"null predicate":         strings.Replace(valid, `"predicate":`+pred, `"predicate":null`, 1),
		"no predicate":           strings.Replace(valid, `,"predicate":`+pred, ``, 1),
		"seq a string":           strings.Replace(valid, `"seq":7`, `"seq":"7"`, 1),
		"bad subject":            strings.Replace(valid, strings.Repeat("cd", 20), "zz", 1),
		"two subjects":           strings.Replace(valid, `"subject":[`, `"subject":[{"name":"x","digest":{"gitCommit":"`+strings.Repeat("ef", 20)+`"}},`, 1),
		"wrong type":             strings.Replace(valid, "Statement/v1", "Statement/v0.1", 1),
		"unknown event":          strings.Replace(valid, `"run.started"`, `"run.begun"`, 1),
		"not JSON":               valid[:len(valid)-2],
		"predicate a number":     strings.Replace(valid, `"predicate":`+pred, `"predicate":5`, 1),
		"summary says predicate": strings.Replace(valid, `"summary":"run.started a run1"`, `"summary":"predicate"`, 1),
	}
	for name, st := range cases {
		t.Run(name, func(t *testing.T) {
			if name != "valid" && st == valid {
				t.Fatal("the case does not change the statement")
			}
			want, wantErr := parseStatement([]byte(st))
			got, err := parseStatementOnce([]byte(st))
			if fmt.Sprint(err) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
				t.Errorf("parseStatementOnce = %+v, %v\nparseStatement     = %+v, %v", got, err, want, wantErr)
			}
			if name == "valid" && err != nil {
				t.Fatal(err)
			}
		})
	}
}

func FuzzParseStatementOnce(f *testing.F) {
	f.Add(validStatement(f))
	f.Fuzz(func(t *testing.T, st string) {
		want, wantErr := parseStatement([]byte(st))
		got, err := parseStatementOnce([]byte(st))
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Errorf("parseStatementOnce(%q) = %+v, %v; parseStatement = %+v, %v", st, got, err, want, wantErr)
		}
	})
}
