package keystore

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

func writeFile(t *testing.T, dir, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every key format admins have on disk loads: OpenDKIM's .private (PKCS#1
// PEM), PKCS#8 PEM for RSA and Ed25519, DER, dkimpy's base64 Ed25519 seed.
func TestReadPrivateKeyFormats(t *testing.T) {
	dir := t.TempDir()
	rsaKey := testkit.RSAKey(2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8rsa, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	pkcs8ed, _ := x509.MarshalPKCS8PrivateKey(ed)
	tests := []struct {
		name string
		data []byte
		alg  string
		bits int
	}{
		{"opendkim.private", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), "rsa-sha256", 2048},
		{"rsa-pkcs8.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8rsa}), "rsa-sha256", 2048},
		{"ed-pkcs8.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8ed}), "ed25519-sha256", 256},
		{"rsa.der", pkcs8rsa, "rsa-sha256", 2048},
		{"rsa-pkcs1.der", x509.MarshalPKCS1PrivateKey(rsaKey), "rsa-sha256", 2048},
		{"dknewkey-ed25519.key", []byte(base64.StdEncoding.EncodeToString(ed.Seed()) + "\n"), "ed25519-sha256", 256},
		{"rfc8463-ed25519.key", testkit.File("rfc8463-ed25519.key"), "ed25519-sha256", 256},
		{"rfc8463-rsa.key", testkit.File("rfc8463-rsa.key"), "rsa-sha256", 1024},
	}
	for _, tt := range tests {
		p := writeFile(t, dir, tt.name, tt.data, 0o600)
		k, err := ReadPrivateKey(p)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if k.Algorithm != tt.alg || k.Bits != tt.bits {
			t.Errorf("%s: %s %d bits", tt.name, k.Algorithm, k.Bits)
		}
	}
}

func TestReadPrivateKeyErrors(t *testing.T) {
	dir := t.TempDir()
	good := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(testkit.RSAKey(2048))})
	tests := []struct {
		name string
		data []byte
		mode os.FileMode
		want string
	}{
		{"group-writable.pem", good, 0o660, "can be read or written by its group (hint: chmod 600 "},
		{"group-writable-only.pem", good, 0o620, "can be read or written by its group (hint: chmod 600 "},
		{"world-readable.pem", good, 0o604, "by others (hint: chmod 600"},
		{"both.pem", good, 0o644, "by group or others (hint: chmod 600"},
		{"encrypted.pem", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), 0o600, "encrypted"},
		{"cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), 0o600, `"CERTIFICATE" is not a private key`},
		{"garbage", []byte("hello"), 0o600, "not a private key"},
		{"short.pem", testkit.File("rsa512.key"), 0o600, "512 bits; signers must use at least 1024"},
	}
	for _, tt := range tests {
		p := writeFile(t, dir, tt.name, tt.data, tt.mode)
		_, err := ReadPrivateKey(p)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
		if tt.mode&0o026 != 0 && !errors.Is(err, ErrUnsafePermissions) {
			t.Errorf("%s: not ErrUnsafePermissions", tt.name)
		}
	}
	if _, err := ReadPrivateKey(filepath.Join(dir, "missing.pem")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing file: %v", err)
	}
}

// The compiled SigningTable patterns match the whole address,
// case-insensitively, '*' matching any run of characters (config.GlobMatch),
// as OpenDKIM's refile patterns; "*", "*@dom", "*@*.dom" (subdomains of dom,
// never dom itself, as OpenDKIM's ".dom") and "local@dom" take a shortcut.
func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, addr string
		want          bool
	}{
		{"*", "a@b.example", true},
		{"*@example.com", "alice@example.com", true},
		{"*@example.com", "ALICE@EXAMPLE.COM", true},
		{"*@example.com", "alice@sub.example.com", false},
		{"*@*.example.com", "alice@sub.example.com", true},
		{"*@*.example.com", "alice@a.b.example.com", true},
		{"*@*.example.com", "alice@example.com", false},
		{"*@*.example.com", "alice@badexample.com", false},
		{"alice@example.com", "Alice@Example.com", true},
		{"alice@example.com", "bob@example.com", false},
		// '*' anywhere: the whole address, anchored, case-insensitive.
		{"x-*@example.com", "x-news@example.com", true},
		{"x-*@example.com", "X-@Example.COM", true},
		{"x-*@example.com", "y-news@example.com", false},
		{"x-*@example.com", "x-news@example.com.evil", false},
		{"*@example.*", "a@example.org", true},
		{"*@example.*", "a@example.co.uk", true},
		{"*@example.*", "a@sub.example.org", false},
		{"*@example.*", "a@example", false},
		{"*@*", "a@b", true},
		{"*@*.example.com", "a@x.example.com", true},
		{"*@*example.com", "a@badexample.com", true},
		{"*@*example.com", "a@example.com", true},
		{"*bob*@example.com", "Bob@example.com", true},
		{"*bob*@example.com", "jimbobby@example.com", true},
		{"*bob*@example.com", "jim@example.com", false},
		{"a*b*c@d", "abc@d", true},
		{"a*b*c@d", "axbxbxc@d", true},
		{"a*b*c@d", "axbxbxcx@d", false},
		{"**", "a@b", true},
	}
	for _, tt := range tests {
		l, d, _ := splitAddress(tt.addr)
		m := compile(strings.ToLower(tt.pattern))
		if got := m.match(l, strings.ToLower(d), nil); got != tt.want {
			t.Errorf("Match(%q, %q) = %v", tt.pattern, tt.addr, got)
		}
	}
}

// Load reports every bad key at once, with the config file and line, and
// the first matching rule wins.
func TestLoadAndLookup(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteKey(dir, "a.pem", testkit.RSAKey(2048), true)
	testkit.WriteKey(dir, "b.pem", testkit.RSAKey(1024), false)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	testkit.WriteKey(dir, "ed.pem", ed, false)
	cfgText := `
[keys.a]
domain = "example.com"
selector = "a"
file = "a.pem"
[keys.b]
domain = "example.com"
selector = "b"
file = "b.pem"
[keys.ed]
domain = "example.com"
selector = "ed"
file = "ed.pem"
[keys.pct]
domain = "%"
selector = "p"
file = "pct/%.pem"
[[signing]]
from = "ceo@example.com"
keys = ["b"]
identity = "ceo@example.com"
[[signing]]
from = "*@example.com"
keys = ["a", "ed"]
[[signing]]
from = "*@*.example.com"
keys = ["pct"]
`
	cfg, err := config.Parse(filepath.Join(dir, "dkimmilter.toml"), []byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	s, warnings, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "1024-bit") || !strings.Contains(warnings[0], "keys.b") {
		t.Errorf("warnings %q", warnings)
	}
	sel, err := s.Lookup("CEO@example.com")
	if err != nil || sel == nil || len(sel.Keys) != 1 || sel.Keys[0].Selector != "b" || sel.Identity != "ceo@example.com" {
		t.Errorf("ceo: %+v %v", sel, err)
	}
	sel, err = s.Lookup("alice@example.com")
	if err != nil || len(sel.Keys) != 2 || sel.Keys[0].Algorithm != "rsa-sha256" || sel.Keys[1].Algorithm != "ed25519-sha256" {
		t.Errorf("alice: %+v %v", sel, err)
	}
	if sel, err := s.Lookup("alice@news.example.com"); sel != nil || err != nil {
		t.Errorf("no key file for news.example.com: %+v %v", sel, err)
	}
	testkit.WriteKey(dir, "pct/news.example.com.pem", testkit.RSAKey(2048), false)
	sel, err = s.Lookup("alice@news.example.com")
	if err != nil || sel == nil || sel.Keys[0].Domain != "news.example.com" || !strings.HasSuffix(sel.Keys[0].File, "pct/news.example.com.pem") {
		t.Errorf("pct: %+v %v", sel, err)
	}
	if sel, _ := s.Lookup("alice@other.example"); sel != nil {
		t.Errorf("other.example matched %+v", sel.Rule)
	}

	// A broken key behind a "%" rule is an error, not a silent skip.
	p := testkit.WriteKey(dir, "pct/bad.example.com.pem", testkit.RSAKey(2048), false)
	os.Chmod(p, 0o644)
	if _, err := s.Lookup("x@bad.example.com"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("unsafe %% key: %v", err)
	}
	// File names cannot be steered out of the directory.
	if _, err := s.Lookup("x@..example.com"); err != nil && !strings.Contains(err.Error(), "file name") {
		t.Errorf("dot-dot domain: %v", err)
	}
}

// Glob rules are tried in file order with the fixed shapes, the first
// match wins, and a '%' rule without a key file for the domain lets the
// address fall through to the next rule, glob or not.
func TestLookupGlob(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteKey(dir, "a.pem", testkit.RSAKey(2048), false)
	testkit.WriteKey(dir, "pct/example.org.pem", testkit.RSAKey(2048), false)
	cfgText := `
[keys.a]
domain = "example.com"
selector = "a"
file = "a.pem"
[keys.news]
domain = "example.com"
selector = "news"
file = "a.pem"
[keys.pct]
domain = "%"
selector = "p"
file = "pct/%.pem"
[[signing]]
from = "x-*@example.com"
keys = ["news"]
[[signing]]
from = "*@example.*"
keys = ["pct"]
[[signing]]
from = "*@*"
keys = ["a"]
`
	cfg, err := config.Parse(filepath.Join(dir, "dkimmilter.toml"), []byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ addr, rule, selector, domain string }{
		{"X-List@Example.COM", "x-*@example.com", "news", "example.com"},
		{"x-@example.com", "x-*@example.com", "news", "example.com"},
		{"alice@example.org", "*@example.*", "p", "example.org"},
		// No pct/example.com.pem: on to "*@*".
		{"alice@example.com", "*@*", "a", "example.com"},
		{"alice@sub.example.org", "*@*", "a", "example.com"},
		{"not-an-address", "", "", ""},
	} {
		sel, err := s.Lookup(tt.addr)
		switch {
		case err != nil:
			t.Errorf("%s: %v", tt.addr, err)
		case tt.rule == "" && sel != nil:
			t.Errorf("%s: matched %q", tt.addr, sel.Rule.From)
		case tt.rule == "":
		case sel == nil:
			t.Errorf("%s: no rule, want %q", tt.addr, tt.rule)
		case sel.Rule.From != tt.rule || sel.Keys[0].Selector != tt.selector || sel.Keys[0].Domain != tt.domain:
			t.Errorf("%s: rule %q s=%s d=%s, want %q s=%s d=%s", tt.addr, sel.Rule.From, sel.Keys[0].Selector, sel.Keys[0].Domain, tt.rule, tt.selector, tt.domain)
		}
	}
}

// BenchmarkLookup: matching the fixed shapes allocates nothing, a glob
// the lower-cased address once per lookup; the other allocations are the
// Selection's.
func BenchmarkLookup(b *testing.B) {
	dir := b.TempDir()
	testkit.WriteKey(dir, "a.pem", testkit.RSAKey(2048), false)
	var text strings.Builder
	text.WriteString("[keys.a]\ndomain = \"example.com\"\nselector = \"a\"\nfile = \"a.pem\"\n")
	for i := range 50 {
		fmt.Fprintf(&text, "[[signing]]\nfrom = \"user%d@example.net\"\nkeys = [\"a\"]\n", i)
	}
	for _, last := range []string{"*@example.com", "*@*.example.com", "x-*@example.*"} {
		b.Run(last, func(b *testing.B) {
			cfg, err := config.Parse(filepath.Join(dir, "dkimmilter.toml"), []byte(text.String()+"[[signing]]\nfrom = \""+last+"\"\nkeys = [\"a\"]\n"))
			if err != nil {
				b.Fatal(err)
			}
			s, _, err := Load(cfg)
			if err != nil {
				b.Fatal(err)
			}
			addr := "x-alice@example.com"
			if last == "*@*.example.com" {
				addr = "x-alice@sub.example.com"
			}
			b.ReportAllocs()
			for b.Loop() {
				if sel, err := s.Lookup(addr); sel == nil || err != nil {
					b.Fatal("no match", err)
				}
			}
		})
	}
}

func TestLoadReportsAllErrors(t *testing.T) {
	dir := t.TempDir()
	p := testkit.WriteKey(dir, "open.pem", testkit.RSAKey(2048), true)
	os.Chmod(p, 0o644)
	cfgText := `
[keys.open]
domain = "example.com"
selector = "a"
file = "open.pem"

[keys.missing]
domain = "example.com"
selector = "b"
file = "missing.pem"
`
	cfg, err := config.Parse(filepath.Join(dir, "dkimmilter.toml"), []byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = Load(cfg)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{"dkimmilter.toml:2: keys.open:", "chmod 600 " + p, "dkimmilter.toml:7: keys.missing:", "missing.pem does not exist"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
}

// A From domain stands in for '%' only if it is a domain name: it becomes
// d= and part of a file name. Regression: "<a@b.example;l=0>" (FromAddresses
// falls back to the text between < and >) made d=b.example;l=0, which
// wrote an l= tag of the sender's choosing into our DKIM-Signature, and a
// folded From put a line break into d=.
func TestPercentDomainMustBeADomainName(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteKey(dir, "shared.pem", testkit.RSAKey(2048), false)
	cfg, err := config.Parse(filepath.Join(dir, "dkimmilter.toml"), []byte(`
[keys.hosted]
domain = "%"
selector = "s1"
file = "shared.pem"
[[signing]]
from = "*"
keys = ["hosted"]
`))
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"<a@b.example;l=0>", "x <a@b.exa\r\n mple>", "a@[192.0.2.1]", "a@b.example\x00x", "a@b.ex\u2603ample", "a@-b.example", "a@b..example", "a@b.example\xff"} {
		var addr string
		if addrs := dkim.FromAddresses(from); len(addrs) > 0 {
			addr = addrs[0]
		}
		if sel, err := s.Lookup(addr); sel != nil || err != nil {
			t.Errorf("From %q (address %q): signed as %+v, %v", from, addr, sel, err)
		}
	}
	for _, addr := range []string{"a@b.example", "a@BÜCHER.example", "a@x_y.example"} {
		if sel, err := s.Lookup(addr); sel == nil || err != nil {
			t.Errorf("%s: not signed: %v", addr, err)
		}
	}
}

// Key files that others may read, or group or others may write, are refused
// when the daemon loads its keys, through a symlink too, with the chmod
// that fixes it; owner-only modes load, and so do modes that only the
// process's own group may read.
func TestUnsafeKeyPermissions(t *testing.T) {
	for _, tt := range []struct {
		mode    os.FileMode
		symlink bool
		ok      bool
	}{
		{0o600, false, true}, {0o400, false, true}, {0o700, false, true},
		{0o644, false, false}, {0o604, false, false},
		{0o620, false, false}, {0o602, false, false}, {0o660, false, false},
		{0o666, false, false}, {0o644, true, false},
		// Readable by its group, which is this process's own (the
		// file's creator's); TestGroupReadableKeys has the others. The
		// execute bits let nobody read the key.
		{0o640, false, true}, {0o610, false, true}, {0o650, false, true},
	} {
		dir := t.TempDir()
		p := testkit.WriteKey(dir, "k.pem", testkit.RSAKey(2048), false)
		if err := os.Chmod(p, tt.mode); err != nil {
			t.Fatal(err)
		}
		file := p
		if tt.symlink {
			file = filepath.Join(dir, "link.pem")
			if err := os.Symlink(p, file); err != nil {
				t.Fatal(err)
			}
		}
		cfg, err := config.Parse(filepath.Join(dir, "dkimmilter.toml"), []byte(
			"[keys.k]\ndomain = \"example.com\"\nselector = \"s\"\nfile = \""+file+"\"\n[[signing]]\nfrom = \"*@example.com\"\nkeys = [\"k\"]\n"))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = Load(cfg)
		if tt.ok != (err == nil) {
			t.Errorf("mode %04o (symlink %v): err = %v", tt.mode, tt.symlink, err)
		}
		if !tt.ok && (!errors.Is(err, ErrUnsafePermissions) || !strings.Contains(err.Error(), "chmod 600 "+file)) {
			t.Errorf("mode %04o: %v does not say what to do", tt.mode, err)
		}
	}
}

// FuzzFromAddress: the From field is the client's text, and the address
// dkim.FromAddresses reads from it decides signing: never a panic, an
// address always has an '@', and a domain that may stand in for '%' has
// nothing in it that could end a tag or a header field (signableDomain).
func FuzzFromAddress(f *testing.F) {
	for _, s := range []string{
		" Alice <alice@example.com>", " <a@b.example;l=0>", " x <a@b.exa\r\n mple>",
		` "alice@example.com" <mallory@evil.example>`, " =?utf-8?q?a=40b.example?= <m@evil.example>",
		" a@[192.0.2.1]", " undisclosed-recipients:;", " a@b.example, c@d.example", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		addrs := dkim.FromAddresses(v)
		if len(addrs) == 0 {
			return
		}
		addr := addrs[0] // the one the milter signs for
		if !strings.Contains(addr, "@") {
			t.Fatalf("FromAddresses(%q) = %q", v, addrs)
		}
		if _, d, ok := splitAddress(addr); ok && signableDomain(d) && strings.ContainsAny(d, " \t\r\n;=\"\\()<>\x00") {
			t.Fatalf("domain %q of %q may stand in for %%", d, v)
		}
	})
}
