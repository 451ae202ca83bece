package opendkim

import (
	"strings"

	"github.com/dkimmilter/dkimmilter/config"
)

// Glob patterns as dkimmilter's [[signing]] from takes them: '*' matches
// any run of characters, everything else itself. The translation of
// MultipleSignatures needs to know, for two patterns, whether one matches
// every address the other does, or whether none matches both. Both
// questions get a sure "yes" or a "don't know": a "don't know" makes the
// import report the lines instead of guessing. Whether p covers q is
// config.GlobMatch(p, q): a '*' of q is a byte there that only a '*' of p
// can absorb, so when it matches, any text put in place of q's stars lies
// inside p's stars, and p matches that too.

// disjoint reports that no string is matched by both p and q: their
// literal beginnings (or ends) differ where both have one.
func disjoint(p, q string) bool {
	if !strings.Contains(p, "*") {
		return !config.GlobMatch(q, p)
	}
	if !strings.Contains(q, "*") {
		return !config.GlobMatch(p, q)
	}
	pre := func(s string) string { return s[:strings.IndexByte(s, '*')] }
	suf := func(s string) string { return s[strings.LastIndexByte(s, '*')+1:] }
	pp, qp := pre(p), pre(q)
	if !strings.HasPrefix(pp, qp) && !strings.HasPrefix(qp, pp) {
		return true
	}
	ps, qs := suf(p), suf(q)
	return !strings.HasSuffix(ps, qs) && !strings.HasSuffix(qs, ps)
}
