package ledger

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// parseStatementFast decodes a statement in the shape the ledger writes
// without encoding/json's reflection: one object with the keys _type,
// subject, predicateType and predicate, each once, a predicate whose keys
// are Predicate's own JSON names, each once, and strings without escapes.
// For a statement in that shape its result is what parseStatement returns
// for it; ok is false, and the caller must decode the statement with
// parseStatement, for anything else: an unknown key (which encoding/json
// might match to a field ignoring case), a key given twice (which it would
// merge or replace), an escape, invalid UTF-8 (which it replaces), a null,
// a number it would not take, or a statement parseStatement rejects.
// Values of the predicate's nested fields other than work_unit, usage and
// hold are decoded by encoding/json on their own bytes, as it decodes them
// in place.
func parseStatementFast(b []byte) (p Predicate, ok bool) {
	d := shapeDecoder{b: b}
	var typ, predType string
	var subj subject
	var seen fields
	var predicate bool
	if !d.object(func(key []byte) bool {
		var bit uint
		switch string(key) {
		case "_type":
			bit = 0
			typ, ok = d.str()
		case "subject":
			bit = 1
			subj, ok = d.subject()
		case "predicateType":
			bit = 2
			predType, ok = d.str()
		case "predicate":
			bit = 3
			ok = d.predicate(&p)
			predicate = true
		default:
			return false
		}
		return ok && seen.take(bit)
	}) || !d.end() || !predicate {
		return Predicate{}, false
	}
	return bindStatement(typ, predType, subj, p)
}

// shapeDecoder reads JSON from b[i:] for parseStatementFast; each method
// returns false for anything outside the shape it takes.
type shapeDecoder struct {
	b []byte
	i int
}

func (d *shapeDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// end reports whether only whitespace is left.
func (d *shapeDecoder) end() bool {
	d.space()
	return d.i == len(d.b)
}

func (d *shapeDecoder) byte(c byte) bool {
	d.space()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// object reads an object, calling field with each key, positioned at its
// value, which field must read.
func (d *shapeDecoder) object(field func(key []byte) bool) bool {
	if !d.byte('{') {
		return false
	}
	if d.byte('}') {
		return true
	}
	for {
		key, ok := d.rawStr()
		if !ok || !d.byte(':') || !field(key) {
			return false
		}
		if d.byte('}') {
			return true
		}
		if !d.byte(',') {
			return false
		}
	}
}

// rawStr reads a string without escapes or control characters, in valid
// UTF-8, and returns its bytes (a slice of b).
func (d *shapeDecoder) rawStr() ([]byte, bool) {
	if !d.byte('"') {
		return nil, false
	}
	start := d.i
	ascii := true
	for ; d.i < len(d.b); d.i++ {
		c := d.b[d.i]
		switch {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, false
}

func (d *shapeDecoder) str() (string, bool) {
	s, ok := d.rawStr()
	return string(s), ok
}

// number reads a JSON number and returns its text.
func (d *shapeDecoder) number() ([]byte, bool) {
	d.space()
	start := d.i
	b := d.b
	i := d.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return nil, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == j {
			return nil, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == j {
			return nil, false
		}
	}
	d.i = i
	return b[start:i], true
}

// uint reads a number into a uint64 as encoding/json does (only digits).
func (d *shapeDecoder) uint() (uint64, bool) {
	n, ok := d.number()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(string(n), 10, 64)
	return v, err == nil
}

// int reads a number into an int64 as encoding/json does.
func (d *shapeDecoder) int() (int64, bool) {
	n, ok := d.number()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(string(n), 10, 64)
	return v, err == nil
}

// float reads a number into a float64 as encoding/json does.
func (d *shapeDecoder) float() (float64, bool) {
	n, ok := d.number()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(n), 64)
	return v, err == nil
}

// time reads a string into a time.Time through its UnmarshalJSON, as
// encoding/json does.
func (d *shapeDecoder) time(t *time.Time) bool {
	d.space()
	start := d.i
	if _, ok := d.rawStr(); !ok {
		return false
	}
	return t.UnmarshalJSON(d.b[start:d.i]) == nil
}

// value skips a JSON value other than null and returns its bytes, for
// encoding/json to decode (which checks them): a string, an object or an
// array (to its closing bracket, skipping strings), or anything else up to
// the next delimiter.
func (d *shapeDecoder) value() ([]byte, bool) {
	d.space()
	start, b := d.i, d.b
	i := start
	if i == len(b) {
		return nil, false
	}
	switch b[i] {
	case '"':
		if i = skipString(b, i); i < 0 {
			return nil, false
		}
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				if i = skipString(b, i); i < 0 {
					return nil, false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			i++
			if depth == 0 {
				break
			}
		}
		if depth != 0 {
			return nil, false
		}
	default:
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
	}
	d.i = i
	v := b[start:i]
	return v, len(v) > 0 && string(v) != "null"
}

// skipString returns the offset just past the string starting at b[i]
// (a '"'), or -1 when it does not end.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// nested decodes the next value into v (a pointer to a field) with
// encoding/json.
func (d *shapeDecoder) nested(v any) bool {
	raw, ok := d.value()
	return ok && json.Unmarshal(raw, v) == nil
}

// fields records which keys of an object were read (bit i for the i-th
// known key), to refuse a key given twice.
type fields uint64

// take records key i as read, false when it was already.
func (f *fields) take(i uint) bool {
	if *f&(1<<i) != 0 {
		return false
	}
	*f |= 1 << i
	return true
}

// subject reads a one-element subject list.
func (d *shapeDecoder) subject() (subject, bool) {
	var s subject
	if !d.byte('[') {
		return s, false
	}
	var seen fields
	if !d.object(func(key []byte) bool {
		var bit uint
		ok := false
		switch string(key) {
		case "name":
			bit = 0
			s.Name, ok = d.str()
		case "digest":
			bit = 1
			s.Digest = map[string]string{}
			ok = d.object(func(k []byte) bool {
				if _, dup := s.Digest[string(k)]; dup {
					return false
				}
				v, ok := d.str()
				s.Digest[string(k)] = v
				return ok
			})
		}
		return ok && seen.take(bit)
	}) || !d.byte(']') || seen&(1<<1) == 0 {
		return s, false
	}
	return s, true
}

// predicate reads the predicate object into p.
func (d *shapeDecoder) predicate(p *Predicate) bool {
	var seen fields
	e := &p.Event
	return d.object(func(key []byte) bool {
		ok := false
		var bit uint
		switch string(key) {
		case "seq":
			bit = 0
			p.Seq, ok = d.uint()
		case "prev":
			bit = 1
			p.Prev, ok = d.str()
		case "time":
			bit = 2
			ok = d.time(&p.Time)
		case "event":
			bit = 3
			e.Type, ok = d.str()
		case "summary":
			bit = 4
			e.Summary, ok = d.str()
		case "agent":
			bit = 5
			e.Agent, ok = d.str()
		case "run_id":
			bit = 6
			e.RunID, ok = d.str()
		case "spec_commit":
			bit = 7
			e.SpecCommit, ok = d.str()
		case "spec_digest":
			bit = 8
			e.SpecDigest, ok = d.str()
		case "trigger":
			bit = 9
			e.Trigger, ok = d.str()
		case "model":
			bit = 10
			e.Model, ok = d.str()
		case "usage":
			bit = 11
			e.Usage, ok = d.usage()
		case "cost_usd":
			bit = 12
			e.CostUSD, ok = d.float()
		case "model_usage":
			bit = 13
			ok = d.nested(&e.ModelUsage)
		case "reserved_usd":
			bit = 14
			e.ReservedUSD, ok = d.float()
		case "claimant":
			bit = 15
			e.Claimant, ok = d.str()
		case "lease_until":
			bit = 16
			ok = d.time(&e.LeaseUntil)
		case "attempt":
			bit = 17
			var n int64
			n, ok = d.int()
			e.Attempt = int(n)
			ok = ok && int64(e.Attempt) == n
		case "retry_after":
			bit = 18
			ok = d.time(&e.RetryAfter)
		case "alert":
			bit = 19
			ok = d.nested(&e.Alert)
		case "request":
			bit = 20
			ok = d.nested(&e.Request)
		case "reverts":
			bit = 21
			e.Reverts, ok = d.str()
		case "hold":
			bit = 22
			e.Hold, ok = d.hold()
		case "work_unit":
			bit = 23
			e.WorkUnit, ok = d.workUnit()
		case "sandbox":
			bit = 24
			ok = d.nested(&e.Sandbox)
		case "outcome":
			bit = 25
			e.Outcome, ok = d.str()
		case "change":
			bit = 26
			ok = d.nested(&e.Change)
		case "decision":
			bit = 27
			ok = d.nested(&e.Decision)
		case "proposal":
			bit = 28
			ok = d.nested(&e.Proposal)
		case "reviewer":
			bit = 29
			e.Reviewer, ok = d.str()
		case "approval":
			bit = 30
			ok = d.nested(&e.Approval)
		case "overrides":
			bit = 31
			ok = d.nested(&e.Overrides)
		case "evals":
			bit = 32
			ok = d.nested(&e.Evals)
		case "comments":
			bit = 33
			ok = d.nested(&e.Comments)
		case "transcript_digest":
			bit = 34
			e.TranscriptDigest, ok = d.str()
		case "error":
			bit = 35
			e.Error, ok = d.str()
		case "diagnostics":
			bit = 36
			ok = d.nested(&e.Diagnostics)
		case "keys":
			bit = 37
			ok = d.nested(&e.Keys)
		default:
			return false
		}
		return ok && seen.take(bit)
	})
}

// workUnit, usage and hold read those objects, the common nested ones.
func (d *shapeDecoder) workUnit() (*WorkUnit, bool) {
	w := &WorkUnit{}
	var seen fields
	return w, d.object(func(key []byte) bool {
		var bit uint
		ok := false
		switch string(key) {
		case "kind":
			bit = 0
			w.Kind, ok = d.str()
		case "human_minutes":
			bit = 1
			w.HumanMinutes, ok = d.float()
		}
		return ok && seen.take(bit)
	})
}

func (d *shapeDecoder) usage() (*Usage, bool) {
	u := &Usage{}
	var seen fields
	return u, d.object(func(key []byte) bool {
		var bit uint
		ok := false
		switch string(key) {
		case "input_tokens":
			bit = 0
			u.InputTokens, ok = d.int()
		case "output_tokens":
			bit = 1
			u.OutputTokens, ok = d.int()
		}
		return ok && seen.take(bit)
	})
}

func (d *shapeDecoder) hold() (*Hold, bool) {
	h := &Hold{}
	var seen fields
	return h, d.object(func(key []byte) bool {
		var bit uint
		ok := false
		switch string(key) {
		case "kind":
			bit = 0
			h.Kind, ok = d.str()
		case "policy":
			bit = 1
			h.Policy, ok = d.str()
		case "rule":
			bit = 2
			h.Rule, ok = d.str()
		case "until":
			bit = 3
			ok = d.time(&h.Until)
		case "reason":
			bit = 4
			h.Reason, ok = d.str()
		}
		return ok && seen.take(bit)
	})
}
