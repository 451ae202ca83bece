package keystore

import (
	"crypto"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/pgtest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// A rotating key with a query signs with the key rotation switched a
// domain to (dkimmilter_rotation's active columns), in place of the key
// query's; with NULL columns or no row, with the query's; for a domain
// gone from the admin's table, with none. Without the table, a rotating
// key's lookups fail, naming the table and where to find its definition.
func TestRotatedDatabaseKey(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, keySchema, RotationSchema)
	conf, next := testkit.RSAKey(2048), testkit.RSAKey(2048)
	insertKey(t, c, dsn, "rotated.example", "s1", string(testkit.KeyPEM(conf, false)))
	insertKey(t, c, dsn, "pending.example", "s1", string(testkit.KeyPEM(conf, false)))
	insertKey(t, c, dsn, "new.example", "s1", string(testkit.KeyPEM(conf, false)))
	insertKey(t, c, dsn, "bad.example", "s1", string(testkit.KeyPEM(conf, false)))
	ins := "INSERT INTO dkimmilter_rotation (key, domain, state, active_selector, active_private_key) VALUES ('db', $1, '{}', $2, $3)"
	c.Exec(t, dsn, ins, "rotated.example", "s2", string(testkit.KeyPEM(next, false)))
	c.Exec(t, dsn, ins, "pending.example", nil, nil)
	c.Exec(t, dsn, ins, "gone.example", "s2", string(testkit.KeyPEM(next, false)))
	c.Exec(t, dsn, ins, "bad.example", "s2", "not a key")
	s, _ := dbStore(t, dsn, "", "")
	s.cfg.Keys["db"].Rotate = 30 * 24 * time.Hour

	for _, tc := range []struct{ from, selector, keyName, err string }{
		{from: "a@rotated.example", selector: "s2", keyName: "db"},
		{from: "a@pending.example", selector: "s1", keyName: "db"},
		{from: "a@new.example", selector: "s1", keyName: "db"},
		{from: "a@gone.example"},
		{from: "a@bad.example", err: "keys.db, domain bad.example: dkimmilter_rotation: selector s2, private_key: not a private key"},
	} {
		sel, err := s.Lookup(tc.from)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one with %q", tc.from, err, tc.err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.from, err)
		case tc.selector == "":
			if sel != nil {
				t.Errorf("%s: signed by %s with %s, want no key", tc.from, sel.Keys[0].Name, sel.Keys[0].Selector)
			}
		case sel == nil || sel.Keys[0].Name != tc.keyName || sel.Keys[0].Selector != tc.selector:
			t.Errorf("%s: %+v, want keys.%s, selector %s", tc.from, sel, tc.keyName, tc.selector)
		}
	}
	if sel, _ := s.Lookup("a@rotated.example"); sel == nil || !sel.Keys[0].PrivateKey.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(next.Public()) {
		t.Error("rotated.example signs with the selector s2 but not with the rotated key")
	}

	c.Exec(t, dsn, "DROP TABLE dkimmilter_rotation")
	s2, _ := dbStore(t, dsn, "", "")
	s2.cfg.Keys["db"].Rotate = 30 * 24 * time.Hour
	_, err := s2.Lookup("a@new.example")
	if err == nil || !strings.Contains(err.Error(), "dkimmilter_rotation (keys.db rotates: the table dkimmilter_rotation must exist") {
		t.Errorf("without the table: %v, want an error naming it", err)
	}
}
