package milter

import (
	"bytes"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// outageClock is the key cache's clock: the test moves it past TTLs and
// the failure recheck timer without waiting.
type outageClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *outageClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *outageClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// A resolver outage through the milter, with the daemon's own lookup
// stack: one WARN when the resolver dies, senders seen before pass on
// their stale key records (and A-R says so), a sender never seen gets
// temperror, and when the resolver is back one INFO line ends the outage
// and what DNS says now (a revoked key, NXDOMAIN) wins over the stale
// records.
func TestDNSOutage(t *testing.T) {
	e := newEnv(t, "")
	e.setVerifier(func(o *verifier.Options) { o.Now = fixedClock(signTime) })
	clock := &outageClock{t: time.Now()}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	lk, err := newLookups(e.rt.Config, nil, log, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	e.setVerifier(func(o *verifier.Options) { o.Resolver = lk.cache })

	k := testkit.RSAKey(2048)
	seen := []string{"one.example", "two.example", "three.example", "revoked.example"}
	publish := func(s *dnstest.Server, domains ...string) {
		for _, d := range domains {
			s.SetTXT("sel._domainkey."+d, testkit.KeyRecord(k, ""))
			s.SetTTL("sel._domainkey."+d, 300)
		}
	}
	msg := func(d string) string {
		return testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d="+d+"; s=sel; h=from:subject", k)
	}
	expect := func(t *testing.T, d, want string) {
		t.Helper()
		if ar := e.inboundAR(t, msg(d)); !strings.Contains(ar, want) {
			t.Errorf("d=%s: A-R %q, want %q", d, ar, want)
		}
	}
	count := func(re string) int { return len(regexp.MustCompile(re).FindAllString(e.logs.String(), -1)) }

	publish(e.dns, seen...)
	for _, d := range seen {
		expect(t, d, "dkim=pass (2048-bit rsa key) header.d="+d)
	}
	clock.advance(10 * time.Minute) // every TTL is over

	addr := e.dns.Addr
	e.dns.Stop()
	for range 5 {
		for _, d := range seen {
			expect(t, d, "dkim=pass (2048-bit rsa key; stale key record) header.d="+d)
		}
		expect(t, "new.example", `dkim=temperror reason="DNS server failure"`)
	}
	warn := `level=WARN msg="dns: key lookups are failing at the resolver[^"]*" resolver=` + regexp.QuoteMeta(addr) + ` kind=unreachable`
	if n := count(warn); n != 1 {
		t.Errorf("%d outage WARN lines, want 1 (%s)", n, warn)
	}
	if n := count(`level=WARN`); n != 1 {
		t.Errorf("%d WARN lines in all, want 1", n)
	}
	if n := count(`msg=message .*key=stale dns=sel._domainkey.one.example`); n != 5 {
		t.Errorf("%d message lines say key=stale for one.example, want 5", n)
	}
	// 5 rounds of the 4 senders seen before; new.example's temperror is
	// no stale pass.
	var scrape bytes.Buffer
	e.metrics.WritePrometheus(&scrape)
	if want := "dkimmilter_dkim_stale_keys_total 20\n"; !strings.Contains(scrape.String(), want) {
		t.Errorf("the scrape lacks %q:\n%s", want, scrape.String())
	}

	// The resolver is back: one.example and three.example as before,
	// two.example gone, revoked.example revoked.
	s := dnstest.NewAt(t, addr)
	publish(s, "one.example", "three.example", "new.example")
	s.SetTXT("sel._domainkey.revoked.example", "v=DKIM1; k=rsa; p=")
	clock.advance(time.Minute) // past the failure recheck timer
	for range 3 {
		expect(t, "one.example", "dkim=pass (2048-bit rsa key) header.d=one.example")
		expect(t, "new.example", "dkim=pass (2048-bit rsa key) header.d=new.example")
		expect(t, "two.example", `dkim=permerror reason="no key for signature"`)
		expect(t, "revoked.example", `dkim=permerror reason="key revoked"`)
	}
	if n := count(`level=INFO msg="dns: key lookups answered again" resolver=` + regexp.QuoteMeta(addr) + ` outage=\S+ failed=\d+`); n != 1 {
		t.Errorf("%d recovery lines, want 1", n)
	}
	if n := count(`level=WARN`); n != 1 {
		t.Errorf("%d WARN lines in all, want still 1", n)
	}

	// The next outage: what DNS said last is what is served stale; the
	// revoked key and the missing one stay what they are.
	s.Stop()
	clock.advance(10 * time.Minute)
	expect(t, "one.example", "dkim=pass (2048-bit rsa key; stale key record)")
	expect(t, "revoked.example", `dkim=permerror reason="key revoked" (stale key record)`)
	expect(t, "two.example", `dkim=temperror`)
}

// A reload in the middle of an outage (SIGHUP builds a new Runtime, with
// a new key cache) keeps the stale records and the outage: senders seen
// before still pass, the outage is not reported twice, and its end is.
func TestDNSOutageAcrossReload(t *testing.T) {
	e := newEnv(t, "")
	k := testkit.RSAKey(2048)
	for _, d := range []string{"one.example", "new.example"} {
		e.dns.SetTXT("sel._domainkey."+d, testkit.KeyRecord(k, ""))
		e.dns.SetTTL("sel._domainkey."+d, 1)
	}
	msg := func(d string) string {
		return testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d="+d+"; s=sel; h=from:subject", k)
	}
	expect := func(t *testing.T, d, want string) {
		t.Helper()
		if ar := e.inboundAR(t, msg(d)); !strings.Contains(ar, want) {
			t.Errorf("d=%s: A-R %q, want %q", d, ar, want)
		}
	}
	count := func(re string) int { return len(regexp.MustCompile(re).FindAllString(e.logs.String(), -1)) }
	expect(t, "one.example", "dkim=pass (2048-bit rsa key)")
	time.Sleep(1100 * time.Millisecond) // the 1 s TTL is over
	addr := e.dns.Addr
	e.dns.Stop()
	expect(t, "one.example", "dkim=pass (2048-bit rsa key; stale key record)")

	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rt, _, err := LoadRuntime(e.rt.Config, nil, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.SetRuntime(rt)
	for range 3 {
		expect(t, "one.example", "dkim=pass (2048-bit rsa key; stale key record)")
		expect(t, "new.example", "dkim=temperror")
	}
	if n := count(`level=WARN msg="dns: key lookups are failing`); n != 1 {
		t.Errorf("%d outage WARN lines across the reload, want 1", n)
	}
	s := dnstest.NewAt(t, addr)
	s.SetTXT("sel._domainkey.new.example", testkit.KeyRecord(k, ""))
	expect(t, "new.example", "dkim=pass (2048-bit rsa key)")
	if n := count(`level=INFO msg="dns: key lookups answered again"`); n != 1 {
		t.Errorf("%d recovery lines, want 1", n)
	}
}
