package ledger

import (
	"bytes"
	"encoding/json"

	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// parseStatementOnce is parseStatement in one pass of the JSON decoder
// (parseStatement decodes the statement with its predicate as raw JSON,
// then the predicate: every byte of it is scanned four times). It accepts
// exactly what parseStatement accepts, with the same result: a statement
// it cannot take in one pass, or one that fails any check, goes through
// parseStatement, whose error is then the one returned. One pass differs
// from two only when the predicate key is given more than once (the
// decoder would merge the objects, where parseStatement keeps the last),
// so a statement that may name it twice (ignoring case, as the decoder
// matches keys, or through a \u escape) is not taken.
//
// Before that, parseStatementFast decodes the statements in the shape the
// ledger writes without encoding/json.
func parseStatementOnce(b []byte) (Predicate, error) {
	if p, ok := parseStatementFast(b); ok {
		return p, nil
	}
	if countFold(b, `"predicate"`) != 1 || bytes.Contains(b, []byte(`\u`)) {
		return parseStatement(b)
	}
	var st struct {
		Type          string     `json:"_type"`
		Subject       []subject  `json:"subject"`
		PredicateType string     `json:"predicateType"`
		Predicate     *Predicate `json:"predicate"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Predicate == nil || len(st.Subject) != 1 {
		return parseStatement(b)
	}
	if p, ok := bindStatement(st.Type, st.PredicateType, st.Subject[0], *st.Predicate); ok {
		return p, nil
	}
	return parseStatement(b)
}

// bindStatement checks a decoded statement's envelope (its types, the
// commit it is about, in-toto's Validate of the statement) and returns the
// predicate p with its subject filled in, and false when any of it fails
// or the event is not one of its type.
func bindStatement(typ, predType string, subj subject, p Predicate) (Predicate, bool) {
	commit := subj.Digest["gitCommit"]
	if typ != StatementType || predType != PredicateType || !isHexCommit(commit) {
		return Predicate{}, false
	}
	bound := &intoto.Statement{
		Type:          typ,
		Subject:       []*intoto.ResourceDescriptor{{Name: subj.Name, Digest: subj.Digest}},
		PredicateType: predType,
		Predicate:     &structpb.Struct{},
	}
	if bound.Validate() != nil {
		return Predicate{}, false
	}
	p.Event.Subject = commit
	p.Event.SubjectName = subj.Name
	if _, err := p.Event.Typed(); err != nil {
		return Predicate{}, false
	}
	return p, true
}

// countFold counts the occurrences of the ASCII string s in b, ignoring
// ASCII case.
func countFold(b []byte, s string) int {
	n := 0
	for i := 0; i+len(s) <= len(b); {
		j := bytes.IndexByte(b[i:], s[0])
		if j < 0 || i+j+len(s) > len(b) {
			break
		}
		i += j
		if bytes.EqualFold(b[i:i+len(s)], []byte(s)) {
			n++
			i += len(s)
			continue
		}
		i++
	}
	return n
}
