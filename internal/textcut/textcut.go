// Package textcut cuts text to a number of bytes without splitting a
// UTF-8 character, for the bounds on what the reconciler records and
// shows (transcripts, review comments, tool results, summaries).
package textcut

import "unicode/utf8"

// Prefix returns the longest prefix of s of at most n bytes that does not
// end inside a UTF-8 character: s itself when it fits, "" when n <= 0.
func Prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
