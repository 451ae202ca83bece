package milter

import (
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/miekg/dns"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

const inbound = `From: Dave <dave@sender.example>
To: Alice <alice@example.com>
Subject: Invoice 42
Date: Mon, 23 Nov 2026 09:00:00 +0000
Message-ID: <inv-42@sender.example>

Dear Alice,

please find the invoice below.

Dave
`

var daveEnv = testkit.Envelope{From: "dave@sender.example", Rcpts: []string{"alice@example.com"}, QueueID: "4Xin0001"}

const remote = "198.51.100.7"

// The clock of the verification tests: the signatures below are made at
// t=1795000000 with x= a week later.
var signTime = time.Unix(1795000000, 0)

// Every row of the verification-result table (doc/results.md), through the milter
// as Postfix drives it, with keys served by the in-process DNS server: the
// Authentication-Results field is exactly one result per signature, with
// the reason an operator can act on.
func TestVerifyResultTable(t *testing.T) {
	e := newEnv(t, strings.Replace(baseConfig, "[dns]\n", "[verify]\nmin_rsa_bits = 1024\nmax_signatures = 2\n[dns]\n", 1))
	e.rt.Now = fixedClock(signTime)
	e.setVerifier(func(o *verifier.Options) { o.Now = fixedClock(signTime) })

	k2048, k1024, k512 := testkit.RSAKey(2048), testkit.RSAKey(1024), testkit.RSAKey(1024)
	_ = k512
	std := "v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.example; s=%s; t=1795000000; x=1795604800; h=from:to:subject:date:message-id"
	sel := func(s string) string { return strings.Replace(std, "%s", s, 1) }
	for _, s := range []string{"good", "timeout", "servfail", "refused", "revoked", "nxdomain", "testing", "short", "bad"} {
		switch s {
		case "timeout":
			e.dns.SetTimeout(s + "._domainkey.sender.example")
		case "servfail":
			e.dns.SetRcode(s+"._domainkey.sender.example", dns.RcodeServerFailure)
		case "refused":
			e.dns.SetRcode(s+"._domainkey.sender.example", dns.RcodeRefused)
		case "revoked":
			e.dns.SetTXT(s+"._domainkey.sender.example", "v=DKIM1; k=rsa; p=")
		case "nxdomain":
		case "testing":
			e.dns.SetTXT(s+"._domainkey.sender.example", testkit.KeyRecord(k2048, "t=y; "))
		case "short":
			e.dns.SetTXT(s+"._domainkey.sender.example", testkit.KeyRecord(k1024, ""))
		case "bad":
			e.dns.SetTXT(s+"._domainkey.sender.example", "v=DKIM1; k=rsa; p=AAAA")
		default:
			e.dns.SetTXT(s+"._domainkey.sender.example", testkit.KeyRecord(k2048, ""))
		}
	}
	good := testkit.Sign(t, inbound, sel("good"), k2048)

	tests := []struct {
		name string
		msg  string
		want []string // substrings of the A-R, in order
	}{
		{"pass", good, []string{"dkim=pass (2048-bit rsa key) header.d=sender.example header.i=@sender.example header.s=good header.a=rsa-sha256 header.b="}},
		{"body hash", strings.Replace(good, "invoice below", "invoice below: pay to IBAN XX", 1), []string{`dkim=fail reason="body hash did not verify"`}},
		{"header", strings.Replace(good, "Invoice 42", "Invoice 43", 1), []string{`dkim=fail reason="signature did not verify"`}},
		{"no key", testkit.Sign(t, inbound, sel("nxdomain"), k2048), []string{`dkim=permerror reason="no key for signature"`, "header.s=nxdomain"}},
		{"revoked", testkit.Sign(t, inbound, sel("revoked"), k2048), []string{`dkim=permerror reason="key revoked"`}},
		{"bad key record", testkit.Sign(t, inbound, sel("bad"), k2048), []string{`dkim=permerror reason="key record p= is not an RSA public key"`}},
		{"bad signature", testkit.Sign(t, inbound, strings.Replace(sel("good"), "h=from:", "h=", 1), k2048), []string{`dkim=permerror reason="From header not signed (h= has no From)"`}},
		{"expired", testkit.Sign(t, inbound, strings.Replace(sel("good"), "x=1795604800", "x=1795000100", 1), k2048)[:0] +
			testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d=sender.example; s=good; t=1794000000; x=1794600000; h=from", k2048), []string{`dkim=permerror reason="signature expired"`}},
		{"future", testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d=sender.example; s=good; t=1795090000; h=from", k2048), []string{`dkim=permerror reason="signature timestamp in the future"`}},
		{"dns timeout", testkit.Sign(t, inbound, sel("timeout"), k2048), []string{`dkim=temperror reason="DNS timeout"`}},
		{"servfail", testkit.Sign(t, inbound, sel("servfail"), k2048), []string{`dkim=temperror reason="DNS server failure"`}},
		{"refused", testkit.Sign(t, inbound, sel("refused"), k2048), []string{`dkim=temperror reason="DNS server failure"`}},
		{"rsa-sha1", testkit.Sign(t, inbound, strings.Replace(sel("good"), "a=rsa-sha256", "a=rsa-sha1", 1), k2048), []string{`dkim=policy reason="rsa-sha1 is not accepted (RFC 8301)"`, "header.a=rsa-sha1"}},
		{"rsa-sha1 broken", strings.Replace(testkit.Sign(t, inbound, strings.Replace(sel("good"), "a=rsa-sha256", "a=rsa-sha1", 1), k2048), "Invoice 42", "Invoice 43", 1), []string{`dkim=fail reason="signature did not verify"`, "header.a=rsa-sha1"}},
		{"l=", testkit.Sign(t, inbound, sel("good")+"; l=20", k2048), []string{`dkim=policy reason="unsigned content after l="`}},
		{"unsigned From", "From: CEO <ceo@example.com>\r\n" + good, []string{`dkim=policy reason="unsigned From header"`}},
		{"testing key", strings.Replace(testkit.Sign(t, inbound, sel("testing"), k2048), "Invoice", "Lnvoice", 1), []string{`dkim=fail reason="signature did not verify" (2048-bit rsa key; testing key)`}},
		{"too many", testkit.Sign(t, testkit.Sign(t, good, sel("good"), k2048), sel("nxdomain"), k2048), []string{"dkim=permerror", "dkim=pass", `dkim=neutral reason="too many signatures"`}},
		{"none", inbound, []string{"mx.example.com; dkim=none"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, chunk := range []int{0, 5} {
				r, out := e.on(t).send(remote, daveEnv, tt.msg, chunk)
				if r.Action.Code != gomilter.ActContinue {
					t.Fatalf("answer %+v", r.Action)
				}
				ar := testkit.Fields(out, "Authentication-Results")
				if len(ar) != 1 {
					t.Fatalf("%d A-R fields", len(ar))
				}
				if !strings.HasPrefix(ar[0], "mx.example.com;") {
					t.Errorf("authserv-id: %s", ar[0])
				}
				rest := ar[0]
				for _, w := range tt.want {
					i := strings.Index(rest, w)
					if i < 0 {
						t.Fatalf("A-R %q lacks %q (in order)", ar[0], w)
					}
					rest = rest[i+len(w):]
				}
				if n := strings.Count(ar[0], "dkim="); n != max(1, strings.Count(tt.msg, "DKIM-Signature:")) {
					t.Errorf("%d results for %d signatures", n, strings.Count(tt.msg, "DKIM-Signature:"))
				}
				// The A-R is the top field, above everything Postfix has.
				h, _ := testkit.Split(out)
				if h[0].Name != "Authentication-Results" {
					t.Errorf("top field is %s", h[0].Name)
				}
			}
		})
	}
	if !strings.Contains(e.lastLog(), "qid=4Xin0001") || !strings.Contains(e.lastLog(), "client=client.example.net[198.51.100.7]") {
		t.Errorf("log line lacks qid or client: %s", e.lastLog())
	}
}

// RFC 8601 §5: an A-R that claims our authserv-id is deleted, however it is
// spelled; other hosts' are kept. Indexes are 1-based per name, highest
// first.
func TestForgedAuthResultsRemoved(t *testing.T) {
	e := newEnv(t, "")
	msg := "Authentication-Results: mx.example.com; dkim=pass header.d=bank.example\n" +
		"Authentication-Results: other.example; dkim=pass header.d=sender.example\n" +
		"authentication-results: (sneaky; comment) MX.Example.COM ; spf=pass\n" +
		"Authentication-Results: \"mx.example.com\"; dmarc=pass\n" +
		"Authentication-Results: mx.example.com/4Xq1; dkim=pass\n" +
		"Authentication-Results: mx.example.com.evil.example; dkim=pass\n" +
		inbound
	r, out := e.send(remote, daveEnv, msg, 0)
	var deleted []uint32
	for _, m := range testkit.Mods(r, gomilter.ActChangeHeader) {
		if m.HeaderValue != "" || !strings.EqualFold(m.HeaderName, "Authentication-Results") {
			t.Errorf("unexpected change %+v", m)
		}
		deleted = append(deleted, m.HeaderIndex)
	}
	if want := []uint32{5, 4, 3, 1}; len(deleted) != len(want) || deleted[0] != 5 || deleted[1] != 4 || deleted[2] != 3 || deleted[3] != 1 {
		t.Errorf("deleted %v, want %v", deleted, want)
	}
	ar := testkit.Fields(out, "Authentication-Results")
	want := []string{"mx.example.com; dkim=none", "other.example; dkim=pass header.d=sender.example", "mx.example.com.evil.example; dkim=pass"}
	if strings.Join(ar, "|") != strings.Join(want, "|") {
		t.Errorf("delivered A-R:\n%s\nwant\n%s", strings.Join(ar, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(e.lastLog(), "removed 4 forged Authentication-Results") {
		t.Errorf("log: %s", e.lastLog())
	}
}

// mode = "s" leaves inbound mail alone; mode = "v" never signs.
func TestModes(t *testing.T) {
	e := newEnv(t, "mode = \"s\"\n"+baseConfig)
	r, _ := e.send(remote, daveEnv, inbound, 0)
	if len(r.Mods) != 0 {
		t.Errorf("mode s touched inbound mail: %+v", r.Mods)
	}
	e = newEnv(t, "mode = \"v\"\n"+baseConfig)
	_, out := e.send("127.0.0.1", aliceEnv, outbound, 0)
	if len(testkit.Fields(out, "DKIM-Signature")) != 0 || len(testkit.Fields(out, "Authentication-Results")) != 1 {
		t.Errorf("mode v: %s", out)
	}
}

// Without authserv_id, Postfix's j macro names us; the forged-A-R check
// follows it.
func TestAuthservIDFromMacro(t *testing.T) {
	e := newEnv(t, strings.Replace(baseConfig, `authserv_id = "mx.example.com"`, "", 1))
	c := e.dial(remote)
	c.MTAHost = "smtp.example.com"
	_ = c
	c2, err := testkit.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.MTAHost = "smtp.example.com"
	if err := c2.Connect("client.example.net", remote); err != nil {
		t.Fatal(err)
	}
	msg := "Authentication-Results: smtp.example.com; dkim=pass\n" + inbound
	_, out := e.sendOn(c2, daveEnv, msg, 0)
	ar := testkit.Fields(out, "Authentication-Results")
	if len(ar) != 1 || ar[0] != "smtp.example.com; dkim=none" {
		t.Errorf("A-R %q", ar)
	}
}
