package ledger

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// parseStatementFast takes the statement of every documented event as the
// ledger writes it (all but those with an escaped string, which it leaves
// to encoding/json), with parseStatement's result.
func TestParseStatementFastExamples(t *testing.T) {
	taken := 0
	for _, p := range schemaExamples(t) {
		t.Run(p.Type, func(t *testing.T) {
			b, err := newStatement(p)
			if err != nil {
				t.Fatal(err)
			}
			want, err := parseStatement(b)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := parseStatementFast(b)
			if !ok {
				if !bytes.Contains(b, []byte(`\`)) {
					t.Fatalf("parseStatementFast declines a statement without escapes: %s", b)
				}
				return
			}
			taken++
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parseStatementFast = %+v\nparseStatement     = %+v", got, want)
			}
		})
	}
	if taken < 10 {
		t.Errorf("parseStatementFast took %d of the examples", taken)
	}
}

// Whatever the statement, parseStatementFast either declines it or
// returns what parseStatement returns: a key in another case or twice
// (encoding/json matches keys ignoring case, and merges or replaces a
// repeated one), escapes, invalid UTF-8, nulls, numbers it would not
// take, values of the wrong type, trailing bytes.
func TestParseStatementFast(t *testing.T) {
	valid := validStatement(t)
	withWU := strings.Replace(valid, `"seq":7`, `"seq":7,"work_unit":{"kind":"k","human_minutes":2.5},"usage":{"input_tokens":3,"output_tokens":4},"decision":{"a":[1,"]}"]}`, 1)
	cases := map[string]struct {
		st   string
		take bool // parseStatementFast must take it
	}{
		"valid":                 {valid, true},
		"nested":                {withWU, true},
		"spaces":                {" " + strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(valid, `":`, "\" :\n\t"), `,"`, "\r, \""), `}`, " }") + "\n", true},
		"seq twice":             {strings.Replace(valid, `"seq":7`, `"seq":7,"seq":8`, 1), false},
		"seq in capitals":       {strings.Replace(valid, `"seq":7`, `"SEQ":8,"seq":7`, 1), false},
		"event in another case": {strings.Replace(valid, `"event":`, `"Event":`, 1), false},
		"escaped key":           {strings.Replace(valid, `"seq":7`, `"s\u0065q":7`, 1), false},
		"escaped value":         {strings.Replace(valid, `"agent":"a"`, `"agent":"\u0061"`, 1), false},
		"invalid UTF-8":         {strings.Replace(valid, `"agent":"a"`, "\"agent\":\"a\xff\"", 1), false},
		"null agent":            {strings.Replace(valid, `"agent":"a"`, `"agent":null`, 1), false},
		"null predicate":        {strings.Replace(valid, valid[strings.Index(valid, `"predicate":`):len(valid)-1], `"predicate":null`, 1), false},
		"seq a float":           {strings.Replace(valid, `"seq":7`, `"seq":7.0`, 1), false},
		"seq negative":          {strings.Replace(valid, `"seq":7`, `"seq":-7`, 1), false},
		"seq exponent":          {strings.Replace(valid, `"seq":7`, `"seq":7e0`, 1), false},
		"seq leading zero":      {strings.Replace(valid, `"seq":7`, `"seq":07`, 1), false},
		"seq too large":         {strings.Replace(valid, `"seq":7`, `"seq":18446744073709551616`, 1), false},
		"seq a string":          {strings.Replace(valid, `"seq":7`, `"seq":"7"`, 1), false},
		"work unit twice":       {strings.Replace(withWU, `"kind":"k"`, `"kind":"k","kind":"l"`, 1), false},
		"work unit unknown key": {strings.Replace(withWU, `"kind":"k"`, `"Kind":"k"`, 1), false},
		"decision not JSON":     {strings.Replace(withWU, `"decision":{"a":[1,"]}"]}`, `"decision":{"a":[1,"]}"]]`, 1), false},
		"unknown key":           {strings.Replace(valid, `"seq":7`, `"seq":7,"extra":1`, 1), false},
		"unknown top key":       {valid[:len(valid)-1] + `,"x":1}`, false},
		"trailing bytes":        {valid + "x", false},
		"two values":            {valid + valid, false},
		"two subjects":          {strings.Replace(valid, `"subject":[`, `"subject":[{"name":"x","digest":{"gitCommit":"`+strings.Repeat("ef", 20)+`"}},`, 1), false},
		"digest key twice":      {strings.Replace(valid, `"digest":{`, `"digest":{"gitCommit":"`+strings.Repeat("ef", 20)+`",`, 1), false},
		"bad time":              {strings.Replace(valid, `"time":"2025-01-01T00:00:00Z"`, `"time":"2025-01-01 00:00:00"`, 1), false},
		"wrong type":            {strings.Replace(valid, "Statement/v1", "Statement/v0.1", 1), false},
		"unknown event":         {strings.Replace(valid, `"run.started"`, `"run.begun"`, 1), false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if name != "valid" && c.st == valid {
				t.Fatal("the case does not change the statement")
			}
			want, wantErr := parseStatement([]byte(c.st))
			got, ok := parseStatementFast([]byte(c.st))
			if ok != c.take {
				t.Fatalf("parseStatementFast took it: %v, want %v (parseStatement: %v)", ok, c.take, wantErr)
			}
			if ok && (wantErr != nil || !reflect.DeepEqual(got, want)) {
				t.Errorf("parseStatementFast = %+v\nparseStatement     = %+v, %v", got, want, wantErr)
			}
		})
	}
}

func FuzzParseStatementFast(f *testing.F) {
	f.Add(validStatement(f))
	for _, p := range schemaExamples(f) {
		if b, err := newStatement(p); err == nil {
			f.Add(string(b))
		}
	}
	f.Fuzz(func(t *testing.T, st string) {
		got, ok := parseStatementFast([]byte(st))
		if !ok {
			return
		}
		want, err := parseStatement([]byte(st))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseStatementFast(%q) = %+v; parseStatement = %+v, %v", st, got, want, err)
		}
		if g2, err2 := parseStatementOnce([]byte(st)); fmt.Sprint(err2) != "<nil>" || !reflect.DeepEqual(g2, want) {
			t.Errorf("parseStatementOnce differs: %+v, %v", g2, err2)
		}
	})
}
