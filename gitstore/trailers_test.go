package gitstore

import (
	"reflect"
	"testing"
)

func TestTrailers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		message string
		want    []Trailer
	}{
		{name: "empty", message: "", want: nil},
		{name: "subject only", message: "Add ledger entry\n", want: nil},
		{name: "subject that looks like a trailer", message: "Fixes: nothing\n", want: nil},
		{name: "no trailers", message: "Subject\n\nBody text explaining things.\n", want: nil},
		{
			name:    "trailers after subject",
			message: "Subject\n\nAgent: reviewer\nRun-Id: 0194\n",
			want:    []Trailer{{"Agent", "reviewer"}, {"Run-Id", "0194"}},
		},
		{
			name:    "multi-paragraph with trailing newlines",
			message: "Subject\n\nFirst paragraph.\n\nSecond paragraph.\n\nAgent: fixer\nSigned-off-by: Bot <bot@example.com>\n\n\n",
			want:    []Trailer{{"Agent", "fixer"}, {"Signed-off-by", "Bot <bot@example.com>"}},
		},
		{
			name:    "key-value lines in the body are not trailers",
			message: "Subject\n\nNote: this is body text\nAnd: so is this\n\nRun-Id: 42\n",
			want:    []Trailer{{"Run-Id", "42"}},
		},
		{
			name:    "key-value lines only in the body",
			message: "Subject\n\nNote: body\n\nThe end.\n",
			want:    nil,
		},
		{
			name:    "last paragraph mixes text and trailers",
			message: "Subject\n\nSome text\nAgent: x\n",
			want:    nil,
		},
		{
			name:    "no final newline",
			message: "Subject\n\nAgent: x",
			want:    []Trailer{{"Agent", "x"}},
		},
		{
			name:    "CRLF",
			message: "Subject\r\n\r\nAgent: x\r\nRun-Id: 7\r\n",
			want:    []Trailer{{"Agent", "x"}, {"Run-Id", "7"}},
		},
		{
			name:    "repeated keys keep order, case as written",
			message: "Subject\n\nReviewed-by: a\nreviewed-by: b\nReviewed-by: c\n",
			want:    []Trailer{{"Reviewed-by", "a"}, {"reviewed-by", "b"}, {"Reviewed-by", "c"}},
		},
		{
			name:    "continuation lines and colons in values",
			message: "Subject\n\nDescription: first part\n  second part\nURL: https://example.com:8443/x\nEmpty:\n",
			want:    []Trailer{{"Description", "first part second part"}, {"URL", "https://example.com:8443/x"}, {"Empty", ""}},
		},
		{
			name:    "continuation without a trailer",
			message: "Subject\n\n  indented\nAgent: x\n",
			want:    nil,
		},
		{
			name:    "key with a space is not a trailer",
			message: "Subject\n\nSee also: x\n",
			want:    nil,
		},
		{
			name:    "whitespace-only lines separate paragraphs",
			message: "Subject\n \t\nAgent: x\n",
			want:    []Trailer{{"Agent", "x"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Trailers(tt.message); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Trailers(%q) = %q, want %q", tt.message, got, tt.want)
			}
		})
	}
}

func TestTrailerValue(t *testing.T) {
	t.Parallel()
	msg := "Subject\n\nBody: not a trailer\n\nReviewed-by: a\nRun-Id: 1\nReviewed-by: b\n"
	tests := []struct {
		key    string
		want   string
		wantOK bool
	}{
		{"Reviewed-by", "b", true}, // the last one wins
		{"Run-Id", "1", true},
		{"run-id", "", false}, // case-sensitive
		{"Body", "", false},   // not in the trailer block
		{"Missing", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, ok := TrailerValue(msg, tt.key)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("TrailerValue(%q) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func FuzzTrailers(f *testing.F) {
	f.Add("Subject\n\nAgent: x\n  more\n")
	f.Add("\n\n \n")
	f.Fuzz(func(t *testing.T, msg string) {
		for _, tr := range Trailers(msg) {
			if !isTrailerKey(tr.Key) {
				t.Errorf("invalid key %q", tr.Key)
			}
		}
	})
}
