package authres

import (
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// Fuzz targets for the field we write and the fields we read. Run one
// with
//
//	go test -run '^$' -fuzz '^FuzzAuthResults$' -fuzztime 30s ./internal/authres

// FuzzAuthResults: whatever a message put in d=, i=, s=, a=, b= or the
// reason, the field we insert has no line break but our CRLF TAB folds, no
// control character, and follows RFC 8601's grammar with every value a
// token or a quoted-string; read back, it gives the authserv-id and the
// (sanitized) values we wrote.
func FuzzAuthResults(f *testing.F) {
	f.Add("mx.example.com", "example.com", "@example.com", "s2026r", "rsa-sha256", "Zr5u1P8x/+=", "body hash did not verify", uint8(1), uint16(2048), false, true)
	f.Add("mx.example.com", "evil\r\nX-Injected: 1", "a b@c", "s;x", "rsa-sha256", "abc\\def", "bad \"x\"\r\nX: y", uint8(5), uint16(0), true, false)
	f.Add("\"quoted\" id", "d\"=;", "@", "(c)", "", "", "", uint8(0), uint16(1024), true, true)
	f.Fuzz(func(t *testing.T, id, d, i, s, a, b, reason string, res uint8, bits uint16, testing, two bool) {
		results := []string{"none", "pass", "fail", "neutral", "policy", "temperror", "permerror"}
		// The comment is the verifier's: the key size, and the testing flag.
		comment := fmt.Sprintf("%d-bit rsa key", bits)
		if testing {
			comment += "; testing key"
		}
		v := DKIM{Result: results[int(res)%len(results)], Reason: reason, Comment: comment,
			Domain: d, Identity: i, Selector: s, Algorithm: a, B: b}
		vs := []DKIM{v}
		if two {
			w := v
			w.B = b + "x"
			vs = append(vs, w)
		}
		out := Format(id, vs)
		checkFolds(t, out)
		ar := parseAR(t, strings.ReplaceAll(out, "\r\n\t", " "))
		if ar.id != dkim.SanitizeN(id, 0) {
			t.Fatalf("authserv-id %q, wrote %q", ar.id, id)
		}
		if len(ar.results) != len(vs) {
			t.Fatalf("%d results read back from %q, wrote %d", len(ar.results), out, len(vs))
		}
		for n, r := range ar.results {
			want := map[string]string{"dkim": vs[n].Result}
			for _, p := range [][2]string{{"header.d", d}, {"header.i", i}, {"header.s", s}, {"header.a", a}} {
				if p[1] != "" {
					want[p[0]] = dkim.SanitizeN(p[1], maxPValue)
				}
			}
			if reason != "" {
				want["reason"] = dkim.Sanitize(reason)
			}
			for k, w := range want {
				if r[k] != w {
					t.Fatalf("result %d: %s=%q, wrote %q, in %q", n, k, r[k], w, out)
				}
			}
		}
	})
}

// checkFolds: CR and LF only as CRLF TAB folds, no other control byte.
func checkFolds(t *testing.T, out string) {
	t.Helper()
	for i := 0; i < len(out); i++ {
		switch c := out[i]; {
		case c == '\r':
			if !strings.HasPrefix(out[i:], "\r\n\t") {
				t.Fatalf("CR that is not a fold at %d in %q", i, out)
			}
			i += 2
		case c < 0x20 || c == 0x7f:
			t.Fatalf("control byte %#x at %d in %q", c, i, out)
		}
	}
}

// arField is an A-R value read back: the authserv-id, and per result the
// method's result ("dkim") and each property by name.
type arField struct {
	id      string
	results []map[string]string
}

// parseAR reads an unfolded A-R value strictly (RFC 8601 §2.2 with RFC
// 2045 tokens): it fails the test on anything our formatter must not
// write.
func parseAR(t *testing.T, s string) arField {
	t.Helper()
	l := &arLexer{t: t, s: s}
	var f arField
	l.cfws()
	f.id = l.value()
	l.cfws()
	l.expect(';')
	for {
		l.cfws()
		m := l.token()
		l.expect('=')
		r := map[string]string{m: l.token()}
		if m == "dkim" && r[m] == "none" && len(f.results) == 0 && l.i == len(l.s) {
			return f // "dkim=none" stands for no result at all
		}
		for {
			l.cfws()
			if l.i == len(l.s) || l.s[l.i] == ';' {
				break
			}
			name := l.token()
			l.expect('=')
			r[name] = l.value()
		}
		f.results = append(f.results, r)
		if l.i == len(l.s) {
			return f
		}
		l.expect(';')
	}
}

type arLexer struct {
	t *testing.T
	s string
	i int
}

func (l *arLexer) fail(what string) {
	l.t.Helper()
	l.t.Fatalf("A-R %q: %s at %d", l.s, what, l.i)
}

func (l *arLexer) expect(c byte) {
	l.t.Helper()
	if l.i >= len(l.s) || l.s[l.i] != c {
		l.fail("want " + string(c))
	}
	l.i++
}

// cfws skips spaces and (nested) comments.
func (l *arLexer) cfws() {
	depth := 0
	for ; l.i < len(l.s); l.i++ {
		switch c := l.s[l.i]; {
		case c == '\\' && depth > 0:
			l.i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0 || c == ' ':
		default:
			return
		}
	}
	if depth > 0 {
		l.fail("unterminated comment")
	}
}

func (l *arLexer) token() string {
	j := l.i
	for j < len(l.s) && l.s[j] > ' ' && l.s[j] < 0x7f && !strings.ContainsRune(tspecials, rune(l.s[j])) {
		j++
	}
	if j == l.i {
		l.fail("want a token")
	}
	tok := l.s[l.i:j]
	l.i = j
	return tok
}

// value reads a quoted-string, a token, or the "[local]@domain" form.
func (l *arLexer) value() string {
	if l.i < len(l.s) && l.s[l.i] == '"' {
		var b strings.Builder
		for l.i++; l.i < len(l.s); l.i++ {
			switch c := l.s[l.i]; c {
			case '\\':
				l.i++
				if l.i == len(l.s) {
					l.fail("escape at the end")
				}
				b.WriteByte(l.s[l.i])
			case '"':
				l.i++
				return b.String()
			default:
				b.WriteByte(c)
			}
		}
		l.fail("unterminated quoted-string")
	}
	var local string
	if l.i < len(l.s) && l.s[l.i] != '@' {
		local = l.token()
	}
	if l.i < len(l.s) && l.s[l.i] == '@' {
		l.i++
		return local + "@" + l.token()
	}
	return local
}

// FuzzClaimsAuthservID: reading the authserv-id of an inbound A-R field
// (to delete forged ones) never panics; a value that starts with our id,
// however spaced, commented, folded, quoted, cased or versioned, is
// claimed; and the field we write ourselves reads back as ours, with the
// id exactly as we wrote it. Run with
//
//	go test -run '^$' -fuzz '^FuzzClaimsAuthservID$' -fuzztime 30s ./internal/authres
func FuzzClaimsAuthservID(f *testing.F) {
	f.Add(" mx.example.com; dkim=pass", "mx.example.com")
	f.Add(" (sneaky; comment) MX.Example.COM ; spf=pass", "mx.example.com")
	f.Add(` "mx.ex\ample.com"; dmarc=pass`, "mx.example.com")
	f.Add("\r\n\tmx.example.com 1;", "mx.example.com")
	f.Add(" mx.example.com/4Xq1; dkim=pass", "mx.example.com")
	f.Add(" (unterminated mx.example.com;", "mx.example.com")
	f.Add(" mx.example.com.evil.example; dkim=pass", "mx.example.com")
	f.Add(" ((((", "x")
	f.Fuzz(func(t *testing.T, value, id string) {
		ClaimsAuthservID(value, id)
		authservID(value)
		if !configurableID(id) {
			return
		}
		quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(id) + `"`
		for _, v := range []string{
			" " + id + ";" + value,
			id + " ;" + value,
			" (a (nested) comment) " + id + "(c);" + value,
			"\r\n\t" + upperASCII(id) + " 1;" + value,
			"\n " + quoted + "; " + value,
			" " + id + "/4Xq1; " + value,
		} {
			if !ClaimsAuthservID(v, id) {
				t.Fatalf("%q does not claim %q", v, id)
			}
		}
		vs := []DKIM{{Result: "fail", Reason: value, Domain: value, Selector: value}}
		for _, ar := range []string{Format(id, nil), Format(id, vs)} {
			if got, ok := authservID(ar); !ok || got != id || !ClaimsAuthservID(ar, id) {
				t.Fatalf("our own field %q reads back as %q (%v), want %q", ar, got, ok, id)
			}
		}
	})
}

// upperASCII upper-cases ASCII letters only: host names are ASCII, and
// Unicode case mapping is not a round trip ("ı" upper-cases to "I").
func upperASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' {
			return r - 'a' + 'A'
		}
		return r
	}, s)
}

// configurableID reports whether config would accept id as authserv_id
// (config/validate.go): one word, no comment or quote characters.
func configurableID(id string) bool {
	if id == "" || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`;()"\`, r) {
			return false
		}
	}
	return true
}
