package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/pgtest"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// check, run as root as the README says, judges the database as the
// daemon's user: with peer authentication (`local all dkimmilter peer`)
// root's own connection is refused, and the child process that runs the
// queries as the service user gets in. The service user here is nobody,
// which every system has (peer authentication wants a role of the same
// name).
func TestCheckDatabaseAsServiceUser(t *testing.T) {
	requireRoot(t)
	const user = "nobody"
	acct, err := keystore.LookupAccount(user)
	if err != nil {
		t.Fatalf("no user %s: %v", user, err)
	}
	c := pgtest.New(t)
	c.Exec(t, c.DSN("postgres"), "CREATE ROLE "+user+" LOGIN")
	dsn := c.CreateDB(t, "CREATE TABLE dkim_keys (domain text PRIMARY KEY, selector text, private_key text)",
		"GRANT SELECT ON dkim_keys TO "+user)
	c.Peer(t, user)
	peer := strings.Replace(dsn, "user=postgres", "user="+user, 1)

	// The premise: as root, that DSN is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, peer); err == nil {
		conn.Close(ctx)
		t.Fatal("root connected as " + user + ": the server does not use peer authentication")
	} else if !strings.Contains(err.Error(), "Peer authentication failed") {
		t.Fatalf("root's connection: %v", err)
	}

	f := newFixture(t, "[database]\ndsn = "+config.TOMLString(peer)+`
[keys.db]
domain = "%"
query = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1"
[[signing]]
from = "*@*"
keys = ["db"]
`)
	// The service user reads the configuration and its key, makes the
	// socket in the fixture's directory, and runs a
	// copy of this test binary (go test's own directory is root's).
	exe := filepath.Join(f.dir, "dkimmilter")
	copyFile(t, exe)
	for _, p := range []string{f.dir, filepath.Join(f.dir, "keys")} {
		os.Chmod(p, 0o755)
	}
	os.Chown(f.dir, acct.UID, acct.Groups[0]) // it makes the socket there
	os.Chmod(f.cfg, 0o644)
	os.Chown(filepath.Join(f.dir, "keys/rsa.pem"), acct.UID, acct.Groups[0])
	old := checkDBAsExe
	checkDBAsExe = func() (string, error) { return exe, nil }
	t.Cleanup(func() { checkDBAsExe = old })
	t.Setenv("DKIMMILTER_TEST_MAIN", "1")

	code, out, errs := runCmd("check", "-config", f.cfg, "-user", user)
	if code != exitOK || !strings.Contains(out, "key db: the query runs (no row for ") || !strings.Contains(out, "(as user "+user+")") {
		t.Errorf("exit %d\n%s%s", code, out, errs)
	}

	// A configuration the service user cannot read: the child cannot
	// start its check, and says which file.
	os.Chmod(f.cfg, 0o600)
	code, out, errs = runCmd("check", "-config", f.cfg, "-user", user)
	if code != exitConfig || !strings.Contains(errs, "database: checking as user "+user+" failed") || !strings.Contains(errs, "that user must be able to read "+f.cfg) {
		t.Errorf("unreadable configuration: exit %d\n%s%s", code, out, errs)
	}
	os.Chmod(f.cfg, 0o644)

	// A server that refuses the service user too: the error, from the
	// child, names the server and the user.
	c.Exec(t, dsn, "REVOKE SELECT ON dkim_keys FROM "+user)
	code, out, errs = runCmd("check", "-config", f.cfg, "-user", user)
	if code != exitConfig || !strings.Contains(errs, "permission denied for table dkim_keys") || !strings.Contains(errs, "user "+user) {
		t.Errorf("exit %d\n%s%s", code, out, errs)
	}
}

func copyFile(t *testing.T, to string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
