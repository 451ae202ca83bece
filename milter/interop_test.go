package milter

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// Interoperability with dkimpy (Debian python3-dkim), an independent
// implementation: what the milter signs must verify there, and what dkimpy
// signs must verify here, through the milter as Postfix drives it. DNS is
// never real: dkimpy gets the key records as arguments, the milter gets
// them from the in-process DNS server.

// dkimpyRecords are the key records newEnv published, for dkimpy.
func (e *env) dkimpyRecords() map[string]string {
	return map[string]string{
		"rsa._domainkey.example.com": testkit.KeyRecord(e.rsa, ""),
		"ed._domainkey.example.com":  testkit.KeyRecord(e.ed, ""),
	}
}

// ourVerdicts is what our verifier says of msg, one "result reason" per
// signature: the other side of a disagreement in a failure message.
func (e *env) ourVerdicts(msg []byte) []string {
	v := *e.rt.Verifier
	h, body := testkit.Split(msg)
	m := v.Begin(context.Background(), h)
	m.Write(body)
	var out []string
	for _, r := range m.Finish() {
		out = append(out, strings.TrimSpace(string(r.Result)+" "+r.Reason()))
	}
	return out
}

// Messages whose canonicalization is not trivial, as an MUA or a script
// would submit them.
var interopMessages = []struct {
	name  string
	msg   string
	chunk int
}{
	{"plain", outbound, 0},
	{"folded headers", `From: "Alice, the one from Accounts"
 <alice@example.com>
To: Bob <bob@example.net>,
	Carol <carol@example.org>,
  Dave <dave@example.org>
Subject: A subject   that is folded
	 over   three
  lines
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <fold-1@example.com>
Content-Type: text/plain;
	charset="us-ascii";
	format=flowed

Folded.
`, 0},
	{"utf-8 8bit body", `From: Jürgen <juergen@example.com>
To: bob@example.net
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <utf8-1@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Grüße aus Köln — ça va ?
日本語のテキスト、絵文字 🎉  
ﬁn
`, 0},
	{"utf-8 header (RFC 6532)", `From: Jürgen Müller <jürgen@example.com>
To: Zoë <zoë@example.net>
Subject: Grüße — 日本語
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <utf8-2@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hallo.
`, 0},
	{"long header", `From: alice@example.com
To: bob@example.net
Subject: ` + strings.Repeat("very long subject ", 50) + `
References: ` + strings.TrimSpace(strings.Repeat("<a-long-message-id-for-references@example.com>\n ", 40)) + `
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <long-1@example.com>

Long header above.
`, 0},
	{"empty body", `From: alice@example.com
To: bob@example.net
Subject: nothing to say
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <empty-1@example.com>

`, 0},
	{"trailing whitespace and blank lines", "From: alice@example.com\nTo: bob@example.net\nSubject: spaces\nDate: Mon, 23 Nov 2026 10:00:00 +0000\n" +
		"Message-ID: <ws-1@example.com>\n\n" +
		"\n  \nleading blank lines above, trailing spaces here   \n\ttab\tinside \t\n" +
		"two  spaces   and tabs\t\there\n \n\nmiddle blank lines above\n   \n\t\n\n\n\n", 0},
	{"tiny chunks", outbound, 1},
	{"tiny chunks, whitespace", "From: alice@example.com\nSubject: chunks\n\n" +
		"a  \n\n b \t\n\n\n", 3},
	{"large body", "From: alice@example.com\nTo: bob@example.net\nSubject: big\n\n" +
		strings.Repeat("0123456789 abcdefghijklmnopqrstuvwxyz  \t\n", 5000), 0},
}

// What the milter signs verifies with dkimpy: each key type, each
// canonicalization, dual signing and i=, over messages whose
// canonicalization is not trivial.
func TestInteropSignedHereVerifiesWithDkimpy(t *testing.T) {
	_, ok := testkit.Dkimpy()
	testkit.RequirePeer(t, "python3-dkim", ok)
	sign := func(canon string) string {
		return strings.Replace(baseConfig, "[sign]\n", "[sign]\ncanonicalization = \""+canon+"\"\n", 1)
	}
	keys := func(cfg, keys string) string {
		return strings.Replace(cfg, `keys = ["rsa"]`, "keys = "+keys, 1)
	}
	configs := []struct {
		name, cfg string
		sigs      int
	}{
		{"rsa relaxed/relaxed", baseConfig, 1},
		{"rsa simple/simple", sign("simple/simple"), 1},
		{"ed25519 relaxed/relaxed", keys(baseConfig, `["ed"]`), 1},
		{"ed25519 simple/simple", keys(sign("simple/simple"), `["ed"]`), 1},
		{"dual relaxed/relaxed", keys(baseConfig, `["rsa", "ed"]`), 2},
		{"dual simple/simple", keys(sign("simple/simple"), `["rsa", "ed"]`), 2},
		{"dual relaxed/simple", keys(sign("relaxed/simple"), `["rsa", "ed"]`), 2},
		{"dual with i=", keys(baseConfig, `["rsa", "ed"]`+"\nidentity = \"alice@example.com\""), 2},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, c.cfg)
			for _, m := range interopMessages {
				t.Run(m.name, func(t *testing.T) {
					e := e.on(t)
					r, out := e.send("127.0.0.1", aliceEnv, m.msg, m.chunk)
					if r.Action.Code != gomilter.ActContinue {
						t.Fatalf("answer %c %d %s", r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText)
					}
					if n := len(testkit.Fields(out, "DKIM-Signature")); n != c.sigs {
						t.Fatalf("%d signatures, want %d", n, c.sigs)
					}
					got, err := testkit.DkimpyVerify(out, e.dkimpyRecords())
					if err != nil {
						t.Fatal(err)
					}
					if len(got) != c.sigs {
						t.Fatalf("dkimpy sees %d signatures, want %d: %q", len(got), c.sigs, got)
					}
					for i, v := range got {
						if v != "pass" {
							t.Errorf("signature %d: dkimpy says %q, we say %q\nmessage:\n%s", i, v, e.ourVerdicts(out), out)
						}
					}
				})
			}
		})
	}
}

// A message whose canonicalizations all differ: folded and oddly spaced
// fields, trailing whitespace, blank lines at the end.
const interopInbound = `From: Dave <dave@sender.example>
To:   Alice
	<alice@example.com>
Subject:  Invoice   42 
 (second line)
Date: Mon, 23 Nov 2026 09:00:00 +0000
Message-ID: <inv-42@sender.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Dear Alice,  

please find the invoice	 below.
Grüße


`

// What dkimpy signs verifies through the milter, with the result,
// reason and properties an operator reads in Authentication-Results; and
// dkimpy agrees with itself on every message we deliver.
func TestInteropDkimpySignedVerifiesHere(t *testing.T) {
	_, ok := testkit.Dkimpy()
	testkit.RequirePeer(t, "python3-dkim", ok)
	e := newEnv(t, "")
	rsaKey := testkit.RSAKey(2048)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]string{
		"py-rsa._domainkey.sender.example": testkit.KeyRecord(rsaKey, ""),
		"py-ed._domainkey.sender.example":  testkit.KeyRecord(edKey, ""),
	}
	for name, rec := range records {
		e.dns.SetTXT(name, rec)
	}
	type key struct {
		name, sel, alg, comment string
		key                     crypto.Signer
	}
	keys := []key{
		{"rsa", "py-rsa", "rsa-sha256", "(2048-bit rsa key)", rsaKey},
		{"ed25519", "py-ed", "ed25519-sha256", "(ed25519 key)", edKey},
	}

	type tc struct {
		name    string
		opts    testkit.DkimpySignOptions
		mutate  func(string) string
		want    string // the A-R result up to header.d
		dkimpy  string // what dkimpy says of the delivered message ("" = pass)
		ident   string // header.i
		message string
	}
	var tests []tc
	for _, k := range keys {
		base := testkit.DkimpySignOptions{Selector: k.sel, Domain: "sender.example", Key: k.key}
		pass := "dkim=pass " + k.comment
		for _, canon := range []string{"simple/simple", "relaxed/relaxed", "relaxed/simple", "simple/relaxed"} {
			o := base
			o.Canon = canon
			tests = append(tests,
				tc{name: k.name + " " + canon, opts: o, want: pass, ident: "@sender.example", message: interopInbound},
				tc{name: k.name + " " + canon + " plain", opts: o, want: pass, ident: "@sender.example", message: inbound})
		}
		o := base
		o.Identity = "dave@sender.example"
		tests = append(tests, tc{name: k.name + " i=user", opts: o, want: pass, ident: "dave@sender.example", message: interopInbound})
		o.Identity = "@news.sender.example"
		tests = append(tests, tc{name: k.name + " i=subdomain", opts: o, want: pass, ident: "@news.sender.example", message: interopInbound})
		o = base
		o.Canon = "relaxed/relaxed"
		o.Headers = []string{"from", "to", "subject", "date", "message-id", "from", "subject"}
		tests = append(tests, tc{name: k.name + " oversigned h=", opts: o, want: pass, ident: "@sender.example", message: interopInbound})
		o = base
		o.Length = true
		tests = append(tests,
			tc{name: k.name + " l= nothing appended", opts: o, want: pass, ident: "@sender.example", message: interopInbound},
			tc{name: k.name + " l= text appended", opts: o, ident: "@sender.example", message: interopInbound,
				mutate: func(m string) string { return m + "P.S. Pay to IBAN XX00 instead.\r\n" },
				want:   `dkim=policy reason="unsigned content after l=" ` + k.comment,
				// dkimpy honours l= and passes: a policy difference, not a bug.
				dkimpy: "pass"})
		tests = append(tests,
			tc{name: k.name + " body modified", opts: base, ident: "@sender.example", message: interopInbound,
				mutate: func(m string) string { return strings.Replace(m, "invoice\t below", "invoice below: IBAN XX", 1) },
				want:   `dkim=fail reason="body hash did not verify" ` + k.comment,
				dkimpy: "fail ValidationError: body hash mismatch"},
			tc{name: k.name + " header modified", opts: base, ident: "@sender.example", message: interopInbound,
				mutate: func(m string) string { return strings.Replace(m, "Invoice   42", "Invoice   43", 1) },
				want:   `dkim=fail reason="signature did not verify" ` + k.comment,
				dkimpy: "fail signature did not verify"})
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := e.on(t)
			signed, err := testkit.DkimpySign(testkit.CRLF([]byte(tt.message)), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			msg := string(signed)
			if tt.mutate != nil {
				msg = tt.mutate(msg)
			}
			k := keys[0]
			if _, ok := tt.opts.Key.(ed25519.PrivateKey); ok {
				k = keys[1]
			}
			for _, chunk := range []int{0, 7} {
				r, out := e.send(remote, daveEnv, msg, chunk)
				if r.Action.Code != gomilter.ActContinue {
					t.Fatalf("answer %+v", r.Action)
				}
				ar := testkit.Fields(out, "Authentication-Results")
				if len(ar) != 1 {
					t.Fatalf("%d A-R fields", len(ar))
				}
				want := "mx.example.com; " + tt.want + " header.d=sender.example header.i=" + tt.ident +
					" header.s=" + k.sel + " header.a=" + k.alg + " header.b="
				if !strings.HasPrefix(ar[0], want) {
					dk, _ := testkit.DkimpyVerify([]byte(msg), records)
					t.Fatalf("chunk %d: A-R\n  %s\nwant prefix\n  %s\ndkimpy says %q of\n%s", chunk, ar[0], want, dk, msg)
				}
			}
			// dkimpy's own verdict on the message as we deliver it (our
			// A-R on top changes nothing for it).
			_, out := e.send(remote, daveEnv, msg, 0)
			dk, err := testkit.DkimpyVerify(out, records)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.dkimpy
			if want == "" {
				want = "pass"
			}
			if len(dk) != 1 || !strings.HasPrefix(dk[0], want) {
				t.Errorf("dkimpy says %q, want %q", dk, want)
			}
		})
	}
}

// The RFC 8463 Appendix A message (one Ed25519 and one RSA signature)
// passes in dkimpy with the records of the RFC: a check of the harness
// itself; and through the milter.
func TestInteropRFC8463(t *testing.T) {
	_, ok := testkit.Dkimpy()
	testkit.RequirePeer(t, "python3-dkim", ok)
	msg := testkit.File("rfc8463.eml")
	records := testkit.DNSRecords("rfc8463.dns")
	got, err := testkit.DkimpyVerify(msg, records)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != "pass|pass" {
		t.Errorf("dkimpy: %q, want both pass", got)
	}

	e := newEnv(t, "")
	for name, rec := range records {
		e.dns.SetTXT(name, rec)
	}
	_, out := e.send(remote, testkit.Envelope{From: "joe@football.example.com", Rcpts: []string{"suzie@shopping.example.net"}}, string(msg), 0)
	ar := testkit.Fields(out, "Authentication-Results")
	if len(ar) != 1 || strings.Count(ar[0], "dkim=pass") != 2 {
		t.Errorf("A-R %q, want two passes", ar)
	}
	if got, err := testkit.DkimpyVerify(out, records); err != nil || strings.Join(got, "|") != "pass|pass" {
		t.Errorf("dkimpy on the delivered message: %q %v", got, err)
	}
}
