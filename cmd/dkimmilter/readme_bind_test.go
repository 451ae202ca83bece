package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The README's BIND statements for rotation, as a new user pastes them into
// named.conf.local, are a configuration named accepts: named-checkconf
// loads them with the key tsig-keygen writes and the zone they name.
func TestReadmeBINDWalkthrough(t *testing.T) {
	checkconf, err := exec.LookPath("named-checkconf")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("named-checkconf (Debian package bind9-utils) is missing, and CI=true: %v", err)
		}
		t.Skip("named-checkconf (Debian package bind9-utils) is not installed")
	}
	keygen, err := exec.LookPath("tsig-keygen")
	if err != nil {
		keygen = "/usr/sbin/tsig-keygen"
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var stmts string
	for _, part := range strings.Split(string(readme), "```text\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		if strings.Contains(block, "grant dkimmilter-example.com.") {
			stmts = block
		}
	}
	if stmts == "" {
		t.Fatal("README.md: no ```text block with the update-policy granting dkimmilter-example.com.")
	}
	// The README's tsig-keygen line, run for real, makes the key file.
	if !strings.Contains(string(readme), "tsig-keygen -a hmac-sha256 dkimmilter-example.com > /etc/bind/dkimmilter-example.com.key") {
		t.Fatal("README.md: the tsig-keygen line does not make the key file the statements include")
	}
	dir := t.TempDir()
	key, err := exec.Command(keygen, "-a", "hmac-sha256", "dkimmilter-example.com").Output()
	if err != nil {
		t.Fatalf("tsig-keygen: %v", err)
	}
	keyFile, zoneFile := filepath.Join(dir, "dkimmilter-example.com.key"), filepath.Join(dir, "db.example.com")
	if err := os.WriteFile(keyFile, key, 0o640); err != nil {
		t.Fatal(err)
	}
	zone := "$TTL 300\n@ IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 300\n@ IN NS ns1.example.com.\nns1 IN A 192.0.2.53\n"
	if err := os.WriteFile(zoneFile, []byte(zone), 0o644); err != nil {
		t.Fatal(err)
	}
	stmts = strings.NewReplacer("/etc/bind/dkimmilter-example.com.key", keyFile, "/var/lib/bind/db.example.com", zoneFile).Replace(stmts)
	conf := filepath.Join(dir, "named.conf")
	if err := os.WriteFile(conf, []byte("options { directory \""+dir+"\"; };\n"+stmts), 0o644); err != nil {
		t.Fatal(err)
	}
	// -z loads the zone too, so a statement that names it wrongly fails.
	out, err := exec.Command(checkconf, "-z", conf).CombinedOutput()
	if err != nil {
		t.Fatalf("named-checkconf -z rejects the README's statements: %v\n%s\n%s", err, out, stmts)
	}
	if !strings.Contains(string(out), "zone example.com/IN: loaded serial 1") {
		t.Errorf("named-checkconf -z did not load example.com:\n%s", out)
	}
}
