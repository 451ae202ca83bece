package verifier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

var now = time.Unix(1795000000, 0)

const baseMsg = `From: Alice <alice@example.com>
To: Bob <bob@example.net>
Subject: Quarterly numbers
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <q4@example.com>

Hello Bob,

the numbers are attached.
`

func verify(t *testing.T, v *Verifier, msg string, chunk int) []*Verification {
	t.Helper()
	h, body := testkit.Split([]byte(msg))
	m := v.Begin(context.Background(), h)
	for p := body; len(p) > 0; {
		n := min(chunk, len(p))
		m.Write(p[:n])
		p = p[n:]
	}
	return m.Finish()
}

// One case per row of the verification-result table, doc/results.md (and a few
// more), each a mutation of one good message.
func TestResultTable(t *testing.T) {
	rsa2048 := testkit.RSAKey(2048)
	rsa1024 := testkit.RSAKey(1024)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	good := testkit.KeyRecord(rsa2048, "")
	std := "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; t=1795000000; x=1795604800; h=from:to:subject:date:message-id"
	signed := testkit.Sign(t, baseMsg, std, rsa2048)

	tests := []struct {
		name    string
		msg     string
		txt     map[string][]string
		errs    map[string]error
		now     time.Time
		minBits int
		max     int
		want    []Result
		reason  string // substring of the first result's reason
		comment string // the first result's comment
	}{
		{name: "pass rsa", msg: signed, want: []Result{Pass}, comment: "2048-bit rsa key"},
		{name: "pass ed25519", msg: testkit.Sign(t, baseMsg, strings.Replace(std, "rsa-sha256", "ed25519-sha256", 1), ed),
			txt: map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(ed, "")}}, want: []Result{Pass}, comment: "ed25519 key"},
		{name: "pass simple/simple", msg: testkit.Sign(t, baseMsg, strings.Replace(std, "relaxed/relaxed", "simple/simple", 1), rsa2048), want: []Result{Pass}},
		{name: "pass no c=", msg: testkit.Sign(t, baseMsg, strings.Replace(std, " c=relaxed/relaxed;", "", 1), rsa2048), want: []Result{Pass}},
		{name: "body altered", msg: strings.Replace(signed, "attached", "attached!", 1), want: []Result{Fail}, reason: "body hash did not verify"},
		{name: "footer appended", msg: signed + "--\r\nSent from the list\r\n", want: []Result{Fail}, reason: "body hash did not verify"},
		{name: "trailing blank lines ignored", msg: signed + "\r\n\r\n", want: []Result{Pass}},
		{name: "header altered", msg: strings.Replace(signed, "Quarterly", "Annual", 1), want: []Result{Fail}, reason: "signature did not verify"},
		{name: "header refolded, relaxed", msg: strings.Replace(signed, "Subject: Quarterly numbers", "Subject:   Quarterly\r\n  numbers  ", 1), want: []Result{Pass}},
		{name: "nxdomain", msg: signed, txt: map[string][]string{}, want: []Result{PermError}, reason: "no key for signature"},
		{name: "nodata", msg: signed, txt: map[string][]string{"sel._domainkey.example.com": {}}, want: []Result{PermError}, reason: "no key for signature"},
		{name: "revoked", msg: signed, txt: map[string][]string{"sel._domainkey.example.com": {"v=DKIM1; k=rsa; p="}}, want: []Result{PermError}, reason: "key revoked"},
		{name: "bad base64 key", msg: signed, txt: map[string][]string{"sel._domainkey.example.com": {"v=DKIM1; p=@@@"}}, want: []Result{PermError}, reason: "bad base64"},
		{name: "key v=DKIM2", msg: signed, txt: map[string][]string{"sel._domainkey.example.com": {strings.Replace(good, "DKIM1", "DKIM2", 1)}}, want: []Result{PermError}, reason: "v=DKIM2"},
		{name: "key type mismatch", msg: signed, txt: map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(ed, "")}}, want: []Result{PermError}, reason: "k=ed25519 does not match a=rsa-sha256"},
		{name: "key h=sha1", msg: signed, txt: map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(rsa2048, "h=sha1; ")}}, want: []Result{PermError}, reason: "does not allow sha256"},
		{name: "key s=other", msg: signed, txt: map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(rsa2048, "s=other; ")}}, want: []Result{PermError}, reason: "not for email"},
		{name: "key t=s, i= subdomain", msg: testkit.Sign(t, baseMsg, std+"; i=@news.example.com", rsa2048),
			txt: map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(rsa2048, "t=s; ")}}, want: []Result{PermError}, reason: "t=s"},
		{name: "missing s=", msg: testkit.Sign(t, baseMsg, strings.Replace(std, " s=sel;", "", 1), rsa2048), want: []Result{PermError}, reason: "missing required tag s="},
		{name: "duplicate tag", msg: strings.Replace(signed, "t=1795000000;", "t=1795000000; t=1795000000;", 1), want: []Result{PermError}, reason: "duplicate tag t="},
		{name: "v=2", msg: testkit.Sign(t, baseMsg, strings.Replace(std, "v=1", "v=2", 1), rsa2048), want: []Result{PermError}, reason: "unsupported signature version"},
		{name: "unknown a=", msg: testkit.Sign(t, baseMsg, strings.Replace(std, "rsa-sha256", "rsa-sha512", 1), rsa2048), want: []Result{PermError}, reason: "unknown algorithm"},
		{name: "unknown c=", msg: strings.Replace(signed, "relaxed/relaxed", "relaxed/fancy", 1), want: []Result{PermError}, reason: "unknown canonicalization"},
		{name: "i= outside d=", msg: testkit.Sign(t, baseMsg, std+"; i=joe@example.org", rsa2048), want: []Result{PermError}, reason: "not d=example.com"},
		{name: "i= subdomain ok", msg: testkit.Sign(t, baseMsg, std+"; i=joe@News.Example.COM", rsa2048), want: []Result{Pass}},
		{name: "h= without From", msg: testkit.Sign(t, baseMsg, strings.Replace(std, "h=from:", "h=", 1), rsa2048), want: []Result{PermError}, reason: "From header not signed"},
		{name: "bad base64 b=", msg: strings.Replace(signed, "; b=", "; b=!!", 1), want: []Result{PermError}, reason: "bad base64 in b="},
		{name: "expired", msg: signed, now: now.Add(8 * 24 * time.Hour), want: []Result{PermError}, reason: "signature expired"},
		{name: "expired within skew", msg: signed, now: time.Unix(1795604800+200, 0), want: []Result{Pass}},
		{name: "t= in the future", msg: signed, now: now.Add(-time.Hour), want: []Result{PermError}, reason: "timestamp in the future"},
		{name: "t= in the future within skew", msg: signed, now: now.Add(-4 * time.Minute), want: []Result{Pass}},
		{name: "x= before t=", msg: testkit.Sign(t, baseMsg, strings.Replace(std, "x=1795604800", "x=1794000000", 1), rsa2048), want: []Result{PermError}, reason: "x= is not after t="},
		{name: "dns timeout", msg: signed, errs: map[string]error{"sel._domainkey.example.com": dns.ErrHang}, want: []Result{TempError}, reason: "DNS timeout"},
		// The resolver's own timeout, answered at once: the message's bound
		// (200ms here) is not what decides.
		{name: "resolver timeout", msg: signed, errs: map[string]error{"sel._domainkey.example.com": &net.DNSError{Err: "timeout after 5s", IsTimeout: true, IsTemporary: true}},
			want: []Result{TempError}, reason: "DNS timeout"},
		{name: "lookup deadline", msg: signed, errs: map[string]error{"sel._domainkey.example.com": fmt.Errorf("lookup: %w", context.DeadlineExceeded)},
			want: []Result{TempError}, reason: "DNS timeout"},
		{name: "lookup error of no class", msg: signed, errs: map[string]error{"sel._domainkey.example.com": errors.New("connection refused")},
			want: []Result{TempError}, reason: "DNS server failure"},
		{name: "servfail", msg: signed, errs: map[string]error{"sel._domainkey.example.com": &net.DNSError{Err: "SERVFAIL", IsTemporary: true}}, want: []Result{TempError}, reason: "DNS server failure"},
		{name: "key too short", msg: testkit.Sign(t, baseMsg, std, rsa1024), txt: map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(rsa1024, "")}},
			minBits: 2048, want: []Result{Policy}, reason: "key too short (1024 bits)"},
		{name: "1024 ok by default", msg: testkit.Sign(t, baseMsg, std, rsa1024), txt: map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(rsa1024, "")}},
			want: []Result{Pass}, comment: "1024-bit rsa key"},
		{name: "rsa-sha1", msg: testkit.Sign(t, baseMsg, strings.Replace(std, "rsa-sha256", "rsa-sha1", 1), rsa2048), want: []Result{Policy}, reason: "rsa-sha1 is not accepted"},
		{name: "rsa-sha1, broken", msg: strings.Replace(testkit.Sign(t, baseMsg, strings.Replace(std, "rsa-sha256", "rsa-sha1", 1), rsa2048), "Quarterly", "Annual", 1),
			want: []Result{Fail}, reason: "signature did not verify"},
		{name: "a=rsa-sha1 on an rsa-sha256 signature", msg: strings.Replace(signed, "rsa-sha256", "rsa-sha1", 1), want: []Result{Fail}, reason: "body hash did not verify"},
		{name: "l= shorter than body", msg: testkit.Sign(t, baseMsg, std+"; l=12", rsa2048), want: []Result{Policy}, reason: "unsigned content after l="},
		{name: "l= whole body", msg: testkit.Sign(t, baseMsg, std+"; l=41", rsa2048), want: []Result{Pass}},
		{name: "l= longer than body", msg: testkit.Sign(t, baseMsg, std+"; l=4400", rsa2048), want: []Result{Fail}, reason: "l= is longer than the body"},
		{name: "From added above", msg: "From: Mallory <ceo@example.com>\r\n" + signed, want: []Result{Policy}, reason: "unsigned From header"},
		{name: "From added above, oversigned", msg: "From: Mallory <ceo@example.com>\r\n" + testkit.Sign(t, baseMsg, strings.Replace(std, "h=from:", "h=from:from:", 1), rsa2048),
			want: []Result{Fail}, reason: "signature did not verify"},
		{name: "testing key", msg: strings.Replace(signed, "Quarterly", "Annual", 1), txt: map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(rsa2048, "t=y; ")}},
			want: []Result{Fail}, comment: "2048-bit rsa key; testing key"},
		{name: "spf record beside the key", msg: signed, txt: map[string][]string{"sel._domainkey.example.com": {"v=spf1 -all", good}}, want: []Result{Pass}},
		{name: "two keys, second right", msg: signed, txt: map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(rsa1024, ""), good}}, want: []Result{Pass}},
		{name: "only a non-key record", msg: signed, txt: map[string][]string{"sel._domainkey.example.com": {"hello"}}, want: []Result{PermError}, reason: "not a DKIM key record"},
		{name: "too many signatures", msg: testkit.Sign(t, testkit.Sign(t, signed, std, rsa2048), std, rsa2048), max: 2,
			want: []Result{Pass, Pass, Neutral}},
		{name: "unsigned", msg: baseMsg, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txt := tt.txt
			if txt == nil {
				txt = map[string][]string{"sel._domainkey.example.com": {good}}
			}
			clock := tt.now
			if clock.IsZero() {
				clock = now
			}
			v := New(Options{
				Resolver: &dns.Fake{TXT: txt, Err: tt.errs, TTL: time.Minute}, Now: func() time.Time { return clock },
				MinRSABits: tt.minBits, MaxSignatures: tt.max, Timeout: 200 * time.Millisecond,
			})
			for _, chunk := range []int{1, 3, 65535} {
				got := verify(t, v, string(testkit.CRLF([]byte(tt.msg))), chunk)
				if len(got) != len(tt.want) {
					t.Fatalf("chunk %d: %d results, want %d", chunk, len(got), len(tt.want))
				}
				for i, w := range tt.want {
					if got[i].Result != w {
						t.Errorf("chunk %d: result[%d] = %s (%v), want %s", chunk, i, got[i].Result, got[i].Err, w)
					}
				}
				for _, v := range got {
					// Metrics export every possible pair at zero.
					if rc := (ResultClass{v.Result, ReasonClass(v.Err)}); !slices.Contains(ResultClasses(), rc) {
						t.Errorf("chunk %d: %+v is not in ResultClasses", chunk, rc)
					}
				}
				if len(got) == 0 {
					continue
				}
				if !strings.Contains(got[0].Reason(), tt.reason) {
					t.Errorf("reason %q, want it to contain %q", got[0].Reason(), tt.reason)
				}
				if tt.comment != "" && got[0].Comment() != tt.comment {
					t.Errorf("comment %q, want %q", got[0].Comment(), tt.comment)
				}
				if got[0].Domain != "example.com" && tt.want[0] != None {
					t.Errorf("header.d = %q", got[0].Domain)
				}
			}
		})
	}
}

// The RFC 8463 Appendix A message verifies: both signatures pass.
func TestRFC8463(t *testing.T) {
	txt := map[string][]string{}
	for n, r := range testkit.DNSRecords("rfc8463.dns") {
		txt[n] = []string{r}
	}
	v := New(Options{Resolver: &dns.Fake{TXT: txt}, Now: func() time.Time { return time.Unix(1528637909, 0) }})
	got := verify(t, v, string(testkit.File("rfc8463.eml")), 65535)
	if len(got) != 2 || got[0].Result != Pass || got[1].Result != Pass {
		for _, g := range got {
			t.Errorf("%s s=%s: %s %v", g.Domain, g.Selector, g.Result, g.Err)
		}
	}
	if got[0].Selector != "brisbane" || got[1].Selector != "test" || got[1].KeyBits != 1024 {
		t.Errorf("selectors %s %s, bits %d", got[0].Selector, got[1].Selector, got[1].KeyBits)
	}
}

// Lookups start at end of headers, all at once: a message with two slow
// keys waits for the slower, not for the sum.
func TestLookupsInParallel(t *testing.T) {
	rsa2048 := testkit.RSAKey(2048)
	msg := testkit.Sign(t, baseMsg, "v=1; a=rsa-sha256; d=example.com; s=a; h=from", rsa2048)
	msg = testkit.Sign(t, msg, "v=1; a=rsa-sha256; d=example.com; s=b; h=from", rsa2048)
	keys := &dns.Fake{TXT: map[string][]string{
		"a._domainkey.example.com": {testkit.KeyRecord(rsa2048, "")},
		"b._domainkey.example.com": {testkit.KeyRecord(rsa2048, "")},
	}}
	started, release := make(chan struct{}), make(chan struct{})
	r := &dns.Fake{Answer: func(ctx context.Context, name string) (*dns.TXTResult, error) {
		started <- struct{}{}
		<-release
		return keys.LookupTXT(ctx, name)
	}}
	v := New(Options{Resolver: r, Now: func() time.Time { return now }})
	h, body := testkit.Split([]byte(msg))
	m := v.Begin(context.Background(), h)
	// Both lookups are in flight before any body byte arrives.
	for i := 0; i < 2; i++ {
		<-started
	}
	close(release)
	m.Write(body)
	got := m.Finish()
	if got[0].Result != Pass || got[1].Result != Pass {
		t.Errorf("results %s %s", got[0].Result, got[1].Result)
	}
}
