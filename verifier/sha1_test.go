package verifier

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// rsa-sha1 signatures are verified like any other (RFC 6376 §6.1): one
// that verifies is policy, never pass (RFC 8301 §3.1), one that does not
// is fail, so that actions.bad_signature applies to it as to a broken
// rsa-sha256 one. Signed by testkit.SignRaw and by dkimpy, another
// implementation, with both canonicalizations and dkimpy's default mix.
func TestRSASHA1(t *testing.T) {
	k := testkit.RSAKey(2048)
	record := testkit.KeyRecord(k, "")
	type signer struct {
		name string
		sign func(t *testing.T, canon string) string
	}
	signers := []signer{
		{"testkit", func(t *testing.T, canon string) string {
			return testkit.Sign(t, baseMsg, "v=1; a=rsa-sha1; c="+canon+"; d=example.com; s=sel; h=from:to:subject:date:message-id", k)
		}},
		{"dkimpy", func(t *testing.T, canon string) string {
			path, ok := testkit.Dkimpy()
			testkit.RequirePeer(t, "python3-dkim", ok)
			out, err := testkit.DkimpySign(testkit.CRLF([]byte(baseMsg)), testkit.DkimpySignOptions{
				Selector: "sel", Domain: "example.com", Key: k, Algorithm: "rsa-sha1", Canon: canon,
				Headers: []string{"from", "to", "subject", "date", "message-id"},
			})
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if !strings.Contains(string(out), "a=rsa-sha1") {
				t.Fatalf("dkimpy did not sign with rsa-sha1:\n%s", out)
			}
			return string(out)
		}},
	}
	mutations := []struct {
		name   string
		change func(string) string
		result Result
		err    error
	}{
		{"intact", func(m string) string { return m }, Policy, dkim.ErrSHA1},
		{"body changed", func(m string) string { return strings.Replace(m, "attached", "attached!", 1) }, Fail, ErrBodyHash},
		{"footer appended", func(m string) string { return m + "--\r\nSent from the list\r\n" }, Fail, ErrBodyHash},
		{"header changed", func(m string) string { return strings.Replace(m, "Quarterly", "Annual", 1) }, Fail, ErrSignature},
		{"b= changed", func(m string) string { return flipB(t, m) }, Fail, ErrSignature},
	}
	// dkimpy writes t= with the wall clock.
	v := New(Options{Resolver: &dns.Fake{TXT: map[string][]string{"sel._domainkey.example.com": {record}}}})
	for _, sg := range signers {
		for _, canon := range []string{"relaxed/relaxed", "simple/simple", "relaxed/simple"} {
			t.Run(sg.name+"/"+canon, func(t *testing.T) {
				signed := string(testkit.CRLF([]byte(sg.sign(t, canon))))
				for _, mu := range mutations {
					for _, chunk := range []int{1, 65535} {
						got := verify(t, v, mu.change(signed), chunk)
						if len(got) != 1 || got[0].Result != mu.result || !errors.Is(got[0].Err, mu.err) {
							t.Fatalf("%s, chunk %d: %s %v, want %s %v", mu.name, chunk, got[0].Result, got[0].Err, mu.result, mu.err)
						}
						if got[0].KeyBits != 2048 || got[0].Algorithm != "rsa-sha1" {
							t.Errorf("%s: key bits %d, header.a %q", mu.name, got[0].KeyBits, got[0].Algorithm)
						}
					}
				}
			})
		}
	}
}

// flipB changes one base64 digit of the top signature's b= value.
func flipB(t *testing.T, msg string) string {
	t.Helper()
	i := strings.Index(msg, "b=")
	for i >= 0 && msg[i-1] == 'h' { // bh=
		j := strings.Index(msg[i+2:], "b=")
		if j < 0 {
			i = -1
			break
		}
		i += 2 + j
	}
	if i < 0 {
		t.Fatal("no b=")
	}
	p := i + 10
	for !isAlnum(msg[p]) { // b= may be folded: change a digit, not FWS
		p++
	}
	c := byte('A')
	if msg[p] == 'A' {
		c = 'B'
	}
	return msg[:p] + string(c) + msg[p+1:]
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Everything but the signature check goes as for rsa-sha256: the key
// lookup, the key record, the key size, the body length.
func TestRSASHA1Outcomes(t *testing.T) {
	k, short := testkit.RSAKey(2048), testkit.RSAKey(1024)
	name := "sel._domainkey.example.com"
	tags := "v=1; a=rsa-sha1; c=relaxed/relaxed; d=example.com; s=sel; h=from:subject"
	signed := testkit.Sign(t, baseMsg, tags, k)
	tests := []struct {
		name    string
		msg     string
		txt     []string
		err     error
		minBits int
		want    Result
		reason  string
	}{
		{name: "no key", msg: signed, want: PermError, reason: "no key for signature"},
		{name: "servfail", msg: signed, txt: []string{}, err: &net.DNSError{Err: "SERVFAIL", IsTemporary: true}, want: TempError, reason: "DNS server failure"},
		{name: "revoked", msg: signed, txt: []string{"v=DKIM1; k=rsa; p="}, want: PermError, reason: "key revoked"},
		{name: "key h=sha256", msg: signed, txt: []string{testkit.KeyRecord(k, "h=sha256; ")}, want: PermError, reason: "h=sha256 does not allow sha1"},
		{name: "key h=sha1", msg: signed, txt: []string{testkit.KeyRecord(k, "h=sha1; ")}, want: Policy, reason: "rsa-sha1 is not accepted"},
		{name: "ed25519 key", msg: signed, txt: []string{"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}, want: PermError, reason: "k=ed25519 does not match a=rsa-sha1"},
		{name: "short key", msg: testkit.Sign(t, baseMsg, tags, short), txt: []string{testkit.KeyRecord(short, "")}, minBits: 2048, want: Policy, reason: "key too short (1024 bits)"},
		{name: "short key, broken", msg: strings.Replace(testkit.Sign(t, baseMsg, tags, short), "Quarterly", "Annual", 1), txt: []string{testkit.KeyRecord(short, "")}, minBits: 2048, want: Policy, reason: "key too short"},
		{name: "two keys, second right", msg: signed, txt: []string{testkit.KeyRecord(short, ""), testkit.KeyRecord(k, "")}, want: Policy, reason: "rsa-sha1 is not accepted"},
		{name: "l= shorter than the body", msg: testkit.Sign(t, baseMsg, tags+"; l=12", k), txt: []string{testkit.KeyRecord(k, "")}, want: Policy, reason: "rsa-sha1 is not accepted"},
		{name: "l= longer than the body", msg: testkit.Sign(t, baseMsg, tags+"; l=4400", k), txt: []string{testkit.KeyRecord(k, "")}, want: Fail, reason: "l= is longer than the body"},
		{name: "expired", msg: testkit.Sign(t, baseMsg, tags+"; x=1700000000", k), txt: []string{testkit.KeyRecord(k, "")}, want: PermError, reason: "signature expired"},
		{name: "RSA-SHA1 in capitals", msg: testkit.Sign(t, baseMsg, strings.Replace(tags, "rsa-sha1", "RSA-SHA1", 1), k), txt: []string{testkit.KeyRecord(k, "")}, want: Policy, reason: "rsa-sha1 is not accepted"},
		{name: "ed25519-sha1 is no algorithm", msg: strings.Replace(signed, "a=rsa-sha1", "a=ed25519-sha1", 1), txt: []string{testkit.KeyRecord(k, "")}, want: PermError, reason: "unknown algorithm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &dns.Fake{TXT: map[string][]string{}}
			if tt.txt != nil {
				r.TXT[name] = tt.txt
			}
			if tt.err != nil {
				r.Err = map[string]error{name: tt.err}
			}
			v := New(Options{Resolver: r, Now: func() time.Time { return now }, MinRSABits: tt.minBits})
			got := verify(t, v, tt.msg, 65535)
			if len(got) != 1 || got[0].Result != tt.want || !strings.Contains(got[0].Reason(), tt.reason) {
				t.Fatalf("%s %q, want %s %q", got[0].Result, got[0].Reason(), tt.want, tt.reason)
			}
		})
	}
}

// An rsa-sha1 and an rsa-sha256 signature over the same body with the
// same c= need a hash each: the SHA-1 one must not be compared with the
// SHA-256 hasher's sum, nor the other way round.
func TestRSASHA1BesideSHA256(t *testing.T) {
	k := testkit.RSAKey(2048)
	tags := "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; h=from:subject"
	msg := testkit.Sign(t, testkit.Sign(t, baseMsg, tags, k), strings.Replace(tags, "rsa-sha256", "rsa-sha1", 1), k)
	msg = testkit.Sign(t, msg, tags+"; l=12", k)
	v := New(Options{Resolver: &dns.Fake{TXT: map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(k, "")}}}, Now: func() time.Time { return now }})
	for _, chunk := range []int{1, 7, 65535} {
		got := verify(t, v, msg, chunk)
		if len(got) != 3 || got[0].Result != Policy || !errors.Is(got[0].Err, ErrUnsignedContent) ||
			got[1].Result != Policy || !errors.Is(got[1].Err, dkim.ErrSHA1) || got[2].Result != Pass {
			for _, g := range got {
				t.Errorf("chunk %d: %s %s %v", chunk, g.Algorithm, g.Result, g.Err)
			}
		}
	}
}
