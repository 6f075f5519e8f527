package textcut

import (
	"testing"
	"unicode/utf8"
)

func TestPrefix(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 3, "abc"},
		{"abc", 2, "ab"},
		{"abc", 0, ""},
		{"abc", -1, ""},
		{"", -1, ""},
		{"aé", 2, "a"},          // é is 2 bytes: not split
		{"a€b", 3, "a"},         // € is 3 bytes
		{"a€b", 4, "a€"},        // after it
		{"€€", 5, "€"},          // inside the second
		{"\xff\xfe", 1, "\xff"}, // invalid bytes are their own characters
	} {
		got := Prefix(tc.s, tc.n)
		if got != tc.want {
			t.Errorf("Prefix(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
		if utf8.ValidString(tc.s) && !utf8.ValidString(got) {
			t.Errorf("Prefix(%q, %d) = %q splits a character", tc.s, tc.n, got)
		}
	}
}
