package config

import (
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a configuration file.
//
// Key is the dotted path of the setting, as written in the file:
// "listen", "keys.example-rsa.selector", "signing[2].keys",
// "sign.headers[3]". Indexes count from 1, as an admin counts rules and
// list entries: signing[1] is the first [[signing]] table. Line is 0 when
// the problem has no place in the file (a setting that is missing).
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

// Error formats the problem as "FILE:LINE: KEY: MSG", the shape compilers
// use, so that editors can jump to it.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a file, in file order. Parse reports
// them all at once so that an admin fixes a file in one pass rather than
// one restart per mistake.
type Errors []*Error

// Error gives one problem per line.
func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, err := range e {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find the first *Error in an Errors.
func (e Errors) Unwrap() []error {
	errs := make([]error, len(e))
	for i, err := range e {
		errs[i] = err
	}
	return errs
}

// sort puts the problems in file order; the ones without a line go last.
// Validation walks maps, so without this the order would change from run
// to run.
func (e Errors) sort() {
	slices.SortStableFunc(e, func(a, b *Error) int {
		la, lb := a.Line, b.Line
		if la == 0 {
			la = 1 << 30
		}
		if lb == 0 {
			lb = 1 << 30
		}
		return la - lb
	})
}

// Suggest returns ` (did you mean "x"?)` for the candidate closest to
// name, or "" when none is close: within two edits, ignoring case. Two
// edits catch the usual typos (a dropped, doubled or swapped letter)
// without suggesting unrelated short words.
func Suggest(name string, candidates []string) string {
	best, bestDist := "", 3
	lower := strings.ToLower(name)
	for _, c := range candidates {
		if c == name || len(c) > len(name)+2 || len(name) > len(c)+2 {
			continue // identical, or more than two edits apart
		}
		d := editDistance(lower, strings.ToLower(c))
		if d < bestDist || (d == bestDist && c < best) {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b, counting
// bytes: names are ASCII.
func editDistance(a, b string) int {
	var buf [2][64]int
	prev, cur := buf[0][:0], buf[1][:0]
	if len(b) >= 64 {
		prev, cur = make([]int, 0, len(b)+1), make([]int, 0, len(b)+1)
	}
	prev, cur = prev[:len(b)+1], cur[:len(b)+1]
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
