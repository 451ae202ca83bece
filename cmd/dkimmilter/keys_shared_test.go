package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/keystore"
)

// sharedFixture is the keys fixture with every key published, and a
// shared '%' key (OpenDKIM's "Domain a,b" with one KeyFile) that three
// rules name: two with a literal domain, one ("*") without. Only
// example.org has the shared key's record.
func sharedFixture(t *testing.T) (*keysFixture, string) {
	t.Helper()
	f := newKeysFixture(t, "")
	f.add(t, `
[keys.shared]
domain   = "%"
selector = "sh"
file     = "keys/example.com/s2026e.pem"

[[signing]]
from = "*@example.org"
keys = ["shared"]

[[signing]]
from = "news@example.net"
keys = ["shared"]

[[signing]]
from = "*"
keys = ["shared"]
`)
	for _, p := range []struct{ name, file string }{
		{"s2026r._domainkey.example.com", f.rsa}, {"s2026e._domainkey.example.com", f.ed}, {"sh._domainkey.example.org", f.ed},
	} {
		pk, err := keystore.ReadPrivateKey(p.file)
		if err != nil {
			t.Fatal(err)
		}
		f.dns.SetTXT(p.name, keystore.Record(pk))
	}
	ed, _ := keystore.ReadPrivateKey(f.ed)
	return f, keystore.Record(ed)
}

// A shared key is checked for each domain its rules give it, and one
// domain without the record fails, naming its DNS name; the rule whose
// domains cannot be listed says how to check one, and -d does.
func TestKeysCheckShared(t *testing.T) {
	f, rec := sharedFixture(t)
	code, out, errs := runCmd("keys", "check", "-config", f.cfg, "shared")
	if code != exitKeysFail {
		t.Errorf("exit %d, want %d\n%s%s", code, exitKeysFail, out, errs)
	}
	wantOutput(t, out,
		`none shared: signing[5] (from = "*") signs with this shared key for From domains that cannot be listed: check one with 'dkimmilter keys check -config `+f.cfg+` -d DOMAIN shared'`,
		"ok   shared (example.org) sh._domainkey.example.org: ed25519 key published and matching",
		"FAIL shared (example.net) sh._domainkey.example.net: no record (NXDOMAIN)\n",
		"     hint: publish this TXT record at sh._domainkey.example.net", rec,
		"2 keys checked: 1 ok, 0 with warnings, 1 failing, 0 not checked\n")

	// -d checks a domain of the "*" rule, and only the keys for it.
	f.dns.SetTXT("sh._domainkey.example.info", rec)
	code, out, errs = runCmd("keys", "check", "-config", f.cfg, "-d", "Example.INFO.")
	if code != exitOK {
		t.Errorf("-d: exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "ok   shared (example.info) sh._domainkey.example.info: ed25519 key published and matching", "1 key checked: 1 ok")
	// Every key that can sign for the domain: its own, and the shared
	// one (which the rules here never pick for it), unless NAMEs narrow.
	code, out, errs = runCmd("keys", "check", "-config", f.cfg, "-d", "example.com")
	if code != exitKeysFail || !strings.Contains(out, "FAIL shared (example.com) sh._domainkey.example.com: no record") || !strings.Contains(out, "3 keys checked: 2 ok") {
		t.Errorf("-d example.com: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCmd("keys", "check", "-config", f.cfg, "-d", "example.com", "example-rsa", "example-ed")
	if code != exitOK || !strings.Contains(out, "2 keys checked: 2 ok") {
		t.Errorf("-d example.com with names: exit %d\n%s%s", code, out, errs)
	}
	code, _, errs = runCmd("keys", "check", "-config", f.cfg, "-d", "example.org", "example-rsa")
	if code != exitUsage || !strings.Contains(errs, "no key among example-rsa signs for example.org") {
		t.Errorf("-d for a key of another domain: exit %d %s", code, errs)
	}
	if code, _, errs := runCmd("keys", "check", "-config", f.cfg, "-d", "not a domain"); code != exitUsage || !strings.Contains(errs, `-d "not a domain" is not a domain name`) {
		t.Errorf("bad -d: exit %d %s", code, errs)
	}

	// check -dns fails on the missing domain too.
	code, out, errs = runCmd("check", "-config", f.cfg, "-user", me, "-dns")
	if code != exitKeysFail || !strings.Contains(errs, "configuration OK, DNS check FAILED") {
		t.Errorf("check -dns: exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "key shared: d=% s=sh, ed25519 256 bits, "+f.ed+` (shared: example.org, example.net, signing[5] (from = "*"))`,
		"FAIL shared (example.net) sh._domainkey.example.net: no record (NXDOMAIN)")
	f.dns.SetTXT("sh._domainkey.example.net", rec)
	if code, out, errs := runCmd("check", "-config", f.cfg, "-user", me, "-dns"); code != exitOK {
		t.Errorf("all published: exit %d\n%s%s", code, out, errs)
	}
}

// keys dns prints the shared key's record at each domain's name, and says
// what to do for the domains that cannot be listed.
func TestKeysDNSShared(t *testing.T) {
	f, _ := sharedFixture(t)
	code, out, errs := runCmd("keys", "dns", "-config", f.cfg, "shared")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	checkRecordOutput(t, out, "sh._domainkey.example.org", f.ed)
	checkRecordOutput(t, out, "sh._domainkey.example.net", f.ed)
	wantOutput(t, out, `; signing[5] (from = "*") also sign with this key for From domains that cannot be listed:`,
		"; publish at sh._domainkey.D for each From domain D this key signs ('dkimmilter keys dns -config "+f.cfg+" -d D shared' prints it), e.g.")
	code, out, errs = runCmd("keys", "dns", "-config", f.cfg, "-d", "example.info", "shared")
	if code != exitOK || strings.Count(out, " IN TXT (") != 1 {
		t.Fatalf("-d: exit %d: %s%s", code, out, errs)
	}
	checkRecordOutput(t, out, "sh._domainkey.example.info", f.ed)
}

// A shared key is never offered for a rotation of one of its domains: the
// new file would replace the key of all of them.
func TestKeysRotateSkipsShared(t *testing.T) {
	f, _ := sharedFixture(t)
	code, _, errs := rotateAt("-d", "example.org", "-config", f.cfg)
	if code != exitUsage || !strings.Contains(errs, "no key for example.org") {
		t.Errorf("exit %d %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "keys/example.com/s202611.pem")); err == nil {
		t.Error("a key was made")
	}
}

func TestLiteralDomain(t *testing.T) {
	for pattern, want := range map[string]string{
		"*@example.com": "example.com", "user@example.com": "example.com", "x-*@example.com": "example.com",
		"*": "", "*@*.example.com": "", "*@example.*": "", "*@": "", "nobody": "",
	} {
		if got := literalDomain(pattern); got != want {
			t.Errorf("literalDomain(%q) = %q, want %q", pattern, got, want)
		}
	}
}
