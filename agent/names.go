package agent

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/mtibben/confusables"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
)

// ChangeError lists what makes an agent's change unsafe to propose: file
// names that hide what they are, and symbolic links that lead somewhere
// an agent's change may not point. The run fails: no rule can allow it.
type ChangeError struct {
	Agent    string
	Problems []Problem
}

// Problem is one unsafe path of a change and why.
type Problem struct {
	Path   string
	Reason string
}

func (e *ChangeError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "agent %q made a change that cannot be proposed (rename the files, or remove the links):", e.Agent)
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, " %+q %s", p.Path, p.Reason)
	}
	return b.String()
}

// maxLinkTarget bounds a symbolic link's target, as PATH_MAX does.
const maxLinkTarget = 4095

// extraGuards are paths, besides the spec's protected ones, that steer git
// itself: an agent's change may neither be one nor look like one.
var extraGuards = []struct{ pattern, reason string }{
	{"**/.gitattributes", "is a .gitattributes file, which git reads in every directory as the protected root one"},
	{"**/.git", "names a .git directory"},
	{"**/.git/**", "is inside a .git directory"},
}

// CheckChange returns a *ChangeError when the agent's change adds or
// modifies a path, or a symbolic link, that is unsafe to propose, and nil
// otherwise. Deletions are not checked: removing a name never disguises
// anything. Every problem of every path is listed.
//
// A name is refused when one of its components
//   - is not valid UTF-8, or is empty, "." or "..";
//   - contains a control character (C0, DEL, C1), a bidirectional control
//     (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C), an invisible
//     format character (zero-width space, joiners, U+FEFF, soft hyphen, tag
//     characters, any other of category Cf), another default-ignorable code
//     point (variation selectors, Hangul fillers, U+034F) or a space
//     other than U+0020;
//   - is not in Unicode normalization form C;
//   - begins with whitespace, or ends in whitespace or a dot (Windows drops
//     trailing dots and spaces, so "agents." is "agents" there).
//
// A path that is not itself protected (spec.IsProtected) but equals one
// under Unicode case folding or the confusables skeleton of UTS #39 (with
// NFKC first: "Agents/x.hcl", "аgents/x.hcl" with a Cyrillic а,
// ".GITMODULES", "poIicies/x.hcl" with a capital I, "agents∕x.hcl" with a
// division slash) is refused: it looks like a protected path without being
// guarded as one. A path that is protected is left to policy, which denies
// it unless a rule allows control changes. Nested .gitattributes files
// (which git reads like the root one) and .git directories, or their look-
// alikes, are refused unless the spec protects them. Two paths of the change
// that are one on a case-insensitive file system are refused too.
//
// A symbolic link (Mode filemode.Symlink; Content is its target) must
// resolve, joined with the link's directory, inside the workspace and
// inside the agent's own scope (an agent may point only at what it could
// write itself), to neither the repository root, a .git directory, a
// protected path or a look-alike of one, a directory holding protected
// paths, a directory holding the link (a cycle), nor through another
// symbolic link of the change (a chain). Its target must be relative,
// without a backslash or a drive letter, with ".." only as its leading
// names (so that resolving it on disk, where a directory may be a link,
// goes where path.Clean says), and its names obey the rules above.
// Symbolic links already on the spec commit are not seen here: they were
// reviewed by people when they landed.
//
// Any mode other than a regular file, an executable or a symbolic link is
// refused. spec may be nil (only the fixed control and forge paths are then
// protected); a nil agent has no scope, so every link is refused.
func CheckChange(spec *hclspec.Spec, a *hclspec.Agent, changes []gitstore.FileChange) error {
	c := newChecker(spec, a, changes)
	var problems []Problem
	seen := make(map[string]string) // case-folded path -> the first path of the change with it
	for _, ch := range changes {
		if ch.Status == gitstore.StatusDeleted {
			continue
		}
		var reasons []string
		reasons = append(reasons, pathProblems(ch.Path)...)
		reasons = append(reasons, c.disguise(ch.Path)...)
		k := foldKey(ch.Path)
		if other, ok := seen[k]; ok {
			reasons = append(reasons, fmt.Sprintf("is the same path as %+q on a case-insensitive file system", other))
		} else {
			seen[k] = ch.Path
		}
		switch ch.Mode {
		case filemode.Regular, filemode.Executable:
		case filemode.Symlink:
			reasons = append(reasons, c.symlink(ch)...)
		default:
			reasons = append(reasons, fmt.Sprintf("has mode %s, not a regular file, an executable or a symbolic link", ch.Mode))
		}
		for _, r := range reasons {
			problems = append(problems, Problem{Path: ch.Path, Reason: r})
		}
	}
	if len(problems) == 0 {
		return nil
	}
	name := ""
	if a != nil {
		name = a.Name
	}
	return &ChangeError{Agent: name, Problems: problems}
}

// checker holds what CheckChange compares paths with.
type checker struct {
	spec  *hclspec.Spec
	scope []string
	// guards are the protected globs (and extraGuards) with their keys.
	guards []guard
	// exact maps each key of a spec-protected file to the file.
	exact map[string]string
	// links are the symbolic links the change adds or modifies.
	links map[string]bool
}

type guard struct {
	pattern        string
	reason         string // for extraGuards: why the exact path is refused
	visual, folded string // the pattern's keys (visualKey, caseKey)
}

func newChecker(spec *hclspec.Spec, a *hclspec.Agent, changes []gitstore.FileChange) *checker {
	c := &checker{spec: spec, exact: make(map[string]string), links: make(map[string]bool)}
	if a != nil {
		c.scope = a.Scope
	}
	for _, p := range slices.Concat(hclspec.ControlPaths, hclspec.ForgePaths) {
		c.guards = append(c.guards, guard{pattern: p, visual: visualKey(p), folded: caseKey(p)})
	}
	for _, g := range extraGuards {
		c.guards = append(c.guards, guard{pattern: g.pattern, reason: g.reason, visual: visualKey(g.pattern), folded: caseKey(g.pattern)})
	}
	if spec != nil {
		for _, p := range spec.Protected {
			c.exact[visualKey(p)] = p
			c.exact[caseKey(p)] = p
		}
	}
	for _, ch := range changes {
		if ch.Status != gitstore.StatusDeleted && ch.Mode == filemode.Symlink {
			c.links[ch.Path] = true
		}
	}
	return c
}

// protected reports whether p is guarded by policy.
func (c *checker) protected(p string) bool {
	if c.spec != nil {
		return c.spec.IsProtected(p)
	}
	return hclspec.IsControlPath(p) || hclspec.MatchAny(hclspec.ForgePaths, p)
}

// disguise returns why p, not itself protected, is refused for being, or
// looking like, a protected path.
func (c *checker) disguise(p string) []string {
	if c.protected(p) {
		return nil
	}
	for _, g := range c.guards {
		if g.reason != "" && hclspec.MatchAny([]string{g.pattern}, p) {
			return []string{g.reason}
		}
	}
	v, k := visualKey(p), caseKey(p)
	for _, g := range c.guards {
		if hclspec.MatchAny([]string{g.visual}, v) || hclspec.MatchAny([]string{g.folded}, k) {
			return []string{fmt.Sprintf("looks like the protected path %+q (by case or look-alike characters) without being it", g.pattern)}
		}
	}
	for _, key := range []string{v, k} {
		if q, ok := c.exact[key]; ok {
			return []string{fmt.Sprintf("looks like the protected path %+q (by case or look-alike characters) without being it", q)}
		}
	}
	return nil
}

// holdsProtected reports whether directory d holds a protected path.
func (c *checker) holdsProtected(d string) bool {
	var literal []string
	for _, g := range c.guards {
		if g.reason == "" {
			literal = append(literal, literalPrefix(g.pattern))
		}
	}
	if c.spec != nil {
		literal = append(literal, c.spec.Protected...)
	}
	for _, l := range literal {
		if l != "" && strings.HasPrefix(l, d+"/") {
			return true
		}
	}
	return false
}

// literalPrefix is the names of glob pattern before its first one with a
// metacharacter.
func literalPrefix(pattern string) string {
	var out []string
	for part := range strings.SplitSeq(pattern, "/") {
		if strings.ContainsAny(part, `*?[{\`) {
			break
		}
		out = append(out, part)
	}
	return strings.Join(out, "/")
}

// symlink returns why the link ch is refused.
func (c *checker) symlink(ch gitstore.FileChange) []string {
	target := string(ch.Content)
	switch {
	case target == "":
		return []string{"is a symbolic link with an empty target"}
	case len(target) > maxLinkTarget:
		return []string{fmt.Sprintf("is a symbolic link with a target longer than %d bytes", maxLinkTarget)}
	case !utf8.ValidString(target):
		return []string{fmt.Sprintf("is a symbolic link to %+q, which is not valid UTF-8", target)}
	case strings.HasPrefix(target, "/") || isDriveLetter(target):
		return []string{fmt.Sprintf("is a symbolic link to the absolute path %+q: links must stay inside the workspace", target)}
	case strings.Contains(target, `\`):
		return []string{fmt.Sprintf("is a symbolic link to %+q, which contains a backslash (a separator on Windows)", target)}
	}
	var out []string
	leading := true
	for part := range strings.SplitSeq(target, "/") {
		if leading && part == ".." {
			continue
		}
		leading = false
		if part == "" || part == "." || part == ".." {
			return append(out, fmt.Sprintf("is a symbolic link to %+q, which has an empty, \".\" or \"..\" name after its first name (write it as the shortest relative path)", target))
		}
		for _, r := range nameProblems(part) {
			out = append(out, fmt.Sprintf("is a symbolic link to %+q, whose name %+q %s", target, part, r))
		}
	}
	if len(out) > 0 {
		return out
	}
	to := path.Join(path.Dir(ch.Path), target)
	switch {
	case to == ".." || strings.HasPrefix(to, "../"):
		return []string{fmt.Sprintf("is a symbolic link to %+q, which leaves the repository", target)}
	case to == ".":
		return []string{fmt.Sprintf("is a symbolic link to %+q, the repository's root", target)}
	case hasDotGit(to):
		return []string{fmt.Sprintf("is a symbolic link to %+q, into a .git directory", target)}
	case to == ch.Path:
		return []string{fmt.Sprintf("is a symbolic link to %+q, itself", target)}
	case strings.HasPrefix(ch.Path, to+"/"):
		return []string{fmt.Sprintf("is a symbolic link to %+q, which resolves to %+q, a directory holding the link (a cycle)", target, to)}
	case c.protected(to):
		return []string{fmt.Sprintf("is a symbolic link to %+q, which resolves to the protected path %+q", target, to)}
	}
	if d := c.disguise(to); len(d) > 0 {
		return []string{fmt.Sprintf("is a symbolic link to %+q, which resolves to %+q, which %s", target, to, d[0])}
	}
	if c.holdsProtected(to) {
		return []string{fmt.Sprintf("is a symbolic link to %+q, which resolves to %+q, a directory holding protected paths", target, to)}
	}
	for p := range c.links {
		if to == p || strings.HasPrefix(to, p+"/") {
			return []string{fmt.Sprintf("is a symbolic link to %+q, which resolves through %+q, another symbolic link of the change (links may not chain)", target, p)}
		}
	}
	if !hclspec.MatchAny(c.scope, to) {
		return []string{fmt.Sprintf("is a symbolic link to %+q, which resolves to %+q, outside the agent's scope", target, to)}
	}
	return nil
}

// isDriveLetter reports whether s starts like a Windows absolute path, "C:".
func isDriveLetter(s string) bool {
	return len(s) >= 2 && s[1] == ':' && ('a' <= s[0]|0x20 && s[0]|0x20 <= 'z')
}

// hasDotGit reports whether a name of p is a spelling of ".git" some file
// system resolves to the metadata directory: in any case, with trailing
// dots or spaces, an NTFS stream suffix, or the short name git~1.
func hasDotGit(p string) bool {
	for part := range strings.SplitSeq(p, "/") {
		part, _, _ = strings.Cut(part, ":")
		part = strings.TrimRight(part, " .")
		if strings.EqualFold(part, ".git") || strings.EqualFold(part, "git~1") {
			return true
		}
	}
	return false
}

// pathProblems returns why the names of repository path p are unsafe.
func pathProblems(p string) []string {
	if !utf8.ValidString(p) {
		return []string{"is not valid UTF-8"}
	}
	if p == "" || strings.HasPrefix(p, "/") {
		return []string{"is empty or absolute"}
	}
	var out []string
	for part := range strings.SplitSeq(p, "/") {
		if part == "" || part == "." || part == ".." {
			out = append(out, "has an empty, \".\" or \"..\" name")
			continue
		}
		for _, r := range nameProblems(part) {
			out = append(out, fmt.Sprintf("has a name %+q that %s", part, r))
		}
	}
	return out
}

// nameProblems returns why one valid UTF-8 path component is unsafe, each
// kind of problem once.
func nameProblems(name string) []string {
	var out []string
	var control, bidi, invisible, space rune = -1, -1, -1, -1
	for _, r := range name {
		switch {
		case unicode.IsControl(r):
			if control < 0 {
				control = r
			}
		case isBidiControl(r):
			if bidi < 0 {
				bidi = r
			}
		case isInvisible(r):
			if invisible < 0 {
				invisible = r
			}
		case r != ' ' && (unicode.IsSpace(r) || unicode.Is(unicode.Zs, r)):
			if space < 0 {
				space = r
			}
		}
	}
	if control >= 0 {
		out = append(out, fmt.Sprintf("contains the control character %U", control))
	}
	if bidi >= 0 {
		out = append(out, fmt.Sprintf("contains the bidirectional control %U, which reorders how the name displays", bidi))
	}
	if invisible >= 0 {
		out = append(out, fmt.Sprintf("contains the invisible character %U", invisible))
	}
	if space >= 0 {
		out = append(out, fmt.Sprintf("contains the space %U (only U+0020 is allowed)", space))
	}
	if !norm.NFC.IsNormalString(name) {
		out = append(out, "is not in Unicode normalization form C (NFC)")
	}
	first, _ := utf8.DecodeRuneInString(name)
	last, _ := utf8.DecodeLastRuneInString(name)
	if unicode.IsSpace(first) {
		out = append(out, "begins with whitespace")
	}
	if unicode.IsSpace(last) || last == '.' {
		out = append(out, "ends in a space or a dot, which Windows drops")
	}
	return out
}

// isBidiControl reports whether r is one of the Unicode bidirectional
// formatting characters: embeddings and overrides (U+202A–U+202E),
// isolates (U+2066–U+2069), the marks LRM, RLM and ALM.
func isBidiControl(r rune) bool {
	return unicode.Is(unicode.Bidi_Control, r)
}

// isInvisible reports whether r is a default-ignorable code point, drawn
// as nothing: format characters (category Cf: zero-width space and
// joiners, U+FEFF, soft hyphen, tag characters), variation selectors and
// the others Unicode lists (U+034F, Hangul fillers).
func isInvisible(r rune) bool {
	return unicode.In(r, unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point)
}

// visualKey maps s to what it looks like: NFKC, the UTS #39 confusables
// skeleton, then case folding. "poIicies" (capital I) and "аgents"
// (Cyrillic а) both map to their ASCII look-alikes.
func visualKey(s string) string {
	return cases.Fold().String(confusables.Skeleton(norm.NFKC.String(s)))
}

// caseKey maps s to what it is on a case-insensitive file system, then to
// its skeleton: ".GITMODULES" maps as ".gitmodules" does (the skeleton of
// a capital I is an l, of a small i an i, so visualKey alone misses it).
func caseKey(s string) string {
	return cases.Fold().String(confusables.Skeleton(cases.Fold().String(norm.NFKC.String(s))))
}

// foldKey maps a path to what it is on a case-insensitive file system.
func foldKey(s string) string {
	return cases.Fold().String(norm.NFC.String(s))
}

// CleanMessage returns s fit for a commit message shown in a terminal:
// terminal escape sequences removed whole (ECMA-48: CSI, OSC, DCS, SOS, PM
// and APC strings up to their terminator, other escapes up to their final
// byte, in both their 7-bit and C1 forms), then every control character
// but newline and tab (so "\r\n" becomes "\n"), every bidirectional
// control and other invisible format character (joiners U+200C and U+200D
// and variation selectors stay, as Persian and Indic words and emoji need
// them), and invalid UTF-8 dropped; line and paragraph separators become
// newlines.
// The result is in NFC. CleanMessage is idempotent: cleaning its result
// changes nothing.
//
// An escape sequence never terminated swallows the rest of s, as a
// terminal would.
func CleanMessage(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	st := ground
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		if r == utf8.RuneError && n == 1 {
			continue // invalid UTF-8; a lone 8-bit C1 byte is no control in UTF-8 text
		}
		// Transitions from any state, as in DEC's parser.
		switch r {
		case 0x1b: // ESC; in a control string, ESC \ (ST) ends it
			st = escape
			continue
		case 0x18, 0x1a, 0x9c: // CAN and SUB abort a sequence, ST ends a string
			st = ground
			continue
		case 0x9b:
			st = csi
			continue
		case 0x90, 0x98, 0x9d, 0x9e, 0x9f: // DCS, SOS, OSC, PM, APC
			st = controlString
			continue
		}
		switch st {
		case ground:
			keep(&b, r)
		case controlString:
			if r == 0x07 { // BEL ends an OSC string (xterm)
				st = ground
			}
		default: // escape or csi
			switch {
			case r < 0x20 || r == 0x7f: // executed or ignored within the sequence
			case st == escape && r == '[':
				st = csi
			case st == escape && (r == ']' || r == 'P' || r == 'X' || r == '^' || r == '_'):
				st = controlString
			case st == escape && 0x20 <= r && r <= 0x2f: // intermediate bytes
			case st == csi && 0x20 <= r && r <= 0x3f: // parameter and intermediate bytes
			case 0x30 <= r && r <= 0x7e: // final byte
				st = ground
			default: // no part of a sequence: it ends it, and is text
				st = ground
				keep(&b, r)
			}
		}
	}
	return norm.NFC.String(b.String())
}

// States of CleanMessage's escape sequence parser.
const (
	ground = iota
	escape
	csi
	controlString
)

// keep writes r to b unless it is a control or invisible character.
func keep(b *strings.Builder, r rune) {
	switch {
	case r == '\n' || r == '\t':
	case r == '\u2028' || r == '\u2029':
		r = '\n'
	case r == '\u200c' || r == '\u200d':
	case unicode.IsControl(r), isBidiControl(r), isInvisible(r) && !unicode.Is(unicode.Variation_Selector, r):
		return
	}
	b.WriteRune(r)
}

// CleanSubject returns s cleaned as CleanMessage does, on one line: runs
// of whitespace, newlines included, become one space, and leading and
// trailing whitespace goes. It is idempotent.
func CleanSubject(s string) string {
	return norm.NFC.String(strings.Join(strings.Fields(CleanMessage(s)), " "))
}
