package main

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/keystore/rotation"
)

// A key with a query that rotates: check wants the rotation table and
// the grants on it; keys rotation shows each domain's state from it (-d
// one), and keys list, keys check and keys dns take the key a domain's
// rotation switched to, as the daemon does.
func TestDatabaseRotationCommands(t *testing.T) {
	f, c, dsn := dbFixture(t, "", listQuery+`
rotate  = "30d"
publish = "p"
[publish.p]
method  = "command"
command = ["/bin/true"]
`)
	code, out, errs := runCmd("check", "-config", f.cfg, "-user", me)
	if code != exitConfig {
		t.Fatalf("check without the table: exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, errs, "keys.db.rotate: PostgreSQL (host ", "keys with a query rotate, and need the table dkimmilter_rotation", `relation "dkimmilter_rotation" does not exist`,
		"hint: create it as the README says (CREATE TABLE dkimmilter_rotation (")

	c.Exec(t, dsn, keystore.RotationSchema)
	code, out, errs = runCmd("check", "-config", f.cfg, "-user", me)
	if code != exitOK {
		t.Fatalf("check: exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "rotates every 30 days", "state in table dkimmilter_rotation", "rotation: table dkimmilter_rotation ready (SELECT, INSERT, UPDATE)")

	// A role that may only read the table: check names what to grant.
	role := "dkimmilter_rot_" + strconv.Itoa(os.Getpid())
	c.Exec(t, dsn, "CREATE ROLE "+role+" LOGIN")
	t.Cleanup(func() {
		c.Exec(t, dsn, "DROP OWNED BY "+role)
		c.Exec(t, c.DSN("postgres"), "DROP ROLE IF EXISTS "+role)
	})
	c.Exec(t, dsn, "GRANT SELECT ON dkim_keys, dkimmilter_rotation TO "+role)
	data := readFile(t, f.cfg)
	writeFile(t, f.cfg, strings.Replace(data, "user=postgres", "user="+role, 1))
	code, _, errs = runCmd("check", "-config", f.cfg, "-user", me)
	if code != exitConfig {
		t.Fatalf("check with a role that may only read the table: exit %d\n%s", code, errs)
	}
	wantOutput(t, errs, "keys.db.rotate: PostgreSQL (host ", "role "+role+" may not INSERT or UPDATE rows of dkimmilter_rotation, where rotation keeps its states (hint: GRANT SELECT, INSERT, UPDATE ON dkimmilter_rotation TO "+role+")")
	writeFile(t, f.cfg, data)

	// a.example has rotated to s2; its old key sa is retiring.
	next, old := testkit.RSAKey(2048), testkit.RSAKey(2048)
	f.dns.SetTXT("s0._domainkey.a.example", testkit.KeyRecord(old, ""))
	pem := string(testkit.KeyPEM(next, false))
	since := time.Date(2027, 1, 5, 10, 0, 0, 0, time.UTC)
	st := rotation.State{Version: 1, Key: "db", Domain: "a.example",
		Active:   rotation.KeyState{Selector: "s2", Made: true, PEM: pem, Record: testkit.KeyRecord(next, ""), Created: since, Since: since},
		Retiring: []rotation.KeyState{{Selector: "s0", Record: testkit.KeyRecord(old, ""), SwitchedAt: since, RevokeAt: since.Add(9 * 24 * time.Hour)}}}
	state, _ := json.Marshal(st)
	c.Exec(t, dsn, "INSERT INTO dkimmilter_rotation (key, domain, state, active_selector, active_private_key) VALUES ('db', 'a.example', $1, 's2', $2)", state, pem)
	f.dns.SetTXT("s2._domainkey.a.example", testkit.KeyRecord(next, ""))

	code, out, errs = runCmd("keys", "rotation", "-config", f.cfg, "-d", "a.example", "db")
	if code != exitOK {
		t.Fatalf("keys rotation: exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "keys.db (a.example) rotates every 30 days; state in table dkimmilter_rotation (key db, domain a.example)",
		"active", "s2", "signs since 2027-01-05 10:00:00 UTC", "retiring", "s0", "record kept until its revocation at 2027-01-14 10:00:00 UTC")
	if strings.Contains(out, "configured: selector") {
		t.Errorf("a key with a query has no configured selector:\n%s", out)
	}

	code, out, _ = runCmd("keys", "list", "-config", f.cfg)
	if code != exitOK {
		t.Fatalf("keys list: exit %d\n%s", code, out)
	}
	wantOutput(t, out, "db ", "a.example", "s2", "rsa", "2048", "database (rotation)", "db ", "b.example", "sb",
		"keys.db (a.example) rotates every 30 days")

	code, out, _ = runCmd("keys", "check", "-config", f.cfg, "-d", "a.example")
	if code != exitOK {
		t.Errorf("keys check -d a.example: exit %d\n%s", code, out)
	}
	wantOutput(t, out, "ok   db (a.example) s2._domainkey.a.example: rsa 2048-bit key published and matching")

	// rotate removed while a domain signs with a key rotation made:
	// check fails, saying what to do first.
	writeFile(t, f.cfg, strings.NewReplacer(`rotate  = "30d"`, "", `publish = "p"`, "").Replace(data))
	code, _, errs = runCmd("check", "-config", f.cfg, "-user", me)
	if code != exitConfig {
		t.Fatalf("check with rotate removed: exit %d\n%s", code, errs)
	}
	wantOutput(t, errs, "keys.db does not rotate, but rotation switched 1 of its domains to keys it made (in dkimmilter_rotation)", "hint: put rotate back")
	writeFile(t, f.cfg, data)

	// A row that is not a state: the commands say so, and cannot tell
	// which key signs.
	c.Exec(t, dsn, "UPDATE dkimmilter_rotation SET state = '{\"version\": 1}'")
	code, out, _ = runCmd("keys", "rotation", "-config", f.cfg, "db")
	if code != exitConfig {
		t.Errorf("keys rotation with a damaged row: exit %d\n%s", code, out)
	}
	wantOutput(t, out, "cannot read the state: dkimmilter_rotation, key db, domain a.example: not a rotation state", "DELETE FROM dkimmilter_rotation WHERE key = 'db' AND domain = 'a.example'")
}
