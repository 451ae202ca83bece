package main

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// The fixed clock of these tests: the default selector is s202611.
var keysNow = time.Date(2026, 11, 14, 9, 30, 0, 0, time.UTC)

func edKey() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func runKeysAt(f func([]string, *bytes.Buffer, *bytes.Buffer) int, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := f(args, &out, &errb)
	return code, out.String(), errb.String()
}

func genAt(args ...string) (int, string, string) {
	return runKeysAt(func(a []string, o, e *bytes.Buffer) int { return keysGen(a, o, e, keysNow) }, args...)
}

func rotateAt(args ...string) (int, string, string) {
	return runKeysAt(func(a []string, o, e *bytes.Buffer) int { return keysRotate(a, o, e, keysNow) }, args...)
}

func listAt(args ...string) (int, string, string) {
	return runKeysAt(func(a []string, o, e *bytes.Buffer) int { return keysList(a, o, e, keysNow) }, args...)
}

var quotedRE = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)

// checkRecordOutput finds the zone line and the one-line value for name in
// out, checks that they say the same, that no string is over 255 bytes,
// and that the record holds the public half of the key in file. It
// returns the zone line.
func checkRecordOutput(t *testing.T, out, name, file string) string {
	t.Helper()
	var zone, single string
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, name+". IN TXT (") {
			zone = l
			for _, next := range lines[i+1:] {
				if next != "" && !strings.HasPrefix(next, ";") {
					single = next
					break
				}
			}
			break
		}
	}
	if zone == "" || !strings.HasPrefix(single, "v=DKIM1; ") {
		t.Fatalf("no zone line and value for %s in:\n%s", name, out)
	}
	var joined string
	for _, m := range quotedRE.FindAllStringSubmatch(zone, -1) {
		if len(m[1]) > 255 {
			t.Errorf("string of %d bytes: %s", len(m[1]), m[1])
		}
		joined += m[1]
	}
	if joined != single {
		t.Errorf("zone line and single line differ:\n%s\n%s", joined, single)
	}
	rec, err := dkim.ParseKeyRecord(single)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := keystore.ReadPrivateKey(file)
	if err != nil {
		t.Fatal(err)
	}
	if !pk.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(rec.Key) {
		t.Errorf("the record for %s is not the key in %s", name, file)
	}
	return zone
}

// gen prints the three parts (zone line, one line, TOML), and writes the
// key 0600 in directories 0700; the TOML loads with the daemon's parser.
func TestKeysGen(t *testing.T) {
	for _, kind := range []string{"rsa", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			code, out, errs := genAt("-d", "Example.COM.", "-t", kind, "-dir", dir)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			file := filepath.Join(dir, "example.com", "s202611.pem")
			for p, mode := range map[string]os.FileMode{file: 0o600, filepath.Dir(file): 0o700, dir: 0o700} {
				if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != mode {
					t.Errorf("%s: %v, want mode %04o", p, err, mode)
				}
			}
			for _, want := range []string{
				"# Wrote " + file + ": " + kind,
				"; 1. The DNS record, in zone-file syntax",
				`s202611._domainkey.example.com. IN TXT ( "v=DKIM1; k=` + kind + `; `,
				"; 2. The same record on one line",
				"\nv=DKIM1; k=" + kind + "; p=",
				"# 3. The configuration",
				"[keys.example-com-s202611]\ndomain   = \"example.com\"\nselector = \"s202611\"\nfile     = \"" + file + "\"\n",
				"[[signing]]\nfrom = \"*@example.com\"\nkeys = [\"example-com-s202611\"]\n",
				"dkimmilter keys check example-com-s202611",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			zone := checkRecordOutput(t, out, "s202611._domainkey.example.com", file)
			if n := strings.Count(zone, `" "`) + 1; kind == "rsa" && n != 3 {
				t.Errorf("a 2048-bit RSA record in %d strings, want 3 (tags, and p= in two)", n)
			}
			toml := out[strings.Index(out, "[keys."):]
			cfg, err := config.Parse(filepath.Join(t.TempDir(), "dkimmilter.toml"), []byte(toml))
			if err != nil {
				t.Fatalf("the printed config does not load: %v\n%s", err, toml)
			}
			if k := cfg.Keys["example-com-s202611"]; k == nil || k.File != file {
				t.Errorf("keys %+v", cfg.Keys)
			}
			if _, _, err := keystore.Load(cfg); err != nil {
				t.Errorf("keystore: %v", err)
			}
		})
	}
}

// A second gen with the same selector fails, names the file, and leaves
// the first key as it was.
func TestKeysGenNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	if code, _, errs := genAt("-d", "example.com", "-s", "sel", "-t", "ed25519", "-dir", dir); code != 0 {
		t.Fatal(errs)
	}
	file := filepath.Join(dir, "example.com", "sel.pem")
	before, _ := os.ReadFile(file)
	for _, kind := range []string{"ed25519", "rsa"} {
		code, out, errs := genAt("-d", "example.com", "-s", "sel", "-t", kind, "-dir", dir)
		if code != exitFailure || !strings.Contains(errs, file+" already exists") || !strings.Contains(errs, "never overwritten") || out != "" {
			t.Errorf("exit %d, stderr %q, stdout %q", code, errs, out)
		}
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Error("the first key was changed")
	}
}

func TestKeysGenUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{"-b", "512"}, exitUsage, "512 bits; RFC 8301 §3.2 forbids"},
		{[]string{"-b", "16384"}, exitUsage, "up to 4096 bits"},
		{[]string{"-b", "1024"}, exitOK, "warning: a 1024-bit RSA key"},
		{[]string{"-t", "ed25519", "-b", "2048"}, exitUsage, "always 256 bits"},
		{[]string{"-t", "dsa"}, exitUsage, `unknown key type "dsa"`},
		{[]string{"-d", ""}, exitUsage, "-d DOMAIN is required"},
		{[]string{"-d", "../etc"}, exitUsage, "not a domain name"},
		{[]string{"-d", "%"}, exitUsage, "not a domain name"},
		{[]string{"-s", "a/b"}, exitUsage, "not a selector"},
		{[]string{"-s", ".."}, exitUsage, "not a selector"},
		{[]string{"example.com"}, exitUsage, `unexpected argument "example.com"`},
		{[]string{"-frob"}, exitUsage, "flag provided but not defined"},
		{[]string{"-h"}, exitOK, "usage: dkimmilter keys gen -d DOMAIN"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		args := append([]string{"-d", "example.com", "-dir", dir}, tt.args...)
		code, _, errs := genAt(args...)
		if code != tt.code || !strings.Contains(errs, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", tt.args, code, errs, tt.code, tt.want)
		}
		if code != exitOK || tt.args[0] == "-h" {
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("%v: wrote %v", tt.args, entries)
			}
		}
	}
	// Through the command table, as a user types it.
	if code, _, errs := runCmd("keys", "gen", "-t", "ed25519", "-d", "example.com", "-dir", t.TempDir()); code != 0 {
		t.Errorf("dkimmilter keys gen: exit %d: %s", code, errs)
	}
}

// The default selector is the month; when DIR/DOMAIN has a key of that
// name already, the algorithm is appended.
func TestKeysGenDefaultSelector(t *testing.T) {
	dir := t.TempDir()
	for _, step := range []struct{ kind, want string }{
		{"rsa", "s202611"}, {"ed25519", "s202611e"}, {"rsa", "s202611r"}, {"ed25519", "s202611e2"},
	} {
		code, out, errs := genAt("-d", "example.com", "-t", step.kind, "-b", map[string]string{"rsa": "1024", "ed25519": "0"}[step.kind], "-dir", dir)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		if !strings.Contains(out, "\n"+step.want+"._domainkey.example.com. IN TXT") {
			t.Errorf("%s: want selector %s:\n%s", step.kind, step.want, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "example.com", step.want+".pem")); err != nil {
			t.Error(err)
		}
	}
}

// keysFixture is a config with an old RSA key used by two rules, an
// Ed25519 key, and whatever extra says.
type keysFixture struct {
	dir, cfg, rsa, ed string
	dns               *dnstest.Server // the [dns] nameserver: no test asks the machine's resolver
}

func newKeysFixture(t *testing.T, extra string) *keysFixture {
	t.Helper()
	dir := t.TempDir()
	f := &keysFixture{dir: dir, cfg: filepath.Join(dir, "dkimmilter.toml"), dns: dnstest.New(t)}
	f.rsa = testkit.WriteKey(dir, "keys/example.com/s2026r.pem", testkit.RSAKey(2048), true)
	f.ed = testkit.WriteKey(dir, "keys/example.com/s2026e.pem", edKey(), false)
	text := "[sign]\n" + extra + `

[keys.example-rsa]
domain   = "example.com"
selector = "s2026r"
file     = "keys/example.com/s2026r.pem"

[keys.example-ed]
domain   = "example.com"
selector = "s2026e"
file     = "keys/example.com/s2026e.pem"

[[signing]]
from = "*@example.com"
keys = ["example-rsa", "example-ed"]   # dual signing

[[signing]]
from = "*@*.example.com"
keys = ['example-rsa']

[dns]
nameservers = ["` + f.dns.Addr + `"]
`
	if err := os.WriteFile(f.cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *keysFixture) add(t *testing.T, text string) {
	t.Helper()
	old, _ := os.ReadFile(f.cfg)
	if err := os.WriteFile(f.cfg, append(old, text...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// list shows each key with its type, size, permissions, age and rules,
// one row per file for a '%' key, and the problems below the table.
func TestKeysList(t *testing.T) {
	f := newKeysFixture(t, "")
	os.Chtimes(f.rsa, keysNow, keysNow.Add(-412*24*time.Hour-time.Hour))
	os.Chtimes(f.ed, keysNow, keysNow.Add(-36*time.Hour))
	os.Chmod(f.ed, 0o660)
	for _, d := range []string{"example.org", "example.net"} {
		p := testkit.WriteKey(f.dir, "hosted/"+d+"/h1.pem", edKey(), false)
		os.Chtimes(p, keysNow, keysNow)
	}
	f.add(t, `
[keys.hosted]
domain   = "%"
selector = "h1"
file     = "hosted/%/h1.pem"

[keys.nowhere]
domain   = "%"
selector = "x"
file     = "none/%.pem"

[keys.gone]
domain   = "example.info"
selector = "s1"
file     = "keys/gone.pem"

[[signing]]
from = "*"
keys = ["hosted"]
`)
	code, out, errs := listAt("-config", f.cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	t.Log("\n" + out)
	rows := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		fields := strings.Fields(l)
		if len(fields) > 2 {
			rows[fields[0]+" "+fields[1]] = strings.Join(fields, " ")
		}
	}
	for key, want := range map[string]string{
		"NAME DOMAIN":             "NAME DOMAIN SELECTOR TYPE BITS FILE PERMISSIONS AGE USED BY",
		"example-rsa example.com": "example-rsa example.com s2026r rsa 2048 " + f.rsa + " 0600 ok 412 days signing[1] *@example.com, signing[2] *@*.example.com",
		"example-ed example.com":  "example-ed example.com s2026e ed25519 256 " + f.ed + " 0660 BAD: open to its group (chmod 600) 1 day signing[1] *@example.com",
		"hosted example.org":      "hosted example.org h1 ed25519 256 " + filepath.Join(f.dir, "hosted/example.org/h1.pem") + " 0600 ok today signing[3] *",
		"hosted example.net":      "hosted example.net h1 ed25519 256 " + filepath.Join(f.dir, "hosted/example.net/h1.pem") + " 0600 ok today signing[3] *",
		"gone example.info":       "gone example.info s1 - - " + filepath.Join(f.dir, "keys/gone.pem") + " - - not used",
		"nowhere %":               "nowhere % x - - " + filepath.Join(f.dir, "none/%.pem") + " - - not used",
	} {
		if rows[key] != want {
			t.Errorf("row %s:\n got %q\nwant %q", key, rows[key], want)
		}
	}
	for _, want := range []string{
		"keys.gone: " + filepath.Join(f.dir, "keys/gone.pem") + " does not exist (hint: fix the path, or generate a key with 'dkimmilter keys gen",
		"keys.nowhere: no file matches " + filepath.Join(f.dir, "none/%.pem"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	os.WriteFile(f.cfg, []byte("nonsense = 1\n"), 0o644)
	if code, _, errs := listAt("-config", f.cfg); code != exitConfig || !strings.Contains(errs, "nonsense") {
		t.Errorf("bad config: exit %d %s", code, errs)
	}
	if code, _, errs := listAt("-config", filepath.Join(f.dir, "missing.toml")); code != exitConfig || !strings.Contains(errs, "missing.toml") {
		t.Errorf("missing config: exit %d %s", code, errs)
	}
}

// dns prints the records of the named keys, or of all (one per file for
// a '%' key); an unknown name is a usage error with a suggestion.
func TestKeysDNS(t *testing.T) {
	f := newKeysFixture(t, "")
	org := testkit.WriteKey(f.dir, "hosted/example.org/h1.pem", testkit.RSAKey(4096), false)
	f.add(t, "[keys.hosted]\ndomain = \"%\"\nselector = \"h1\"\nfile = \"hosted/%/h1.pem\"\n")

	code, out, errs := runCmd("keys", "dns", "-config", f.cfg, "example-ed")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	checkRecordOutput(t, out, "s2026e._domainkey.example.com", f.ed)
	if strings.Contains(out, "s2026r") || !strings.Contains(out, "; keys.example-ed: ed25519 256 bits, "+f.ed) {
		t.Errorf("named key:\n%s", out)
	}

	code, out, errs = runCmd("keys", "dns", "-config", f.cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	checkRecordOutput(t, out, "s2026e._domainkey.example.com", f.ed)
	checkRecordOutput(t, out, "s2026r._domainkey.example.com", f.rsa)
	zone := checkRecordOutput(t, out, "h1._domainkey.example.org", org)
	if n := strings.Count(out, " IN TXT ("); n != 3 {
		t.Errorf("%d records, want 3:\n%s", n, out)
	}
	if n := strings.Count(zone, `" "`) + 1; n < 3 {
		t.Errorf("a 4096-bit key in %d strings: %s", n, zone)
	}

	code, out, errs = runCmd("keys", "dns", "-config", f.cfg, "example-ed", "exmple-rsa")
	if code != exitUsage || out != "" || !strings.Contains(errs, `no key "exmple-rsa" in `+f.cfg+` (did you mean "example-rsa"?)`) {
		t.Errorf("unknown name: exit %d, %q %q", code, out, errs)
	}
	// Flags may follow names, as with keys check.
	if code, out2, errs := runCmd("keys", "dns", "example-ed", "-config", f.cfg); code != 0 || !strings.Contains(out2, "s2026e._domainkey") || strings.Contains(out2, "s2026r") {
		t.Errorf("flag after a name: exit %d, %q", code, errs)
	}
	code, _, errs = runCmd("keys", "dns", "-config", f.cfg, "zzz")
	if code != exitUsage || !strings.Contains(errs, "the keys are example-ed, example-rsa, hosted") {
		t.Errorf("unknown name: exit %d, %q", code, errs)
	}
	// One shared key file for every From domain: the record is shown once,
	// for a name with the domain filled in, never for "%".
	f.add(t, "[keys.shared]\ndomain = \"%\"\nselector = \"sh\"\nfile = \"keys/example.com/s2026e.pem\"\n")
	code, out, errs = runCmd("keys", "dns", "-config", f.cfg, "shared")
	if code != 0 || strings.Contains(out, "%") || !strings.Contains(out, "sh._domainkey.D for each From domain") ||
		!strings.Contains(out, "sh._domainkey.example.com. IN TXT") {
		t.Errorf("shared '%%' key: exit %d, %q %q", code, out, errs)
	}
	os.Remove(f.rsa)
	code, out, errs = runCmd("keys", "dns", "-config", f.cfg)
	if code != exitConfig || !strings.Contains(errs, "keys.example-rsa: "+f.rsa+" does not exist") || !strings.Contains(out, "s2026e._domainkey") {
		t.Errorf("missing key file: exit %d, %q", code, errs)
	}
}
