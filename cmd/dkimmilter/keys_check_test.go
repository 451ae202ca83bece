package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/miekg/dns"
)

const rsaName = "rsa._domainkey.example.com"

// wantOutput checks that out holds each of want, in order.
func wantOutput(t *testing.T, out string, want ...string) {
	t.Helper()
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("output lacks %q (in order):\n%s", w, out)
			return
		}
		rest = rest[i+len(w):]
	}
}

// The fixture's key, published and matching; one line per key.
func TestKeysCheckOK(t *testing.T) {
	f := newFixture(t, "")
	code, out, errs := runCmd("keys", "check", "-config", f.cfg)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "ok   rsa rsa._domainkey.example.com: rsa 2048-bit key published and matching, TTL 5m0s; DNSSEC: not validated\n",
		"1 key checked: 1 ok, 0 with warnings, 0 failing, 0 not checked\n")
	if n := strings.Count(out, "\n"); n != 2 {
		t.Errorf("%d lines, want 2:\n%s", n, out)
	}

	// Flags after the names, a validating local resolver, every answer.
	f.dns.SetAD(true)
	code, out, _ = runCmd("keys", "check", "-config", f.cfg, "rsa", "-v", "-resolver", f.dns.Addr, "-resolver", f.dns.Addr)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, out)
	}
	wantOutput(t, out, "published and matching, TTL 5m0s (2 resolvers agree); DNSSEC: validated\n",
		"     "+f.dns.Addr+": published and matching (TTL 5m0s, AD)\n")
}

func TestKeysCheckFailures(t *testing.T) {
	key := testkit.RSAKey(2048)
	rec := testkit.KeyRecord(key, "")
	tests := []struct {
		name  string
		setup func(f *fixture)
		args  []string
		code  int
		want  []string
	}{
		{"missing record", func(f *fixture) { f.dns.Remove(rsaName) }, nil, exitKeysFail,
			[]string{"FAIL rsa rsa._domainkey.example.com: no record (NXDOMAIN)\n",
				"  fail: no record at rsa._domainkey.example.com (NXDOMAIN",
				"     hint: publish this TXT record at rsa._domainkey.example.com", "\n       " + rec + "\n",
				"     hint: if you published it already, check the name",
				"0 ok, 0 with warnings, 1 failing"}},
		{"mismatched key", func(f *fixture) { f.dns.SetTXT(rsaName, testkit.KeyRecord(testkit.RSAKey(2064), "")) }, nil, exitKeysFail,
			[]string{"FAIL rsa rsa._domainkey.example.com: published, but a different key\n",
				"  fail: p= is not the public key of " /* the file */, "     hint: publish this TXT record", rec}},
		{"testing flag warns, exit 0", func(f *fixture) { f.dns.SetTXT(rsaName, testkit.KeyRecord(key, "t=y; ")) }, nil, exitOK,
			[]string{"WARN rsa rsa._domainkey.example.com: rsa 2048-bit key published and matching", "  warn: t=y", "1 with warnings"}},
		{"two DKIM records", func(f *fixture) { f.dns.SetTXT(rsaName, rec, testkit.KeyRecord(testkit.RSAKey(2064), "")) }, nil, exitKeysFail,
			[]string{"2 DKIM key records", "hint: remove the others and keep only this one"}},
		{"timeout: not checked", func(f *fixture) { f.dns.SetTimeout(rsaName) }, []string{"-timeout", "300ms"}, exitKeysTemp,
			[]string{"TEMP rsa rsa._domainkey.example.com: no answer (timeout", "1 not checked"}},
		{"SERVFAIL: not checked", func(f *fixture) { f.dns.SetRcode(rsaName, dns.RcodeServerFailure) }, nil, exitKeysTemp,
			[]string{"TEMP rsa", "SERVFAIL", "hint: check again later"}},
		{"unsafe key file: config error, DNS still checked", func(f *fixture) { os.Chmod(filepath.Join(f.dir, "keys/rsa.pem"), 0o604) }, nil, exitConfig,
			[]string{"FAIL rsa rsa._domainkey.example.com: rsa 2048-bit key published and matching",
				"  fail: key file: unsafe key file permissions", "hint: chmod 600 "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "")
			f.dns.SetTXT(rsaName, rec)
			tt.setup(f)
			code, out, errs := runCmd(append([]string{"keys", "check", "-config", f.cfg}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, out, errs)
			}
			wantOutput(t, out, tt.want...)
		})
	}
}

// A failing key wins over one that could not be checked.
func TestKeysCheckFailWinsOverTemp(t *testing.T) {
	f := newFixture(t, "[keys.ed]\ndomain = \"example.com\"\nselector = \"ed\"\nfile = \"keys/ed.pem\"\n")
	testkit.WriteKey(f.dir, "keys/ed.pem", ed25519.NewKeyFromSeed(make([]byte, 32)), false)
	f.dns.SetTimeout(rsaName)
	code, out, _ := runCmd("keys", "check", "-config", f.cfg, "-timeout", "300ms")
	if code != exitKeysFail {
		t.Errorf("exit %d, want %d\n%s", code, exitKeysFail, out)
	}
	wantOutput(t, out, "FAIL ed ed._domainkey.example.com: no record (NXDOMAIN)\n", "TEMP rsa ", "2 keys checked: 0 ok, 0 with warnings, 1 failing, 1 not checked")
}

func TestKeysCheckUsageAndConfig(t *testing.T) {
	f := newFixture(t, "")
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-config", f.cfg, "nosuchkey"}, exitUsage, `no key "nosuchkey" in ` + f.cfg + "; the keys are rsa"},
		{[]string{"-config", f.cfg, "-resolver", "dns.example.net"}, exitUsage, "-resolver: invalid nameserver"},
		{[]string{"-config", f.cfg, "-frobnicate"}, exitUsage, "flag provided but not defined"},
		{[]string{"-config", f.cfg, "-timeout", "-1s"}, exitUsage, "-timeout must not be negative"},
		{[]string{"-h"}, exitOK, "Exit status:\n   0  every key is published and matches"},
		{[]string{"-config", "/nonexistent/dkimmilter.toml"}, exitConfig, "/nonexistent/dkimmilter.toml"},
		{[]string{"-config", writeConfig(t, "nonsense = 1\n")}, exitConfig, "nonsense"},
	} {
		code, out, errs := runCmd(append([]string{"keys", "check"}, tt.args...)...)
		if code != tt.code || !strings.Contains(errs, tt.want) {
			t.Errorf("keys check %q: exit %d, want %d with %q\n%s%s", tt.args, code, tt.code, tt.want, out, errs)
		}
	}
}

func writeConfig(t *testing.T, text string) string {
	p := filepath.Join(t.TempDir(), "dkimmilter.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A key whose file name has '%' is checked for each file, with the domain
// taken from the file name.
func TestKeysCheckPercent(t *testing.T) {
	f := newFixture(t, "[keys.hosted]\ndomain = \"%\"\nselector = \"h1\"\nfile = \"keys/%/h1.pem\"\n")
	org := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	net := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	testkit.WriteKey(f.dir, "keys/example.org/h1.pem", org, false)
	testkit.WriteKey(f.dir, "keys/example.net/h1.pem", net, false)
	f.dns.SetTXT("h1._domainkey.example.org", testkit.KeyRecord(org, ""))
	code, out, errs := runCmd("keys", "check", "-config", f.cfg, "hosted")
	if code != exitKeysFail {
		t.Errorf("exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "FAIL hosted (example.net) h1._domainkey.example.net: no record (NXDOMAIN)\n",
		"ok   hosted (example.org) h1._domainkey.example.org: ed25519 key published and matching",
		"2 keys checked: 1 ok")

	os.RemoveAll(filepath.Join(f.dir, "keys/example.org"))
	os.RemoveAll(filepath.Join(f.dir, "keys/example.net"))
	code, out, _ = runCmd("keys", "check", "-config", f.cfg, "hosted")
	if code != exitOK || !strings.Contains(out, "none hosted: no key file matches ") {
		t.Errorf("no files: exit %d\n%s", code, out)
	}
}

// Two resolvers that see different things: which sees what.
func TestKeysCheckPropagation(t *testing.T) {
	f := newFixture(t, "")
	lagging := dnstest.New(t)
	code, out, _ := runCmd("keys", "check", "-config", f.cfg, "-resolver", f.dns.Addr, "-resolver", lagging.Addr)
	if code != exitKeysFail {
		t.Errorf("exit %d\n%s", code, out)
	}
	wantOutput(t, out, "FAIL rsa rsa._domainkey.example.com: 1 of 2 resolvers see the record\n",
		"     "+f.dns.Addr+": published and matching (TTL 5m0s)\n",
		"     "+lagging.Addr+": no record (NXDOMAIN)\n",
		"  fail: answers differ between resolvers: "+f.dns.Addr+": published and matching; "+lagging.Addr+": no record (NXDOMAIN)\n",
		"     hint: if the record changed recently, resolvers keep the old answer for its TTL (5m0s)")
}

// -authoritative, with the fixture's server as the resolver and as the
// zone's name servers (asked on its port instead of 53).
func TestKeysCheckAuthoritative(t *testing.T) {
	f := newFixture(t, "")
	f.dns.SetZone("example.com", "ns1.example.com", "ns2.example.com")
	f.dns.SetAddrs("ns1.example.com", "127.0.0.1")
	f.dns.SetAddrs("ns2.example.com", "127.0.0.1")
	port, _ := strconv.Atoi(f.dns.Addr[strings.LastIndexByte(f.dns.Addr, ':')+1:])
	cfg, err := config.Load(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out, errs bytes.Buffer
	code := checkKeysDNS(context.Background(), cfg, []string{"rsa"}, keysCheckOptions{authoritative: true, verbose: true, authPort: port}, &out, &errs)
	if code != exitOK {
		t.Errorf("exit %d\n%s%s", code, out.String(), errs.String())
	}
	wantOutput(t, out.String(), "ok   rsa rsa._domainkey.example.com: rsa 2048-bit key published and matching, TTL 5m0s (2 name servers agree)\n",
		"     name servers of example.com:\n", "     ns1.example.com (127.0.0.1 port "+strconv.Itoa(port)+"): published and matching")
	if strings.Contains(out.String(), "DNSSEC") {
		t.Errorf("DNSSEC status from authoritative servers:\n%s", out.String())
	}
}

// check -dns: the configuration check, then keys check's report and code.
func TestCheckDNS(t *testing.T) {
	f := newFixture(t, "")
	code, out, errs := runCmd("check", "-config", f.cfg, "-user", me, "-dns")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "key rsa: d=example.com s=rsa", "ok   rsa rsa._domainkey.example.com: rsa 2048-bit key published and matching", f.cfg+": OK\n")

	f.dns.Remove(rsaName)
	code, out, errs = runCmd("check", "-config", f.cfg, "-user", me, "-dns")
	if code != exitKeysFail || !strings.Contains(errs, "configuration OK, DNS check FAILED") {
		t.Errorf("missing record: exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "FAIL rsa rsa._domainkey.example.com: no record (NXDOMAIN)", "hint: publish this TXT record")

	// A configuration error is 78, as without -dns, and DNS is not asked.
	os.Chmod(filepath.Join(f.dir, "keys/rsa.pem"), 0o644)
	code, out, errs = runCmd("check", "-config", f.cfg, "-user", me, "-dns")
	if code != exitConfig || strings.Contains(out, "rsa._domainkey") {
		t.Errorf("config error: exit %d\n%s%s", code, out, errs)
	}
	if code, _, _ := runCmd("check", "-h"); code != exitOK {
		t.Errorf("check -h: exit %d", code)
	}
}

// A retired key (no rule names it) with its record revoked is a warning
// saying to remove its table; a resolver that is not running is named as
// such, not blamed on the zone.
func TestKeysCheckRetiredAndRefused(t *testing.T) {
	f := newFixture(t, "[keys.old]\ndomain = \"example.com\"\nselector = \"old\"\nfile = \"keys/old.pem\"\n")
	testkit.WriteKey(f.dir, "keys/old.pem", testkit.RSAKey(2048), false)
	f.dns.SetTXT("old._domainkey.example.com", "v=DKIM1; k=rsa; p=")
	code, out, errs := runCmd("keys", "check", "-config", f.cfg, "old")
	if code != exitOK {
		t.Errorf("exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "old old._domainkey.example.com: key revoked (empty p=), and no rule signs with it",
		"remove the [keys.old] table and delete ")
	if strings.Contains(out, "take it out of the [[signing]] rules") {
		t.Errorf("the retired key is told to leave the rules:\n%s", out)
	}

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	code, out, _ = runCmd("keys", "check", "-config", f.cfg, "-resolver", dead, "rsa")
	if code != exitKeysTemp {
		t.Errorf("refused resolver: exit %d\n%s", code, out)
	}
	wantOutput(t, out, "no DNS server (connection refused)", "fix [dns] nameservers")
	if strings.Contains(out, "DNSSEC are broken") {
		t.Errorf("a refused connection is blamed on the zone:\n%s", out)
	}
}
