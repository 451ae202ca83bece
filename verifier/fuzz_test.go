package verifier

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// Fuzz targets for what the verifier reads from a message and what it
// writes back into it. Run one with
//
//	go test -run '^$' -fuzz '^FuzzAuthResults$' -fuzztime 30s ./verifier

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
		results := []Result{None, Pass, Fail, Neutral, Policy, TempError, PermError}
		v := &Verification{Result: results[int(res)%len(results)], Domain: d, Identity: i, Selector: s,
			Algorithm: a, B: b, KeyType: "rsa", KeyBits: int(bits), Testing: testing}
		if reason != "" {
			v.Err = errors.New(reason)
		}
		vs := []*Verification{v}
		if two {
			w := *v
			w.B = b + "x"
			vs = append(vs, &w)
		}
		out := AuthResults(id, vs)
		checkFolds(t, out)
		ar := parseAR(t, strings.ReplaceAll(out, "\r\n\t", " "))
		if ar.id != dkim.Sanitize(id, 0) {
			t.Fatalf("authserv-id %q, wrote %q", ar.id, id)
		}
		if len(ar.results) != len(vs) {
			t.Fatalf("%d results read back from %q, wrote %d", len(ar.results), out, len(vs))
		}
		for n, r := range ar.results {
			want := map[string]string{"dkim": string(vs[n].Result)}
			for _, p := range [][2]string{{"header.d", d}, {"header.i", i}, {"header.s", s}, {"header.a", a}} {
				if p[1] != "" {
					want[p[0]] = dkim.Sanitize(p[1], maxPValue)
				}
			}
			if reason != "" {
				want["reason"] = dkim.Sanitize(reason, maxReason)
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

// FuzzVerifyChunking: a whole message through the verifier gives the same
// results however its body is cut into chunks, and never panics. The seeds
// are signed with the RFC 8463 keys, so they verify and stay the same from
// run to run; the body cuts come from the fuzzer.
func FuzzVerifyChunking(f *testing.F) {
	rk, ek := testkit.RFC8463Keys()
	txt := map[string][]string{}
	for n, r := range testkit.DNSRecords("rfc8463.dns") {
		txt[n] = []string{r}
	}
	f.Add(testkit.File("rfc8463.eml"), []byte{1})
	std := "v=1; a=rsa-sha256; c=relaxed/relaxed; d=football.example.com; s=test; h=from:to:subject"
	for _, tags := range []string{std, std + "; l=20", strings.Replace(std, "relaxed/relaxed", "simple/simple", 1)} {
		m, err := testkit.SignRaw(testkit.CRLF([]byte(baseMsg)), tags, rk)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m, []byte{2, 0, 7})
		f.Add(append(m, "appended\r\n \r\n"...), []byte{0})
	}
	m, err := testkit.SignRaw(testkit.CRLF([]byte(baseMsg)), strings.NewReplacer("rsa-sha256", "ed25519-sha256", "s=test", "s=brisbane").Replace(std), ek)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m, []byte{3, 1})
	v := &Verifier{Resolver: &dns.Fake{TXT: txt}, Now: func() time.Time { return time.Unix(1528637909, 0) }}
	f.Fuzz(func(t *testing.T, msg, cuts []byte) {
		h, body := testkit.Split(msg)
		whole := v.Begin(context.Background(), h)
		whole.Write(body)
		want := whole.Finish()
		parts := v.Begin(context.Background(), h)
		for i, p := 0, body; len(p) > 0; i++ {
			n := len(p)
			if len(cuts) > 0 {
				n = min(n, 1+int(cuts[i%len(cuts)]))
			}
			parts.Write(p[:n])
			p = p[n:]
		}
		got := parts.Finish()
		if len(got) != len(want) {
			t.Fatalf("%d results in chunks, %d whole", len(got), len(want))
		}
		for i := range got {
			if got[i].Result != want[i].Result || got[i].Reason() != want[i].Reason() {
				t.Fatalf("signature %d: %s %q in chunks (cuts %v), %s %q whole", i, got[i].Result, got[i].Reason(), cuts, want[i].Result, want[i].Reason())
			}
		}
	})
}
