package milter

import (
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// DNS faults from the in-process server, end to end through the milter:
// each gives the result of doc/results.md's table within dns.timeout (the
// message is answered; how fast is not asserted), and a temporary fault
// does not stick: once the server is fixed, the next message passes at
// once (nothing was cached). Lookups go through the daemon's own stack:
// the miekg/dns resolver under the TTL cache.
func TestDNSFaults(t *testing.T) {
	e := newEnv(t, "")
	e.setVerifier(func(o *verifier.Options) { o.Now = fixedClock(signTime) })
	k := testkit.RSAKey(2048)
	k4096 := testkit.RSAKey(4096)
	other := testkit.RSAKey(1024)
	good := testkit.KeyRecord(k, "")
	name := func(sel string) string { return sel + "._domainkey.sender.example" }
	tests := []struct {
		sel   string
		setup func(s *dnstest.Server, n string)
		want  string
		fix   func(s *dnstest.Server, n string) // nil: the fault is not temporary
	}{
		{"timeout", func(s *dnstest.Server, n string) { s.SetTimeout(n) },
			`dkim=temperror reason="DNS timeout"`, func(s *dnstest.Server, n string) { s.SetTXT(n, good) }},
		{"servfail", func(s *dnstest.Server, n string) { s.SetRcode(n, mdns.RcodeServerFailure) },
			`dkim=temperror reason="DNS server failure"`, func(s *dnstest.Server, n string) { s.SetTXT(n, good) }},
		{"refused", func(s *dnstest.Server, n string) { s.SetRcode(n, mdns.RcodeRefused) },
			`dkim=temperror reason="DNS server failure"`, func(s *dnstest.Server, n string) { s.SetTXT(n, good) }},
		{"wrongid", func(s *dnstest.Server, n string) { s.SetTXT(n, good); s.SetWrongID(n) },
			`dkim=temperror reason="DNS timeout"`, func(s *dnstest.Server, n string) { s.Remove(n); s.SetTXT(n, good) }},
		{"slow", func(s *dnstest.Server, n string) { s.SetTXT(n, good); s.SetDelay(n, 3*time.Second) },
			`dkim=temperror reason="DNS timeout"`, func(s *dnstest.Server, n string) { s.SetDelay(n, 0) }},
		{"rsa4096", func(s *dnstest.Server, n string) { s.SetTXT(n, testkit.KeyRecord(k4096, "")) },
			"dkim=pass (4096-bit rsa key)", nil},
		{"cname", func(s *dnstest.Server, n string) {
			s.SetCNAME(n, "k1.keys.example.net")
			s.SetCNAME("k1.keys.example.net", "k1.keys.example.org")
			s.SetTXT("k1.keys.example.org", good)
		}, "dkim=pass (2048-bit rsa key)", nil},
		{"dangling", func(s *dnstest.Server, n string) { s.SetCNAME(n, "gone.example.net") },
			`dkim=permerror reason="no key for signature"`, nil},
		{"spfandkey", func(s *dnstest.Server, n string) { s.SetTXT(n, "v=spf1 -all", good) }, "dkim=pass", nil},
		{"twokeys", func(s *dnstest.Server, n string) { s.SetTXT(n, testkit.KeyRecord(other, ""), good) }, "dkim=pass", nil},
		{"twowrong", func(s *dnstest.Server, n string) {
			s.SetTXT(n, testkit.KeyRecord(other, ""), testkit.KeyRecord(testkit.RSAKey(3072), ""))
		}, `dkim=fail reason="signature did not verify"`, nil},
		{"nokeys", func(s *dnstest.Server, n string) { s.SetTXT(n, "v=spf1 -all", "hello") },
			`dkim=permerror reason="no key for signature (2 TXT records, none a DKIM key)"`, nil},
		{"big", func(s *dnstest.Server, n string) {
			// 10 KB: far over the 1232-byte EDNS0 buffer, so TCP.
			s.SetTXT(n, "v=DKIM1; n="+strings.Repeat("padding ", 1280)+"; "+strings.TrimPrefix(good, "v=DKIM1; "))
		}, "dkim=pass (2048-bit rsa key)", nil},
	}
	for _, tt := range tests {
		t.Run(tt.sel, func(t *testing.T) {
			n := name(tt.sel)
			tt.setup(e.dns, n)
			key := k
			if tt.sel == "rsa4096" {
				key = k4096
			}
			msg := testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d=sender.example; s="+tt.sel+"; h=from:subject", key)
			if ar := e.inboundAR(t, msg); !strings.Contains(ar, tt.want) {
				t.Fatalf("A-R %s, want %s", ar, tt.want)
			}
			if tt.fix == nil {
				return
			}
			tt.fix(e.dns, n)
			if ar := e.inboundAR(t, msg); !strings.Contains(ar, "dkim=pass") {
				t.Errorf("after the fault was fixed: %s (the cache kept a temporary failure)", ar)
			}
		})
	}
	// Every answer truncated over UDP: the whole exchange moves to TCP.
	t.Run("truncated", func(t *testing.T) {
		e.dns.SetTruncateUDP(true)
		defer e.dns.SetTruncateUDP(false)
		e.dns.SetTXT(name("tc"), good)
		msg := testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d=sender.example; s=tc; h=from:subject", k)
		if ar := e.inboundAR(t, msg); !strings.Contains(ar, "dkim=pass") {
			t.Errorf("A-R %s", ar)
		}
		if q := e.dns.Queries(name("tc")); q != 2 {
			t.Errorf("%d queries, want UDP then TCP", q)
		}
	})
}

// Names from a hostile or an international signature, through the real DNS
// client: a d= or s= in U-labels is looked up as A-labels (RFC 8616 §4)
// and passes; one with a byte that is not UTF-8 is no domain name, a
// permerror with no query at all. Regression: a Latin-1 é in d= made the
// lookup wait for dns.timeout (the answer came back as "\233" and was
// taken for another question's) and the message got temperror.
func TestInternationalAndHostileNames(t *testing.T) {
	e := newEnv(t, "")
	e.setVerifier(func(o *verifier.Options) { o.Now = fixedClock(signTime) })
	k := testkit.RSAKey(2048)
	e.dns.SetTXT(`s\195\169l._domainkey.b\195\188cher.example`, testkit.KeyRecord(k, "")) // the raw UTF-8, never asked
	e.dns.SetTXT("xn--sl-bja._domainkey.xn--bcher-kva.example", testkit.KeyRecord(k, ""))
	for _, tt := range []struct{ name, d, s, want string }{
		{"U-labels", "bücher.example", "sél", `dkim=pass (2048-bit rsa key) header.d="bücher.example"`},
		{"Latin-1 d=", "example.com\xe9", "sel", "dkim=permerror reason=\"d=example.com\uFFFD is not a domain name\""},
		{"Latin-1 s=", "example.com", "s\xe9l", "dkim=permerror reason=\"s=s\uFFFDl is not a valid selector\""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg := testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d="+tt.d+"; s="+tt.s+"; h=from:subject", k)
			if ar := e.inboundAR(t, msg); !strings.Contains(ar, tt.want) {
				t.Errorf("A-R %q, want %q", ar, tt.want)
			}
		})
	}
	for _, n := range []string{`sel._domainkey.example.com\233`, `s\233l._domainkey.example.com`, `s\195\169l._domainkey.b\195\188cher.example`} {
		if q := e.dns.Queries(n); q != 0 {
			t.Errorf("%d queries for %s, want none", q, n)
		}
	}
}

// A missing key is a permanent answer, cached for the cache's negative TTL
// (60s by default, as internal/dns/cache.go documents): a key published in
// the meantime is seen once that time has passed, not before.
func TestDNSNegativeCache(t *testing.T) {
	e := newEnv(t, "")
	e.setVerifier(func(o *verifier.Options) { o.Now = fixedClock(signTime) })
	clock := &testClock{now: time.Unix(1795000000, 0)}
	res, err := dns.NewClient([]string{e.dns.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e.setVerifier(func(o *verifier.Options) { o.Resolver = dns.NewCache(res, dns.CacheOptions{Now: clock.Now}) })
	k := testkit.RSAKey(2048)
	n := "late._domainkey.sender.example"
	msg := testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d=sender.example; s=late; h=from:subject", k)
	if ar := e.inboundAR(t, msg); !strings.Contains(ar, `dkim=permerror reason="no key for signature"`) {
		t.Fatalf("A-R %s", ar)
	}
	e.dns.SetTXT(n, testkit.KeyRecord(k, ""))
	clock.Advance(59 * time.Second)
	if ar := e.inboundAR(t, msg); !strings.Contains(ar, "no key for signature") {
		t.Errorf("within the negative TTL: %s", ar)
	}
	if q := e.dns.Queries(n); q != 1 {
		t.Errorf("%d queries within the negative TTL, want 1", q)
	}
	clock.Advance(time.Second)
	if ar := e.inboundAR(t, msg); !strings.Contains(ar, "dkim=pass") {
		t.Errorf("after the negative TTL: %s", ar)
	}
}

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
