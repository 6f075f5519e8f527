package gitstore

import "strings"

// Trailer is one "Key: value" line of a commit message's trailer block.
type Trailer struct{ Key, Value string }

// Trailers parses the trailers of a commit message as git 2.39's
// "git interpret-trailers --parse" does with no trailer.* configuration and
// the default core.commentChar
// (trailer.c's trailer_info_get and process_input_file):
//
//   - The message ends at its first NUL byte, at the first line starting with
//     "---" and a space, tab, CR or LF (the patch divider), and at a
//     "# ------------------------ >8 ------------------------" scissors line;
//     trailing comment lines ('#'), empty lines and an old "Conflicts:" block
//     are not part of it either.
//   - The trailer block is the last paragraph, after the first one (the
//     subject, whose '#' lines do not end it). It counts when all its lines
//     but comments are trailers and their continuation lines, or when at
//     least 25% of them are and one starts with "Signed-off-by: " or
//     "(cherry picked from commit ". Otherwise the message has no trailers.
//   - A trailer line is a key of ASCII letters, digits and '-', optional
//     spaces or tabs, ':' and the value. A line starting with a space or tab
//     continues the trailer before it; the value's lines are joined with one
//     space. Keys and values are trimmed of spaces, tabs, CR and LF.
//   - Other lines of the block, such as "(cherry picked from commit ...)" and
//     comment lines, are skipped.
//
// Trailers come back in order, keys as written (compare them
// case-insensitively, as git does, or use TrailerValue); a message without a
// trailer block gives nil.
//
// The one difference from git 2.39: a message with a "---" divider and,
// after it, a scissors line makes git 2.39 loop forever; Trailers reads it as
// later versions of git do, up to the divider.
func Trailers(message string) []Trailer {
	if i := strings.IndexByte(message, 0); i >= 0 {
		message = message[:i] // git reads the message as a C string
	}
	end := findTrailerEnd(message, findPatchStart(message))
	buf := message[:end]
	start := findTrailerStart(buf)
	var out []Trailer
	// last is the index in out of the trailer continuation lines extend, or
	// -1 after a line that is not a trailer.
	last := -1
	var value strings.Builder
	flush := func() {
		if last >= 0 {
			out[last].Value = unfold(trimSpace(value.String()))
			value.Reset()
		}
	}
	for i := start; i < len(buf); {
		line := buf[i:nextLine(buf, i)]
		i += len(line)
		if last >= 0 && isSpace(line[0]) {
			value.WriteString(line)
			continue
		}
		flush()
		last = -1
		if line[0] == commentChar {
			continue
		}
		if sep := findSeparator(line); sep >= 1 {
			out = append(out, Trailer{Key: trimSpace(line[:sep])})
			last = len(out) - 1
			value.WriteString(line[sep+1:])
		}
	}
	flush()
	return out
}

// TrailerValue returns the value of the last trailer of message whose key is
// key, compared case-insensitively (ASCII only) as git compares trailer keys,
// and whether there is one. Trailers says which lines are trailers.
func TrailerValue(message, key string) (string, bool) {
	trailers := Trailers(message)
	for i := len(trailers) - 1; i >= 0; i-- {
		if equalFoldASCII(trailers[i].Key, key) {
			return trailers[i].Value, true
		}
	}
	return "", false
}

// TrailerValues returns the values of all trailers of message whose key is
// key, compared case-insensitively (ASCII only), in order; nil if there are
// none.
func TrailerValues(message, key string) []string {
	var values []string
	for _, t := range Trailers(message) {
		if equalFoldASCII(t.Key, key) {
			values = append(values, t.Value)
		}
	}
	return values
}

// commentChar is git's default core.commentChar.
const commentChar = '#'

// gitGeneratedPrefixes start the lines that make a last paragraph with at
// least 25% trailers a trailer block (trailer.c git_generated_prefixes).
var gitGeneratedPrefixes = []string{"Signed-off-by: ", "(cherry picked from commit "}

// scissors is the line before which "git commit --cleanup=scissors" cuts.
const scissors = "# ------------------------ >8 ------------------------\n"

// findPatchStart returns the offset of the first line of s starting with
// "---" and whitespace, or len(s).
func findPatchStart(s string) int {
	for i := 0; i < len(s); i = nextLine(s, i) {
		if strings.HasPrefix(s[i:], "---") && len(s) > i+3 && isSpace(s[i+3]) {
			return i
		}
	}
	return len(s)
}

// findTrailerEnd returns the offset where the part of s[:n] that may hold
// trailers ends: before the scissors line and the trailing run of comment
// lines, empty lines and "Conflicts:" blocks (commit.c ignore_non_trailer,
// including its quirk that a run starting at offset 0 starts at the next
// line).
func findTrailerEnd(s string, n int) int {
	cutoff := n
	if strings.HasPrefix(s, scissors) {
		cutoff = 0
	} else if i := strings.Index(s[:n], "\n"+scissors); i >= 0 {
		cutoff = i + 1
	}
	boc, conflicts := 0, false
	for bol := 0; bol < cutoff; bol = nextLine(s[:n], bol) {
		switch {
		case s[bol] == commentChar || s[bol] == '\n':
			if boc == 0 {
				boc = bol
			}
		case strings.HasPrefix(s[bol:n], "Conflicts:\n"):
			conflicts = true
			if boc == 0 {
				boc = bol
			}
		case conflicts && s[bol] == '\t':
			// a path in the conflicts block
		case boc != 0:
			boc, conflicts = 0, false
		}
	}
	if boc != 0 {
		return boc
	}
	return cutoff
}

// findTrailerStart returns the offset of the trailer block of buf, or
// len(buf) if there is none (trailer.c find_trailer_start).
func findTrailerStart(buf string) int {
	// The first paragraph is the subject and cannot be trailers.
	endOfTitle := 0
	for endOfTitle < len(buf) {
		if buf[endOfTitle] != commentChar && isBlankLine(buf[endOfTitle:]) {
			break
		}
		endOfTitle = nextLine(buf, endOfTitle)
	}
	onlySpaces, recognized := true, false
	trailerLines, nonTrailerLines, continuations := 0, 0, 0
	for l := lastLine(buf, len(buf)); l >= endOfTitle; l = lastLine(buf, l) {
		line := buf[l:nextLine(buf, l)]
		switch {
		case line[0] == commentChar:
			nonTrailerLines += continuations
			continuations = 0
		case isBlankLine(line):
			if onlySpaces {
				continue
			}
			nonTrailerLines += continuations
			if recognized && trailerLines*3 >= nonTrailerLines ||
				trailerLines > 0 && nonTrailerLines == 0 {
				return nextLine(buf, l)
			}
			return len(buf)
		case hasGitGeneratedPrefix(line):
			onlySpaces = false
			trailerLines++
			continuations = 0
			recognized = true
		case findSeparator(line) >= 1:
			onlySpaces = false
			trailerLines++
			continuations = 0
		case isSpace(line[0]):
			onlySpaces = false
			continuations++
		default:
			onlySpaces = false
			nonTrailerLines += 1 + continuations
			continuations = 0
		}
	}
	return len(buf)
}

func hasGitGeneratedPrefix(line string) bool {
	for _, p := range gitGeneratedPrefixes {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// findSeparator returns the offset of the ':' in a line of the form
// "<key><optional spaces or tabs>:..." or ":...", or -1 (trailer.c
// find_separator with the default separators).
func findSeparator(line string) int {
	whitespace := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ':':
			return i
		case !whitespace && (isAlnum(c) || c == '-'):
		case i > 0 && (c == ' ' || c == '\t'):
			whitespace = true
		default:
			return -1
		}
	}
	return -1
}

// nextLine returns the offset after the line of s starting at i.
func nextLine(s string, i int) int {
	if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
		return i + j + 1
	}
	return len(s)
}

// lastLine returns the offset of the start of the last line of s[:n], whose
// final newline belongs to that line, or -1 if n is 0.
func lastLine(s string, n int) int {
	if n == 0 {
		return -1
	}
	if n == 1 {
		return 0
	}
	return strings.LastIndexByte(s[:n-1], '\n') + 1
}

func isBlankLine(s string) bool {
	for i := 0; i < len(s) && s[i] != '\n'; i++ {
		if !isSpace(s[i]) {
			return false
		}
	}
	return true
}

// unfold joins the lines of a trailer value with one space each.
func unfold(v string) string {
	if !strings.Contains(v, "\n") {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); {
		c := v[i]
		i++
		if c != '\n' {
			b.WriteByte(c)
			continue
		}
		for i < len(v) && isSpace(v[i]) {
			i++
		}
		b.WriteByte(' ')
	}
	return trimSpace(b.String())
}

// isSpace reports whether c is whitespace to git (sane_ctype's GIT_SPACE).
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func trimSpace(s string) string {
	i, j := 0, len(s)
	for i < j && isSpace(s[i]) {
		i++
	}
	for j > i && isSpace(s[j-1]) {
		j--
	}
	return s[i:j]
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
