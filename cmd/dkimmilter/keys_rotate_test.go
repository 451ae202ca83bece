package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// rotate makes the new key next to the old one, prints the five steps
// with the lines that change and dates from the clock, and touches
// nothing else.
func TestKeysRotate(t *testing.T) {
	tests := []struct {
		expire string // sign.expire; "" for the default (7 days)
		days   int
		until  string
		why    string
	}{
		{"", 9, "2026-11-23", "sign.expire (7 days)"},
		{`expire = "0"`, 9, "2026-11-23", "sign.expire is 0, so signatures carry no x="},
		{`expire = "24h"`, 9, "2026-11-23", "signatures expire after sign.expire (1 day), but a message can wait"},
		{`expire = "336h"`, 16, "2026-11-30", "sign.expire (14 days)"},
		{`expire = "200h"`, 11, "2026-11-25", "sign.expire (200h) after"},
		{`expire = "90m"`, 9, "2026-11-23", "sign.expire (1h30m)"},
	}
	for _, tt := range tests {
		t.Run(tt.expire, func(t *testing.T) {
			f := newKeysFixture(t, tt.expire)
			oldData, _ := os.ReadFile(f.rsa)
			oldInfo, _ := os.Stat(f.rsa)
			cfgBefore, _ := os.ReadFile(f.cfg)

			code, out, errs := rotateAt("-d", "example.com", "-t", "rsa", "-config", f.cfg)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			newFile := filepath.Join(f.dir, "keys/example.com/s202611.pem")
			if fi, err := os.Stat(newFile); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("new key: %v", err)
			}
			pk, _ := keystore.ReadPrivateKey(newFile)
			if pk == nil || pk.KeyType != "rsa" || pk.Bits != 2048 {
				t.Errorf("new key %+v", pk)
			}
			if d, _ := os.ReadFile(f.rsa); !bytes.Equal(d, oldData) {
				t.Error("the old key changed")
			}
			if fi, _ := os.Stat(f.rsa); fi.Mode() != oldInfo.Mode() || !fi.ModTime().Equal(oldInfo.ModTime()) {
				t.Error("the old key file was touched")
			}
			if c, _ := os.ReadFile(f.cfg); !bytes.Equal(c, cfgBefore) {
				t.Error("the config changed")
			}
			for _, want := range []string{
				"Rotating the key of example.com, today 2026-11-14:",
				"old: keys.example-rsa, selector s2026r, rsa 2048 bits, " + f.rsa,
				"new: keys.example-com-s202611, selector s202611, rsa 2048 bits, " + newFile,
				"Step 1 of 5", "Wrote " + newFile,
				"Step 2 of 5", "s202611._domainkey.example.com. IN TXT (",
				"Step 3 of 5", "[keys.example-com-s202611]\ndomain   = \"example.com\"\nselector = \"s202611\"\nfile     = \"" + newFile + "\"\n",
				f.cfg + ":16 (signing[1], from = \"*@example.com\"):\n-keys = [\"example-rsa\", \"example-ed\"]   # dual signing\n+keys = [\"example-com-s202611\", \"example-ed\"]   # dual signing\n",
				f.cfg + ":20 (signing[2], from = \"*@*.example.com\"):\n-keys = ['example-rsa']\n+keys = [\"example-com-s202611\"]\n",
				"run 'dkimmilter check -config " + f.cfg + "'",
				"Step 4 of 5", "  dkimmilter keys check -config " + f.cfg + " example-com-s202611\n", "published and\nmatching",
				"Step 5 of 5", "Keep s2026r._domainkey.example.com published for " + strconv.Itoa(tt.days) + " days after the switch",
				tt.why, "If you switch today, that is until " + tt.until,
				"s2026r._domainkey.example.com. IN TXT ( \"v=DKIM1; k=rsa; p=\" )",
				"remove the [keys.example-rsa] table (" + f.cfg + ":4)",
				"rm " + f.rsa + "\n",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			if t.Failed() {
				t.Log("\n" + out)
			}
			checkRecordOutput(t, out, "s202611._domainkey.example.com", newFile)

			// Doing what step 3 says gives a config that loads and
			// signs with the new key.
			table := out[strings.Index(out, "[keys.example-com-s202611]"):]
			table = table[:strings.Index(table, "\n\n")+1]
			edited := string(cfgBefore) + "\n" + table
			for _, m := range regexp.MustCompile(`(?m)^-(.*)\n\+(.*)$`).FindAllStringSubmatch(out, -1) {
				edited = strings.Replace(edited, m[1], m[2], 1)
			}
			cfg, err := config.Parse(f.cfg, []byte(edited))
			if err != nil {
				t.Fatalf("%v\n%s", err, edited)
			}
			if got := strings.Join(cfg.Signing[0].Keys, ",") + " " + strings.Join(cfg.Signing[1].Keys, ","); got != "example-com-s202611,example-ed example-com-s202611" {
				t.Errorf("rules after the switch: %s", got)
			}
			if _, _, err := keystore.Load(cfg); err != nil {
				t.Error(err)
			}
		})
	}
}

// Rotating in the month of the current key's selector, to another type,
// and into another directory.
func TestKeysRotateChoices(t *testing.T) {
	f := newKeysFixture(t, "")
	// The old key's selector is this month's: the new one gets a suffix.
	os.Rename(f.ed, filepath.Join(f.dir, "keys/example.com/s202611.pem"))
	cfg, _ := os.ReadFile(f.cfg)
	os.WriteFile(f.cfg, bytes.ReplaceAll(cfg, []byte("s2026e"), []byte("s202611")), 0o644)
	code, out, errs := rotateAt("-d", "example.com", "-t", "ed25519", "-config", f.cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "new: keys.example-com-s202611e, selector s202611e, ed25519 256 bits") || !strings.Contains(out, "\n-keys = [\"example-rsa\", \"example-ed\"]   # dual signing\n+keys = [\"example-rsa\", \"example-com-s202611e\"]   # dual signing\n") {
		t.Errorf("output:\n%s", out)
	}
	if strings.Contains(out, "signing[2]") {
		t.Error("the rule that does not use the old key is listed")
	}
	if strings.Contains(out, "Ed25519 only") {
		t.Error("warned about Ed25519 only, but the rule keeps its RSA key")
	}

	// -key picks the key, -dir the directory, -b the size; the type
	// changes with -t when the domain has no key of that type.
	g := newKeysFixture(t, "")
	newDir := filepath.Join(g.dir, "newkeys")
	code, out, errs = rotateAt("-d", "example.com", "-key", "example-ed", "-t", "rsa", "-b", "1024", "-dir", newDir, "-s", "next", "-config", g.cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "old: keys.example-ed, selector s2026e, ed25519") || !strings.Contains(out, "new: keys.example-com-next, selector next, rsa 1024 bits, "+filepath.Join(newDir, "example.com/next.pem")) {
		t.Errorf("output:\n%s", out)
	}
	if strings.Contains(out, "Ed25519 only") {
		t.Error("warned about Ed25519 only when rotating to RSA")
	}
	if !strings.Contains(errs, "warning: a 1024-bit RSA key") || !strings.Contains(out, "s2026e._domainkey.example.com. IN TXT ( \"v=DKIM1; k=ed25519; p=\" )") {
		t.Errorf("stderr %q; output:\n%s", errs, out)
	}

	// Replacing the RSA key by an Ed25519 one leaves both rules
	// Ed25519-only: a note says so for each.
	h := newKeysFixture(t, "")
	code, out, errs = rotateAt("-d", "example.com", "-key", "example-rsa", "-t", "ed25519", "-config", h.cfg)
	if code != 0 || strings.Count(out, "Ed25519 only") != 2 || !strings.Contains(out, "Note: signing[2] then signs with Ed25519 only") {
		t.Errorf("exit %d %s; output:\n%s", code, errs, out)
	}
}

// A selector whose name already has a record is never chosen: after a
// quick rotation the retired key's revoked record (p=) stays published
// while its file and table are gone.
func TestKeysRotateSkipsPublishedSelectors(t *testing.T) {
	f := newKeysFixture(t, "")
	f.dns.SetTXT("s202611._domainkey.example.com", "v=DKIM1; k=rsa; p=")
	f.dns.SetTXT("s202611r._domainkey.example.com", "v=DKIM1; k=rsa; p=MIIB")
	code, out, errs := rotateAt("-d", "example.com", "-t", "rsa", "-config", f.cfg)
	if code != 0 || !strings.Contains(out, "new: keys.example-com-s202611r2, selector s202611r2, rsa") {
		t.Errorf("exit %d %s; output:\n%s", code, errs, out)
	}
	code, out, errs = rotateAt("-d", "example.com", "-t", "rsa", "-s", "s202611", "-config", f.cfg)
	if code != exitUsage || out != "" || !strings.Contains(errs, `selector "s202611" already has a record at s202611._domainkey.example.com`) {
		t.Errorf("-s with a record: exit %d %s", code, errs)
	}
	// A lookup that fails does not stop a rotation; the warning says
	// to check by hand.
	g := newKeysFixture(t, "")
	g.dns.SetRcode("s202611._domainkey.example.com", 2) // SERVFAIL
	code, out, errs = rotateAt("-d", "example.com", "-t", "rsa", "-config", g.cfg)
	if code != 0 || !strings.Contains(out, "selector s202611,") || !strings.Contains(errs, "warning: could not check that s202611._domainkey.example.com has no record") {
		t.Errorf("SERVFAIL: exit %d %s; output:\n%s", code, errs, out)
	}
}

func TestKeysRotateErrors(t *testing.T) {
	f := newKeysFixture(t, "")
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-d", "example.org"}, exitUsage, "no key for example.org in " + f.cfg + "; the configured domains are example.com (hint: 'dkimmilter keys gen -d example.org'"},
		{[]string{"-d", "example.com"}, exitUsage, "example.com has several keys: example-ed (ed25519, signing[1] *@example.com); example-rsa (rsa, signing[1] *@example.com, signing[2] *@*.example.com); say which one to replace with -t rsa, -t ed25519 or -key NAME"},
		{[]string{"-d", "example.com", "-key", "exmple-ed"}, exitUsage, `did you mean "example-ed"?`},
		{[]string{"-d", "example.com", "-t", "rsa", "-s", "s2026e"}, exitUsage, `selector "s2026e" is already used`},
		{[]string{"-d", "example.com", "-t", "rsa", "-b", "100"}, exitUsage, "100 bits"},
		{[]string{"-t", "rsa"}, exitUsage, "-d DOMAIN is required"},
	}
	for _, tt := range tests {
		code, out, errs := rotateAt(append(tt.args, "-config", f.cfg)...)
		if code != tt.code || !strings.Contains(errs, tt.want) || out != "" {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", tt.args, code, errs, tt.code, tt.want)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(f.dir, "keys/example.com")); len(entries) != 2 {
		t.Errorf("keys written: %v", entries)
	}
	// Never over an existing file.
	os.WriteFile(filepath.Join(f.dir, "keys/example.com/taken.pem"), []byte("x"), 0o600)
	if code, _, errs := rotateAt("-d", "example.com", "-t", "rsa", "-s", "taken", "-config", f.cfg); code != exitFailure || !strings.Contains(errs, "taken.pem already exists") {
		t.Errorf("existing file: exit %d %s", code, errs)
	}
	if code, _, errs := rotateAt("-d", "example.com", "-config", filepath.Join(f.dir, "none.toml")); code != exitConfig || !strings.Contains(errs, "none.toml") {
		t.Errorf("missing config: exit %d %s", code, errs)
	}
}

// The switch shows the keys array where the config has it: on its own
// line, inside an inline table (only the array changes), or, spread over
// several lines, as the rule's keys in TOML at the rule's place.
func TestSwitchLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dkimmilter.toml")
	text := `signing = [ { from = "*@old.example", keys = ["old", "ed"] } ]
[keys.old]
domain = "example.com"
selector = "s1"
file = "/k1.pem"
[keys.ed]
domain = "example.com"
selector = "s2"
file = "/k2.pem"
`
	os.WriteFile(path, []byte(text), 0o600)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	before, after, where := switchLines(cfg, cfg.Signing[0], "old", "new")
	if before != `signing = [ { from = "*@old.example", keys = ["old", "ed"] } ]` ||
		after != `signing = [ { from = "*@old.example", keys = ["new", "ed"] } ]` || where != path+":1" {
		t.Errorf("inline table:\n-%s\n+%s\n%s", before, after, where)
	}

	text = "[[signing]]\nfrom = \"*\"\nkeys = [\n  \"old\",\n]\n" + text[strings.Index(text, "\n")+1:]
	os.WriteFile(path, []byte(text), 0o600)
	if cfg, err = config.Load(path); err != nil {
		t.Fatal(err)
	}
	before, after, where = switchLines(cfg, cfg.Signing[0], "old", "new")
	if before != `keys = ["old"]` || after != `keys = ["new"]` || where != path+":1" {
		t.Errorf("array over lines:\n-%s\n+%s\n%s", before, after, where)
	}
}
