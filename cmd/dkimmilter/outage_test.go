package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// The done-when of a DNS outage, with the daemon as a process: the
// resolver dies, and the log has one WARN naming it; senders seen before
// pass on stale key records and Authentication-Results says so; a SIGHUP
// in the middle changes none of it; the resolver comes back, and one INFO
// line ends the outage.
func TestDaemonDNSOutage(t *testing.T) {
	f := newFixture(t, "")
	k := testkit.RSAKey(2048)
	for _, d := range []string{"one.example", "two.example"} {
		f.dns.SetTXT("sel._domainkey."+d, testkit.KeyRecord(k, ""))
		f.dns.SetTTL("sel._domainkey."+d, 1)
	}
	p := startProc(t, "serve", "-config", f.cfg)
	inbound := func(t *testing.T, d string) string {
		t.Helper()
		c, err := testkit.Dial("unix", filepath.Join(f.dir, "milter.sock"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Connect("mail.sender.example", "198.51.100.7"); err != nil {
			t.Fatal(err)
		}
		msg := testkit.Sign(t, "From: Dave <dave@"+d+">\nTo: a@example.com\nSubject: hi\n\nhello\n", "v=1; a=rsa-sha256; d="+d+"; s=sel; h=from:subject", k)
		r, err := c.Send(testkit.Envelope{From: "dave@" + d, Rcpts: []string{"a@example.com"}}, testkit.CRLF([]byte(msg)), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range testkit.Mods(r, gomilter.ActInsertHeader) {
			if m.HeaderName == "Authentication-Results" {
				return m.HeaderValue
			}
		}
		t.Fatalf("no Authentication-Results: %+v", r.Mods)
		return ""
	}
	expect := func(d, want string) {
		t.Helper()
		if ar := inbound(t, d); !strings.Contains(ar, want) {
			t.Errorf("d=%s: A-R %q, want %q", d, ar, want)
		}
	}
	const warn, info = "dns: key lookups are failing at the resolver", "dns: key lookups answered again"
	count := func(s string) int { return strings.Count(p.stderr.String(), s) }

	expect("one.example", "dkim=pass (2048-bit rsa key) header.d=one.example")
	expect("two.example", "dkim=pass (2048-bit rsa key) header.d=two.example")
	time.Sleep(1100 * time.Millisecond) // the 1 s TTLs are over
	addr := f.dns.Addr
	f.dns.Stop()
	for range 5 {
		expect("one.example", "dkim=pass (2048-bit rsa key; stale key record) header.d=one.example")
		expect("two.example", "dkim=pass (2048-bit rsa key; stale key record) header.d=two.example")
		expect("new.example", `dkim=temperror reason="DNS server failure"`)
	}
	p.waitLog(t, warn)
	if !strings.Contains(p.stderr.String(), "resolver="+addr+" kind=unreachable") {
		t.Errorf("the WARN does not name the resolver %s and the kind", addr)
	}

	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "configuration reloaded")
	expect("one.example", "dkim=pass (2048-bit rsa key; stale key record)")
	expect("new.example", "dkim=temperror")
	if n := count(warn); n != 1 {
		t.Errorf("%d outage warnings, want 1", n)
	}

	s := dnstest.NewAt(t, addr)
	s.SetTXT("sel._domainkey.new.example", testkit.KeyRecord(k, ""))
	expect("new.example", "dkim=pass (2048-bit rsa key) header.d=new.example")
	expect("new.example", "dkim=pass (2048-bit rsa key) header.d=new.example")
	p.waitLog(t, info)
	if n, m := count(warn), count(info); n != 1 || m != 1 {
		t.Errorf("%d outage warnings and %d recovery lines, want 1 and 1", n, m)
	}
	// The reload's key check warns about the signing key, which it could
	// not check: that one is about a key, not about the messages.
	if n := count("level=WARN") - count(`level=WARN msg="key health check"`); n != 1 {
		t.Errorf("%d WARN lines in all but the key check, want 1:\n%s", n, p.stderr.String())
	}
}
