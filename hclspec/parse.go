package hclspec

import (
	"fmt"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// MaxNesting is how deeply brackets, braces, parentheses, quotes and
// template sequences may nest in a file or template. hclsyntax parses them
// recursively, and some 60,000 levels (a 100 KB file of "(") exhaust the
// goroutine stack: a fatal error that kills the process, which no recover
// catches. Configuration written by people nests a few levels.
const MaxNesting = 256

// ParseFile parses a file of HCL native syntax as Load does. A file that
// is not UTF-8, or that nests deeper than MaxNesting, is not parsed:
// ParseFile returns a nil file and an error at the first invalid byte or
// the first token past the limit. Otherwise it returns what
// hclsyntax.ParseConfig returns, a file even when there are errors.
func ParseFile(src []byte, name string) (*hcl.File, hcl.Diagnostics) {
	if d := invalidUTF8(src, name); d != nil {
		return nil, hcl.Diagnostics{d}
	}
	if mayNestDeep(src) {
		tokens, _ := hclsyntax.LexConfig(src, name, hcl.InitialPos)
		if d := tooDeep(tokens); d != nil {
			return nil, hcl.Diagnostics{d}
		}
	}
	return hclsyntax.ParseConfig(src, name, hcl.InitialPos)
}

// parseTemplate parses a template as templatefile() does, refusing one
// that nests deeper than MaxNesting as ParseFile does.
func parseTemplate(src []byte, name string) (hclsyntax.Expression, hcl.Diagnostics) {
	if d := invalidUTF8(src, name); d != nil {
		return nil, hcl.Diagnostics{d}
	}
	if mayNestDeep(src) {
		tokens, _ := hclsyntax.LexTemplate(src, name, hcl.InitialPos)
		if d := tooDeep(tokens); d != nil {
			return nil, hcl.Diagnostics{d}
		}
	}
	return hclsyntax.ParseTemplate(src, name, hcl.InitialPos)
}

// mayNestDeep reports whether src has more than MaxNesting of the bytes
// that open a nesting token ("(", "[", "{", "${", "%{", a quote, "<<"):
// only then can it nest deeper, and only then is it worth lexing twice.
func mayNestDeep(src []byte) bool {
	n := 0
	for _, b := range src {
		switch b {
		case '(', '[', '{', '"', '<':
			n++
		}
	}
	return n > MaxNesting
}

// tooDeep returns an error at the first token that opens a level past
// MaxNesting, or nil. A closing token without an opening one does not
// count, so unbalanced closers cannot hide deeper nesting.
func tooDeep(tokens hclsyntax.Tokens) *hcl.Diagnostic {
	depth := 0
	for _, tok := range tokens {
		switch tok.Type {
		case hclsyntax.TokenOParen, hclsyntax.TokenOBrack, hclsyntax.TokenOBrace, hclsyntax.TokenOQuote,
			hclsyntax.TokenOHeredoc, hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl:
			depth++
			if depth > MaxNesting {
				rng := tok.Range
				return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Nesting too deep",
					Detail:  fmt.Sprintf("Brackets, braces, parentheses, quotes and templates nest more than %d levels deep here; close the ones left open before this point, or split the expression up.", MaxNesting),
					Subject: &rng}
			}
		case hclsyntax.TokenCParen, hclsyntax.TokenCBrack, hclsyntax.TokenCBrace, hclsyntax.TokenCQuote,
			hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateSeqEnd:
			depth = max(depth-1, 0)
		}
	}
	return nil
}

// invalidUTF8 returns an error at the first byte of src that is not UTF-8,
// or nil. hclsyntax requires UTF-8 but does not always say so, and after
// an invalid byte it can count a newline as part of a character, so that
// every later diagnostic names the wrong line.
func invalidUTF8(src []byte, name string) *hcl.Diagnostic {
	if utf8.Valid(src) {
		return nil
	}
	pos := hcl.InitialPos
	for len(src) > 0 {
		r, size := utf8.DecodeRune(src)
		if r == utf8.RuneError && size <= 1 {
			end := hcl.Pos{Line: pos.Line, Column: pos.Column + 1, Byte: pos.Byte + 1}
			return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid character encoding",
				Detail:  fmt.Sprintf("All input files must be UTF-8 encoded, and byte 0x%02x here is not. Ensure that UTF-8 encoding is selected in your editor.", src[0]),
				Subject: &hcl.Range{Filename: name, Start: pos, End: end}}
		}
		pos.Byte += size
		pos.Column++
		if r == '\n' {
			pos.Line++
			pos.Column = 1
		}
		src = src[size:]
	}
	return nil
}
