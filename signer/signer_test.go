package signer

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// RFC 8463 Appendix A: signing the example message with its keys, its
// t= and its exact tag text reproduces both b= values byte for byte. Both
// RSA PKCS#1 v1.5 and Ed25519 are deterministic, so this checks header
// canonicalization, the body hash, the hashed signature field and the
// signing itself against the RFC.
func TestRFC8463Vector(t *testing.T) {
	msg := testkit.File("rfc8463.eml")
	h, body := testkit.Split(msg)
	var sigs dkim.Header
	var rest dkim.Header
	for _, f := range h {
		if strings.EqualFold(f.Name, "DKIM-Signature") {
			sigs = append(sigs, f)
		} else {
			rest = append(rest, f)
		}
	}
	keys := map[string]string{"brisbane": "rfc8463-ed25519.key", "test": "rfc8463-rsa.key"}
	for _, sf := range sigs {
		tags, err := dkim.ParseTagList(sf.Value())
		if err != nil {
			t.Fatal(err)
		}
		sel, _ := tags.Get("s")
		pk, err := keystore.ParsePrivateKey(testkit.File(keys[sel]))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := tags.Lookup("b")
		v := sf.Value()
		prefix := v[:b.Start] // the field as the signer wrote it, up to "b="
		bh, _ := tags.Get("bh")

		// The body hash first.
		hasher := dkim.NewBodyHasher(dkim.Relaxed, sha256.New(), -1)
		hasher.Write(body)
		if got := base64.StdEncoding.EncodeToString(hasher.Sum()); got != bh {
			t.Errorf("%s: bh = %s, want %s", sel, got, bh)
		}
		names := dkim.SplitColonList(mustTag(tags, "h"))
		p := Params{Key: pk.Signer, HeaderCanon: dkim.Relaxed, BodyCanon: dkim.Relaxed}
		gb, err := signPrefix(rest, p, names, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if want := mustTag(tags, "b"); dkim.StripFWS(gb) != dkim.StripFWS(want) {
			t.Errorf("%s: b=\n%s\nwant\n%s", sel, dkim.StripFWS(gb), dkim.StripFWS(want))
		}
	}
}

func mustTag(tags dkim.TagList, n string) string {
	v, _ := tags.Get(n)
	return v
}

// signMessage signs msg with params through the streaming API, feeding the
// body in chunks of chunk bytes, and returns the signed message.
func signMessage(t *testing.T, msg []byte, params []Params, chunk int) []byte {
	t.Helper()
	h, body := testkit.Split(msg)
	s, err := New(h, params)
	if err != nil {
		t.Fatal(err)
	}
	for p := body; len(p) > 0; {
		n := min(chunk, len(p))
		s.Write(p[:n])
		p = p[n:]
	}
	values, err := s.Sign()
	if err != nil {
		t.Fatal(err)
	}
	var out dkim.Header
	for _, v := range values {
		out = append(out, dkim.NewField("DKIM-Signature", v))
	}
	return testkit.Join(append(out, h...), body)
}

const plainMsg = `From: Alice <alice@example.com>
To: Bob <bob@example.net>
Subject:  Hello   there
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <1@example.com>
MIME-Version: 1.0
Content-Type: text/plain

Hi Bob,  
	tabbed line

See you.


`

// What we sign verifies with go-msgauth, an independent implementation,
// for RSA and Ed25519, both canonicalizations, any chunking.
func TestSignVerifiesWithGoMsgauth(t *testing.T) {
	rsaKey := testkit.RSAKey(2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	txt := map[string]string{}
	for sel, k := range map[string]crypto.Signer{"rsa": rsaKey, "ed": edKey} {
		kt, p, _ := dkim.EncodePublicKey(k.Public())
		txt[sel+"._domainkey.example.com"] = "v=DKIM1; k=" + kt + "; p=" + p
	}
	lookup := func(name string) ([]string, error) {
		if r, ok := txt[name]; ok {
			return []string{r}, nil
		}
		return nil, fmt.Errorf("no record for %s", name)
	}
	for _, hc := range []dkim.Canon{dkim.Simple, dkim.Relaxed} {
		for _, bc := range []dkim.Canon{dkim.Simple, dkim.Relaxed} {
			for _, chunk := range []int{1, 7, 65535} {
				var params []Params
				for sel, k := range map[string]crypto.Signer{"rsa": rsaKey, "ed": edKey} {
					params = append(params, Params{
						Domain: "example.com", Selector: sel, Key: k,
						HeaderCanon: hc, BodyCanon: bc,
						Headers:  []string{"from", "to", "subject", "date", "message-id", "cc", "mime-version", "content-type"},
						Oversign: []string{"from", "subject", "cc"},
						Time:     time.Now(), Expire: time.Hour,
					})
				}
				signed := signMessage(t, testkit.CRLF([]byte(plainMsg)), params, chunk)
				vs, err := msgauth.VerifyWithOptions(bytes.NewReader(signed), &msgauth.VerifyOptions{LookupTXT: lookup})
				if err != nil {
					t.Fatal(err)
				}
				if len(vs) != 2 {
					t.Fatalf("%d verifications", len(vs))
				}
				for _, v := range vs {
					if v.Err != nil {
						t.Errorf("c=%v/%v chunk %d: go-msgauth says %v\n%s", hc, bc, chunk, v.Err, signed)
					}
				}
			}
		}
	}
}

// Relaxed header canonicalization deletes the white space before a
// field's colon (RFC 6376 §3.4.2): a message written "Subject : …" (which
// a relay may pass on as it is) signs so that go-msgauth, which does the
// same independently, verifies it.
func TestRelaxedSpaceBeforeColon(t *testing.T) {
	key := testkit.RSAKey(2048)
	kt, p, _ := dkim.EncodePublicKey(key.Public())
	lookup := func(name string) ([]string, error) { return []string{"v=DKIM1; k=" + kt + "; p=" + p}, nil }
	msg := strings.Replace(plainMsg, "Subject:", "Subject \t:", 1)
	msg = strings.Replace(msg, "To:", "To :", 1)
	signed := signMessage(t, testkit.CRLF([]byte(msg)), []Params{{
		Domain: "example.com", Selector: "s", Key: key, HeaderCanon: dkim.Relaxed, BodyCanon: dkim.Relaxed,
		Headers: []string{"from", "to", "subject"}, Time: time.Now(),
	}}, 65535)
	if !bytes.Contains(signed, []byte("\r\nSubject \t:  Hello")) {
		t.Fatalf("the field was not kept as written:\n%s", signed)
	}
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(signed), &msgauth.VerifyOptions{LookupTXT: lookup})
	if err != nil || len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("go-msgauth: %v %+v\n%s", err, vs, signed)
	}
}

// The signature field: tag order, h= with oversigned names listed once
// more than they occur, absent names left out, x = t + expire, lines
// folded under 78 columns.
func TestSignatureField(t *testing.T) {
	key := testkit.RSAKey(2048)
	tm := time.Unix(1795000000, 0)
	params := []Params{{
		Domain: "example.com", Selector: "s1", Identity: "@example.com", Key: key,
		HeaderCanon: dkim.Relaxed, BodyCanon: dkim.Relaxed,
		Headers:  []string{"from", "to", "cc", "subject", "reply-to"},
		Oversign: []string{"from", "cc"},
		Time:     tm, Expire: 168 * time.Hour,
	}}
	signed := signMessage(t, testkit.CRLF([]byte(plainMsg)), params, 65535)
	h, _ := testkit.Split(signed)
	v := h[0].Value()
	for _, l := range strings.Split(v, "\r\n") {
		if len(l) > 78 {
			t.Errorf("line longer than 78: %q", l)
		}
	}
	if !strings.HasPrefix(v, " v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;\r\n\ti=@example.com;") {
		t.Errorf("unexpected start: %q", v)
	}
	tags, err := dkim.ParseTagList(v)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, tg := range tags {
		order = append(order, tg.Name)
	}
	if got := strings.Join(order, " "); got != "v a c d i s t x h bh b" {
		t.Errorf("tag order %q", got)
	}
	if got := dkim.StripFWS(mustTag(tags, "h")); got != "from:from:to:cc:subject" {
		t.Errorf("h=%s, want from:from:to:cc:subject", got)
	}
	if mustTag(tags, "t") != "1795000000" || mustTag(tags, "x") != fmt.Sprint(1795000000+168*3600) {
		t.Errorf("t=%s x=%s", mustTag(tags, "t"), mustTag(tags, "x"))
	}
	if !regexp.MustCompile(`^[A-Za-z0-9+/=]+$`).MatchString(dkim.StripFWS(mustTag(tags, "b"))) {
		t.Error("b= is not base64")
	}
}

func TestNoExpire(t *testing.T) {
	params := []Params{{Domain: "example.com", Selector: "s1", Key: testkit.RSAKey(2048), Headers: []string{"from"}}}
	signed := signMessage(t, testkit.CRLF([]byte(plainMsg)), params, 65535)
	h, _ := testkit.Split(signed)
	tags, _ := dkim.ParseTagList(h[0].Value())
	if _, ok := tags.Get("x"); ok {
		t.Error("x= present with Expire 0")
	}
}

func TestSignErrors(t *testing.T) {
	h, _ := testkit.Split(testkit.CRLF([]byte("To: b@example.net\n\nbody\n")))
	if _, err := New(h, []Params{{Domain: "example.com", Selector: "s", Key: testkit.RSAKey(2048)}}); !errors.Is(err, ErrNoFrom) {
		t.Errorf("no From: err = %v", err)
	}
	h, _ = testkit.Split(testkit.CRLF([]byte(plainMsg)))
	if _, err := New(h, []Params{{Domain: "", Selector: "s", Key: testkit.RSAKey(2048)}}); err == nil {
		t.Error("empty domain accepted")
	}
	// Bytes that would end a tag or the field are refused, whoever chose
	// d= and s= (a From domain stands in for '%').
	for _, p := range []Params{{Domain: "example.com;l=0", Selector: "s"}, {Domain: "example.com", Selector: "s\r\n x"}, {Domain: "a b", Selector: "s"}} {
		p.Key = testkit.RSAKey(2048)
		if _, err := New(h, []Params{p}); err == nil {
			t.Errorf("d=%q s=%q accepted", p.Domain, p.Selector)
		}
	}
}

// With a Gate, signing holds one token while it signs and gives it back.
func TestGate(t *testing.T) {
	gate := make(chan struct{}, 1)
	params := []Params{{Domain: "example.com", Selector: "s1", Key: testkit.RSAKey(2048), Headers: []string{"from"}, Gate: gate}}
	done := make(chan struct{})
	gate <- struct{}{} // taken: the signer must wait
	go func() {
		signMessage(t, testkit.CRLF([]byte(plainMsg)), params, 65535)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("signed without a token")
	case <-time.After(200 * time.Millisecond):
		// Still waiting for the token, as it should.
	}
	<-gate
	<-done
	if len(gate) != 0 {
		t.Error("the token was not given back")
	}
}
