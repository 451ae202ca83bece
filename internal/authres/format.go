// Package authres writes the Authentication-Results field the milter
// stamps on inbound mail, and reads the authserv-id of the ones that
// arrive, so that those claiming ours can be deleted (RFC 8601).
//
// go-msgauth's authres package is not used: its Format cannot emit
// comments, folds nothing and does not escape backslashes, and its Parse
// fails on comments that contain ';' and on quoted strings with spaces,
// both of which a forger can write.
package authres

import (
	"strings"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// DKIM is one dkim= result: what the verifier found for one signature.
type DKIM struct {
	Result  string // the RFC 8601 §2.7.1 result word: pass, fail, …
	Reason  string // reason=, "" for none
	Comment string // a comment after the result ("2048-bit rsa key"), "" for none
	// header.d, header.i, header.s and header.a (RFC 8601 §2.7.1); ""
	// leaves the property out.
	Domain, Identity, Selector, Algorithm string
	// B is the whole b= value: Format writes the shortest prefix that
	// tells the signature apart from the others (RFC 6008 §4).
	B string
}

// Format formats the value of an Authentication-Results field (RFC 8601
// §2.2, https://www.rfc-editor.org/rfc/rfc8601#section-2.2) for the
// results of one message: one dkim= result per signature, with a reason,
// a comment naming the key, and header.d, i, s, a (RFC 8601 §2.7.1) and
// header.b (RFC 6008 §4). No results means "dkim=none": a downstream
// DMARC filter must see that DKIM was checked.
//
// The value starts with the single space that follows the colon and folds
// with CRLF TAB at about 76 columns; every piece of text that comes from
// the message is quoted or sanitized so that it cannot break out of its
// place (or out of the header field).
func Format(authservID string, vs []DKIM) string {
	f := dkim.NewFolder("Authentication-Results")
	// The authserv-id is ours (config or $myhostname): never shortened,
	// or downstream filters that look for it would not find it.
	f.Word(pvalueN(authservID, 0) + ";")
	if len(vs) == 0 {
		f.Word("dkim=none")
		return f.String()
	}
	bs := uniqueB(vs)
	for i, v := range vs {
		// Each result on its own line; ';' ends the one before.
		if i == 0 {
			f.Break("")
		} else {
			f.Break(";")
		}
		f.Word("dkim=" + v.Result)
		if v.Reason != "" {
			f.Word("reason=" + quote(v.Reason))
		}
		if v.Comment != "" {
			f.Word("(" + v.Comment + ")")
		}
		props := [][2]string{
			{"header.d", v.Domain}, {"header.i", v.Identity}, {"header.s", v.Selector},
			{"header.a", v.Algorithm}, {"header.b", bs[i]},
		}
		for _, p := range props {
			if p[1] != "" {
				f.Word(p[0] + "=" + pvalue(p[1]))
			}
		}
	}
	return f.String()
}

// uniqueB returns, for each verification, the shortest prefix of b= that is
// at least 8 characters and tells it apart from every other signature of
// the message (RFC 6008 §4). The length comes from the longest prefix
// shared with another signature, found once per pair: growing the prefix
// a character at a time and comparing it again took seconds for two
// forged b= values of 100 KB that differ at their end.
func uniqueB(vs []DKIM) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		n := 8
		for j, w := range vs {
			if j != i && w.B != v.B {
				n = max(n, commonPrefix(v.B, w.B)+1)
			}
		}
		out[i] = v.B[:min(n, len(v.B))]
	}
	return out
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// pvalue renders a property value: bare when it is an RFC 2045 token or an
// "[local-part]@domain" of plain characters (RFC 8601 §2.2 allows both),
// quoted otherwise. header.b values routinely contain '/', which must be
// quoted; OpenDKIM gets this wrong.
func pvalue(s string) string { return pvalueN(s, maxPValue) }

// maxPValue bounds a property value taken from a message. It fits every
// real value: an i= of a 64-byte local part, "@" and a 253-byte domain.
// Cutting header.d at a shorter length would hand a downstream DMARC check
// the wrong domain.
const maxPValue = 320

// pvalueN is pvalue with room for n bytes (0: no bound).
func pvalueN(s string, n int) string {
	s = dkim.SanitizeN(s, n)
	if isToken(s) {
		return s
	}
	if local, domain, ok := strings.Cut(s, "@"); ok && (local == "" || isToken(local)) && isToken(domain) && domain != "" {
		return s
	}
	return quoteSanitized(s)
}

const tspecials = `()<>@,;:\"/[]?=`

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(tspecials, c) >= 0 {
			return false
		}
	}
	return true
}

// quote makes a quoted-string, escaping '\' and '"' (RFC 5322 §3.2.4) and
// replacing anything that could end the field.
func quote(s string) string { return quoteSanitized(dkim.Sanitize(s)) }

// quoteSanitized quotes s, which sanitize has made safe already (a second
// pass would cut it again: sanitize is not idempotent).
func quoteSanitized(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}
