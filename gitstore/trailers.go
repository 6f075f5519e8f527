package gitstore

import "strings"

// Trailer is one "Key: value" line of a commit message's trailer block.
type Trailer struct{ Key, Value string }

// Trailers parses the trailers of a commit message: the last paragraph, when
// it is not the first one (the subject) and every line of it is either a
// "Key: value" line (Key made of letters, digits and '-') or a continuation
// line starting with a space or tab, which is appended to the previous value
// with a single space. Trailers come back in order, keys as written (git
// compares them case-insensitively; this package does not). Values are
// trimmed. A message without a trailer block gives nil.
//
// Unlike git interpret-trailers, a last paragraph mixing trailers with other
// lines is not a trailer block, and comment lines are not skipped.
func Trailers(message string) []Trailer {
	lines := strings.Split(strings.ReplaceAll(message, "\r\n", "\n"), "\n")
	end := len(lines)
	for end > 0 && strings.TrimSpace(lines[end-1]) == "" {
		end--
	}
	start := end
	for start > 0 && strings.TrimSpace(lines[start-1]) != "" {
		start--
	}
	if start == 0 {
		return nil // one paragraph at most: the subject is never a trailer
	}
	var out []Trailer
	for _, line := range lines[start:end] {
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) == 0 {
				return nil
			}
			last := &out[len(out)-1]
			last.Value = strings.TrimSpace(last.Value + " " + strings.TrimSpace(line))
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok || !isTrailerKey(key) {
			return nil
		}
		out = append(out, Trailer{Key: key, Value: strings.TrimSpace(value)})
	}
	return out
}

// TrailerValue returns the value of the last trailer of message with key
// (case-sensitive), and whether there is one.
func TrailerValue(message, key string) (string, bool) {
	trailers := Trailers(message)
	for i := len(trailers) - 1; i >= 0; i-- {
		if trailers[i].Key == key {
			return trailers[i].Value, true
		}
	}
	return "", false
}

func isTrailerKey(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
