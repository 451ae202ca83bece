package milter

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"strconv"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// The signing oracle, From by From: a client that is neither internal nor
// authenticated is never signed for, however the From field spells our
// domain; a trusted one is signed only for the address, never for a
// display name or comment that merely mentions our domain.
func TestNeverSignFromVariants(t *testing.T) {
	e := newEnv(t, "")
	froms := []struct {
		from          string
		trustedSigned bool // signed for a trusted client
	}{
		{"From: Alice <alice@example.com>", true},
		{"From: ALICE@EXAMPLE.COM", true},
		{"From: =?utf-8?q?Alice_=C3=A9?= <alice@example.com>", true},
		{"From: Alice <alice@example.com>\nFrom: Mallory <mallory@evil.example>", true},
		{"From: Mallory <mallory@evil.example>\nFrom: Alice <alice@example.com>", false},
		{`From: "alice@example.com" <mallory@evil.example>`, false},
		{"From: alice@example.com <mallory@evil.example>", false},
		{"From: mallory@evil.example (alice@example.com)", false},
		{"From: =?utf-8?q?alice=40example.com?= <mallory@evil.example>", false},
		{"From: <alice@example.com.evil.example>", false},
	}
	for _, tt := range froms {
		msg := strings.Replace(outbound, "From: Alice <alice@example.com>", tt.from, 1)
		for _, c := range []struct {
			ip  string
			env testkit.Envelope
		}{{remote, aliceEnv}, {"11.0.0.1", daveEnv}, {"2001:db8:2::1", aliceEnv}, {"127.0.0.1", aliceEnv}} {
			r, _ := e.send(c.ip, c.env, msg, 0)
			signed := false
			for _, m := range r.Mods {
				signed = signed || m.HeaderName == "DKIM-Signature"
			}
			if want := c.ip == "127.0.0.1" && tt.trustedSigned; signed != want {
				t.Errorf("%q from %s: signed %v, want %v", tt.from, c.ip, signed, want)
			}
		}
	}
}

// RFC 8601 §5: an A-R field that claims our authserv-id is removed however
// it is written; one that only mentions it (another host's, ours in a
// comment) is kept.
func TestForgedAuthResultsVariants(t *testing.T) {
	e := newEnv(t, "")
	forged := []string{
		"Authentication-Results: mx.example.com; dkim=pass",
		"Authentication-Results:\n mx.example.com;\n\tdkim=pass header.d=bank.example",
		"Authentication-Results:\tmx.example.com;dkim=pass",
		"Authentication-Results:mx.example.com;dkim=pass",
		"Authentication-Results: \"mx.example.com\"; dkim=pass",
		"Authentication-Results: \"mx.ex\\ample.com\"; dkim=pass",
		"Authentication-Results: mx.example.com 1; dkim=pass",
		"Authentication-Results: (comment (nested; \\) one)) mx.example.com (c); dkim=pass",
		"Authentication-Results: MX.Example.COM; dkim=pass",
		"Authentication-Results: mx.example.com.; dkim=pass",
		"Authentication-Results: mx.example.com/4Xq1; dkim=pass",
		"Authentication-Results: mx.example.com",
		"AUTHENTICATION-RESULTS: mx.example.com; dkim=pass",
		"authentication-results: \t mx.example.com\t;\tdkim=pass",
	}
	kept := []string{
		"Authentication-Results: mx.example.com.evil.example; dkim=pass",
		"Authentication-Results: other.example; dkim=pass",
		"Authentication-Results: (mx.example.com) other.example; dkim=pass",
		"Authentication-Results: evil.example; dkim=pass header.d=mx.example.com",
	}
	var msg strings.Builder
	for i := range forged {
		msg.WriteString(forged[i] + "\n")
		if i < len(kept) {
			msg.WriteString(kept[i] + "\n")
		}
	}
	r, out := e.send(remote, daveEnv, msg.String()+inbound, 0)
	if n := len(testkit.Mods(r, gomilter.ActChangeHeader)); n != len(forged) {
		t.Errorf("%d fields deleted, want %d", n, len(forged))
	}
	ar := testkit.Fields(out, "Authentication-Results")
	if len(ar) != len(kept)+1 || ar[0] != "mx.example.com; dkim=none" {
		t.Fatalf("delivered A-R:\n%s", strings.Join(ar, "\n"))
	}
	for i, k := range kept {
		if want := strings.TrimSpace(strings.SplitN(k, ":", 2)[1]); ar[i+1] != want {
			t.Errorf("kept field %d is %q, want %q", i, ar[i+1], want)
		}
	}
}

// A From field the signature does not cover never passes: one added above
// the signed one, in any case, or below it; with and without oversigning.
func TestSecondFromNeverPasses(t *testing.T) {
	e := newEnv(t, "")
	e.setVerifier(func(o *verifier.Options) { o.Now = fixedClock(signTime) })
	k := testkit.RSAKey(2048)
	e.dns.SetTXT("good._domainkey.sender.example", testkit.KeyRecord(k, ""))
	for _, h := range []string{"from:subject", "from:from:subject"} {
		good := testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d=sender.example; s=good; h="+h, k)
		if ar := e.inboundAR(t, good); !strings.Contains(ar, "dkim=pass") {
			t.Fatalf("h=%s: the untouched message does not pass: %s", h, ar)
		}
		for _, mutate := range []func(string) string{
			func(m string) string { return "From: CEO <ceo@sender.example>\r\n" + m },
			func(m string) string { return "fROM: CEO <ceo@sender.example>\r\n" + m },
			func(m string) string {
				return strings.Replace(m, "To: Alice", "From: CEO <ceo@sender.example>\r\nTo: Alice", 1)
			},
			func(m string) string {
				return strings.Replace(m, "\r\n\r\n", "\r\nFrom: CEO <ceo@sender.example>\r\n\r\n", 1)
			},
		} {
			if ar := e.inboundAR(t, mutate(good)); strings.Contains(ar, "dkim=pass") {
				t.Errorf("h=%s: a second From passes: %s", h, ar)
			}
		}
	}
}

// inboundAR sends msg from a remote client and returns the A-R stamped.
func (e *env) inboundAR(t *testing.T, msg string) string {
	t.Helper()
	_, out := e.on(t).send(remote, daveEnv, msg, 0)
	ar := testkit.Fields(out, "Authentication-Results")
	if len(ar) != 1 {
		t.Fatalf("%d A-R fields", len(ar))
	}
	return ar[0]
}

// rsa-sha1 and short keys never pass, even when the signature is good
// (crypto/rsa will not sign with 512 bits, so weakRSA does); nor does l=
// with content after it, nor an l= longer than the body.
func TestWeakSignaturesNeverPass(t *testing.T) {
	e := newEnv(t, strings.Replace(baseConfig, "[dns]\n", "[verify]\nmin_rsa_bits = 2048\n[dns]\n", 1))
	e.setVerifier(func(o *verifier.Options) { o.Now = fixedClock(signTime) })
	k2048, k1024 := testkit.RSAKey(2048), testkit.RSAKey(1024)
	block, _ := pem.Decode(testkit.File("rsa512.key"))
	k512, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for sel, k := range map[string]*rsa.PrivateKey{"good": k2048, "k1024": k1024, "k512": k512} {
		e.dns.SetTXT(sel+"._domainkey.sender.example", testkit.KeyRecord(k, ""))
	}
	tags := "v=1; a=rsa-sha256; d=sender.example; s=%s; h=from:subject"
	with := func(sel, extra string) string { return strings.Replace(tags, "%s", sel, 1) + extra }
	bodyLen := len(testkit.CRLF([]byte(strings.SplitN(inbound, "\n\n", 2)[1])))
	tests := []struct{ name, msg, want string }{
		{"rsa-sha1, good signature", testkit.Sign(t, inbound, strings.Replace(with("good", ""), "rsa-sha256", "rsa-sha1", 1), k2048), `dkim=policy reason="rsa-sha1 is not accepted (RFC 8301)"`},
		{"RSA-SHA1 in capitals", testkit.Sign(t, inbound, strings.Replace(with("good", ""), "rsa-sha256", "RSA-SHA1", 1), k2048), "dkim=policy"},
		{"512-bit key", testkit.Sign(t, inbound, with("k512", ""), weakRSA{k512}), `dkim=policy reason="key too short (512 bits)"`},
		{"1024-bit key under min_rsa_bits 2048", testkit.Sign(t, inbound, with("k1024", ""), k1024), `dkim=policy reason="key too short (1024 bits)"`},
		{"l= the whole body, then more", testkit.Sign(t, inbound, with("good", "; l="+strconv.Itoa(bodyLen)), k2048) + "Click here: http://evil.example/\r\n", `dkim=policy reason="unsigned content after l="`},
		{"l=0, then a body", testkit.Sign(t, strings.SplitN(inbound, "\n\n", 2)[0]+"\n\n", with("good", "; l=0"), k2048) + "Click here\r\n", `dkim=policy reason="unsigned content after l="`},
		{"l= longer than the body", strings.Replace(testkit.Sign(t, inbound, with("good", "; l="+strconv.Itoa(bodyLen)), k2048), "Dave\r\n", "", 1), `dkim=fail reason="l= is longer than the body"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ar := e.inboundAR(t, tt.msg)
			if !strings.Contains(ar, tt.want) || strings.Contains(ar, "dkim=pass") {
				t.Errorf("A-R %s, want %s", ar, tt.want)
			}
		})
	}
}

// weakRSA signs with keys crypto/rsa refuses (under 1024 bits), by the
// textbook (RFC 8017 §8.2.1 with SHA-256): what a careless signer
// elsewhere can still send us.
type weakRSA struct{ k *rsa.PrivateKey }

func (w weakRSA) Public() crypto.PublicKey { return &w.k.PublicKey }

func (w weakRSA) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	sha256Info := []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
	n := (w.k.N.BitLen() + 7) / 8
	em := make([]byte, n) // 00 01 FF..FF 00 DigestInfo digest
	em[1] = 1
	t := append(sha256Info, digest...)
	for i := 2; i < n-len(t)-1; i++ {
		em[i] = 0xff
	}
	copy(em[n-len(t):], t)
	sig := new(big.Int).Exp(new(big.Int).SetBytes(em), w.k.D, w.k.N)
	return sig.FillBytes(make([]byte, n)), nil
}

// Forged A-R fields are removed whatever we do with the message: in mode
// "s" (nothing verified) and when signing failed and sign_error = accept
// let it go unsigned. Regression: only the sign and verify paths removed
// them.
func TestForgedAuthResultsRemovedInEveryPath(t *testing.T) {
	forged := "Authentication-Results: mx.example.com; dkim=pass header.d=bank.example\n"
	for _, tt := range []struct {
		name, cfg, ip string
		env           testkit.Envelope
		msg           string
	}{
		{"mode s, inbound", "mode = \"s\"\n" + baseConfig, remote, daveEnv, forged + inbound},
		{"sign error, accept", baseConfig + "[actions]\nsign_error = \"accept\"\n[limits]\nmax_headers = 50\n", remote,
			testkit.Envelope{From: "alice@example.com", AuthType: "PLAIN", AuthAuthen: "alice"}, forged + padded(outbound, 60, "X-Pad-%d: x")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg)
			r, out := e.send(tt.ip, tt.env, tt.msg, 0)
			if r.Action.Code != gomilter.ActContinue {
				t.Fatalf("answer %+v", r.Action)
			}
			for _, ar := range testkit.Fields(out, "Authentication-Results") {
				if strings.Contains(ar, "bank.example") {
					t.Errorf("forged A-R delivered: %s", ar)
				}
			}
		})
	}
}

// Field names are compared as Postfix compares them, ASCII only: with
// Unicode folding, "Authentication-Re\u017fults" counted as an A-R field,
// shifted our ChangeHeader indexes against Postfix's, and the deletion
// hit another host's field while the forged one stayed. Regression.
func TestForgedAuthResultsIndexesASCII(t *testing.T) {
	e := newEnv(t, "")
	msg := "Authentication-Re\u017fults: mx.example.com; dkim=pass\n" +
		"Authentication-Results: other.example; dkim=pass\n" +
		"Authentication-Results: mx.example.com; dkim=pass\n" + inbound
	r, _ := e.send(remote, daveEnv, msg, 0)
	ch := testkit.Mods(r, gomilter.ActChangeHeader)
	if len(ch) != 1 || ch[0].HeaderIndex != 2 {
		t.Errorf("deleted %+v, want Authentication-Results #2 alone", ch)
	}
}
