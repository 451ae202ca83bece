package opendkim

import "strings"

// Glob patterns as dkimmilter's [[signing]] from takes them: '*' matches
// any run of characters, everything else itself. The translation of
// MultipleSignatures needs to know, for two patterns, whether one matches
// every address the other does, or whether none matches both. Both
// questions get a sure "yes" or a "don't know": a "don't know" makes the
// import report the lines instead of guessing.

// covers reports that every string q matches is matched by p. It matches
// p against q with q's '*' taken as a letter that only a '*' of p can
// absorb: when that succeeds, any text put in place of q's stars lies
// inside p's stars, so p matches it too.
func covers(p, q string) bool {
	// Iterative wildcard matching with one backtrack point, as for
	// ordinary globs; a literal of p never matches a '*' of q.
	pi, qi := 0, 0
	star, mark := -1, 0
	for qi < len(q) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, qi
			pi++
		case pi < len(p) && p[pi] == q[qi] && q[qi] != '*':
			pi++
			qi++
		case star >= 0:
			pi = star + 1
			mark++
			qi = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// disjoint reports that no string is matched by both p and q: their
// literal beginnings (or ends) differ where both have one.
func disjoint(p, q string) bool {
	if !strings.Contains(p, "*") {
		return !covers(q, p)
	}
	if !strings.Contains(q, "*") {
		return !covers(p, q)
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

// matchGlob reports whether the glob p matches the literal s.
func matchGlob(p, s string) bool {
	if strings.Contains(s, "*") {
		return false
	}
	return covers(p, s)
}
