package milter

import (
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// checkFolded fails unless v's only line breaks are folds (LF or CRLF,
// then a TAB): anything else in a header value we insert would start a
// header field of the sender's making.
func checkFolded(t *testing.T, v string) {
	t.Helper()
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\r':
			if !strings.HasPrefix(v[i:], "\r\n\t") {
				t.Fatalf("bare CR in %q", v)
			}
		case '\n':
			if !strings.HasPrefix(v[i:], "\n\t") {
				t.Fatalf("LF not followed by a TAB in %q", v)
			}
		default:
			if v[i] < 0x20 && v[i] != '\t' || v[i] == 0x7f {
				t.Fatalf("control byte %#x in %q", v[i], v)
			}
		}
	}
}

// Header injection through what we insert is impossible: d=, s=, i=, a=
// and the reasons built from them may hold CR, LF, ';' and '"' (sent raw,
// as no MTA would), and the Authentication-Results field still has one
// result per signature, no line of its own making, and no pass.
func TestNoHeaderInjection(t *testing.T) {
	e := newEnv(t, strings.Replace(baseConfig, `authserv_id = "mx.example.com"`, "", 1))
	e.setVerifier(func(o *verifier.Options) { o.Now = fixedClock(signTime) })
	k := testkit.RSAKey(2048)
	e.dns.SetTXT("good._domainkey.sender.example", testkit.KeyRecord(k, ""))
	// A good signature whose i= decodes to a line break and a field.
	good := testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d=sender.example; s=good; h=from:subject; i=a=0D=0AX-Injected:=20yes@sender.example", k)
	goodSig, body, _ := strings.Cut(good, "\r\n")
	goodSig = strings.TrimPrefix(goodSig, "DKIM-Signature:")
	sigs := []string{
		" v=1; a=rsa-sha256; d=evil.example\r\nX-Injected: 1; s=s; h=from; bh=AA==; b=AA==",
		" v=1; a=rsa-sha256; d=evil.example\nX-Injected: 2; s=s; h=from; bh=AA==; b=AA==",
		` v=1; a=rsa-sha256; d=a"b.example; s=x"y; h=from; bh=AA==; b=AA==`,
		` v=1; a=rsa-sha256" dkim=pass; d=x.example; s=s; h=from; bh=AA==; b=AA==`,
		" v=1; a=rsa-sha256; d=example.com (x) dkim=pass header.d=bank.example; s=s; h=from; bh=AA==; b=AA==",
		" v=1; a=rsa-sha256; d=x.example; s=s\r\n\r\nX-Injected: 3; h=from; bh=AA==; b=AA==",
		" v=1; a=rsa-sha256; d=x.example; s=s; h=to; bh=AA==; b=\"\\\r\n",
	}
	r := dialRaw(t, e.addr)
	r.negotiate()
	// Postfix's $myhostname names us here (no authserv_id): make it hostile too.
	r.send('D', "C", "j\x00mx.example.com\r\nX-Injected: 4\x00")
	r.connect("mail.sender.example", remote)
	r.send('M', "<dave@sender.example>\x00")
	r.expect('c')
	for _, s := range append(sigs, goodSig) {
		r.header("DKIM-Signature", s)
		r.expect('c')
	}
	h, _ := testkit.Split([]byte(body))
	for _, f := range h {
		r.header(f.Name, testkit.HeaderValue(f, true))
		r.expect('c')
	}
	r.send('N')
	r.expect('c')
	_, b, _ := strings.Cut(body, "\r\n\r\n")
	r.send('B', b)
	r.expect('c')
	r.send('E')
	ins := inserted(r.expect('c'))
	if len(ins) != 1 || !strings.HasPrefix(ins[0], "Authentication-Results:") {
		t.Fatalf("inserted %q", ins)
	}
	ar := strings.TrimPrefix(ins[0], "Authentication-Results:")
	checkFolded(t, ar)
	flat := strings.NewReplacer("\r\n\t", " ", "\n\t", " ").Replace(ar)
	if !strings.HasPrefix(flat, ` "mx.example.com??X-Injected: 4";`) {
		t.Errorf("authserv-id: %s", flat)
	}
	bare := outsideQuotes(flat)
	if n := strings.Count(bare, "dkim="); n != len(sigs)+1 {
		t.Errorf("%d results for %d signatures: %s", n, len(sigs)+1, flat)
	}
	if n := strings.Count(bare, "dkim=pass"); n != 1 || !strings.Contains(flat, `dkim=pass (2048-bit rsa key) header.d=sender.example header.i="a??X-Injected: yes@sender.example"`) {
		t.Errorf("want the good signature alone to pass, with its i= defused: %s", flat)
	}
	for _, want := range []string{`header.d="a\"b.example" header.s="x\"y"`, `reason="unknown algorithm a=rsa-sha256\" dkim=pass"`} {
		if !strings.Contains(flat, want) {
			t.Errorf("lacks %s: %s", want, flat)
		}
	}
}

// outsideQuotes drops the quoted-strings and comments of an A-R value:
// what is left is its structure, where a "dkim=" starts a result.
func outsideQuotes(s string) string {
	var b strings.Builder
	quoted, depth := false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case (quoted || depth > 0) && c == '\\':
			i++
		case quoted:
			quoted = c != '"'
		case c == '"' && depth == 0:
			quoted = true
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// A From address with a line break in it stays on its log line: every
// line of the log is a record of its own.
func TestNoLogInjection(t *testing.T) {
	e := newEnv(t, "")
	for _, from := range []string{" x <a@b.example\nlevel=ERROR msg=forged>", " <a@b.example\r\nlevel=ERROR msg=forged2>", " a@b.example\n time=x level=ERROR"} {
		r := dialRaw(t, e.addr)
		r.negotiate()
		r.connect("localhost", "127.0.0.1")
		r.send('M', "<a@b.example>\x00")
		r.expect('c')
		r.header("From", from)
		r.expect('c')
		r.send('N')
		r.expect('c')
		r.send('E')
		r.expect('c')
	}
	for _, l := range strings.Split(strings.TrimSuffix(e.logs.String(), "\n"), "\n") {
		if !strings.HasPrefix(l, "time=") {
			t.Errorf("a log line of the sender's making: %q", l)
		}
	}
	if !strings.Contains(e.logs.String(), `from="a@b.example\r\nlevel=ERROR msg=forged"`) {
		t.Errorf("the address is not logged as one quoted value:\n%s", e.logs.String())
	}
}

// A '%' key signs for the From domain: a From whose "domain" is not a
// domain name (FromAddresses takes what is between < and > when the field
// does not parse) is not signed, rather than written into d=.
func TestPercentDomainInjection(t *testing.T) {
	// The sender binding off: the keystore's own check is what is tested
	// (the binding would refuse these From domains too).
	e := newEnv(t, strings.Replace(baseConfig, "[sign]\n", "[sign]\nsender_binding = \"off\"\n", 1)+`
[keys.hosted]
domain = "%"
selector = "h"
file = "{{dir}}/rsa.pem"
[[signing]]
from = "*"
keys = ["hosted"]
`)
	auth := testkit.Envelope{From: "a@b.example", AuthType: "PLAIN", AuthAuthen: "a"}
	for _, from := range []string{"From: <a@b.example;l=0>", "From: x <a@b.example;\n x=1>", "From: <a@b.example (c)>"} {
		r, _ := e.send(remote, auth, strings.Replace(outbound, "From: Alice <alice@example.com>", from, 1), 0)
		for _, m := range r.Mods {
			if m.HeaderName == "DKIM-Signature" {
				t.Errorf("%q: signed: %q", from, m.HeaderValue)
			}
		}
	}
	// A real domain is signed through the same rule.
	r, _ := e.send(remote, auth, strings.Replace(outbound, "alice@example.com", "a@b.example", 1), 0)
	if len(r.Mods) == 0 || !strings.Contains(r.Mods[len(r.Mods)-1].HeaderValue, "d=b.example;") {
		t.Errorf("b.example not signed: %+v", r.Mods)
	}
}
