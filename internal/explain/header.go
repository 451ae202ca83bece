// Hints for a header signature failure ("signature did not verify" with a
// good body hash). The signed header block cannot be rebuilt in general,
// but the fields relays commonly alter can be tried: a Subject tag such as
// "[list] " (Mailman's subject_prefix, spam filters' "[SPAM]"), and a From
// rewritten by a list for DMARC (the original kept in X-Original-From or
// Reply-To). Each guess is checked by verifying the whole signature again,
// so a hint that says "verifies once" is a fact, not a guess.

package explain

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// maxSubjectTags bounds the bracketed tags tried one by one.
const maxSubjectTags = 4

func headerHints(ctx context.Context, v *verifier.Verifier, h dkim.Header, body []byte, i int, s *dkim.Signature) []string {
	var hints []string
	try := func(idx int, value string) bool {
		h2 := append(dkim.Header(nil), h...)
		h2[idx] = dkim.Field{Name: h[idx].Name, Raw: h[idx].Raw[:len(h[idx].Raw)-len(h[idx].Value())] + value}
		return passes(ctx, v, h2, body, i)
	}
	explained := false

	if idx := signedField(h, s, "Subject"); idx >= 0 {
		for _, c := range subjectTags(h[idx].Value()) {
			if try(idx, c.value) {
				hints = append(hints, fmt.Sprintf("the signature verifies once %q is removed from Subject: a mailing list or a filter tagged the Subject after signing", c.tag))
				explained = true
				break
			}
		}
	}

	if idx := signedField(h, s, "From"); idx >= 0 {
		for _, name := range []string{"X-Original-From", "Reply-To"} {
			for _, f := range h {
				if strings.EqualFold(f.Name, name) && try(idx, f.Value()) {
					hints = append(hints, fmt.Sprintf("the signature verifies with the From that %s holds (%s): a mailing list rewrote From after signing (DMARC mitigation); the list's own signature, if any, is the one that counts",
						name, dkim.Sanitize(strings.TrimSpace(f.Value()))))
					explained = true
				}
			}
		}
		if from := strings.ToLower(h[idx].Value()); !explained && (strings.Contains(from, " via ") || strings.Contains(from, "on behalf of")) {
			hints = append(hints, "From looks rewritten by a mailing list (\"via\" in the display name): lists that rewrite From for DMARC break the author's signature")
		}
	}
	if explained {
		return hints
	}

	var absent []string
	seen := map[string]bool{}
	for _, name := range s.Headers {
		n := strings.ToLower(name)
		if !seen[n] && h.Count(name) == 0 {
			absent = append(absent, n)
		}
		seen[n] = true
	}
	if len(absent) > 0 {
		hints = append(hints, fmt.Sprintf("h= names fields the message does not have now: %s (normal when the signer oversigns them; a field removed after signing looks the same)", strings.Join(absent, ", ")))
	}
	if s.HeaderCanon == dkim.Simple {
		hints = append(hints, "c=simple/...: simple header canonicalization breaks when a relay refolds a signed field or changes its white space or the case of its name; relaxed would have survived that")
	}
	hints = append(hints, fmt.Sprintf("if the signed fields above are what the sender sent, the key published at %s is not the one that signed (was the selector's key replaced while mail signed with the old one was in transit?)", s.DNSName()))
	return hints
}

// signedField returns the index of the field instance that the first
// mention of name in h= signs (the bottom-most, RFC 6376 §5.4.2), or -1.
func signedField(h dkim.Header, s *dkim.Signature, name string) int {
	if !slices.ContainsFunc(s.Headers, func(n string) bool { return dkim.EqualFoldASCII(n, name) }) {
		return -1
	}
	for j := len(h) - 1; j >= 0; j-- {
		if strings.EqualFold(h[j].Name, name) {
			return j
		}
	}
	return -1
}

type subjectTag struct {
	tag   string // what is removed, e.g. "[list] "
	value string // the field value without it
}

// subjectTags lists the Subject values with one tag removed: a bracketed
// "[…]" anywhere (with the white space after it, or before it at the end),
// or a leading "***SPAM***"-style marker.
func subjectTags(value string) []subjectTag {
	var out []subjectTag
	for from := 0; len(out) < maxSubjectTags; {
		open := strings.IndexByte(value[from:], '[')
		if open < 0 {
			break
		}
		open += from
		end := strings.IndexByte(value[open:], ']')
		if end < 0 {
			break
		}
		start, stop := open, open+end+1
		if strings.TrimRight(value[stop:], " \t\r\n") == "" {
			for start > 0 && strings.ContainsRune(" \t", rune(value[start-1])) {
				start--
			}
		} else {
			for stop < len(value) && strings.ContainsRune(" \t", rune(value[stop])) {
				stop++
			}
		}
		out = append(out, subjectTag{tag: value[start:stop], value: value[:start] + value[stop:]})
		from = open + end + 1
	}
	t := strings.TrimLeft(value, " \t")
	if strings.HasPrefix(t, "**") {
		if end := strings.Index(t[2:], "**"); end >= 0 {
			stop := 2 + end
			for stop < len(t) && t[stop] == '*' {
				stop++
			}
			for stop < len(t) && (t[stop] == ' ' || t[stop] == '\t') {
				stop++
			}
			lead := value[:len(value)-len(t)]
			out = append(out, subjectTag{tag: t[:stop], value: lead + t[stop:]})
		}
	}
	return out
}
