package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/jackc/pgx/v5"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/pgtest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// dbFixture is newFixture with a key from the database for every other
// From domain; the table holds a published RSA key in the column, a
// published Ed25519 key in a file the column names, and a row that cannot
// sign.
func dbFixture(t *testing.T, dsnOverride, keyExtra string) (*fixture, *pgtest.Cluster, string) {
	t.Helper()
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, "CREATE TABLE dkim_keys (domain text PRIMARY KEY, selector text, private_key text)")
	if dsnOverride != "" {
		dsn = dsnOverride
	}
	f := newFixture(t, `
[database]
dsn = `+config.TOMLString(dsn)+`
[keys.db]
domain = "%"
query = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1"
`+keyExtra+`
[[signing]]
from = "*"
keys = ["db"]
`)
	if dsnOverride != "" {
		return f, c, dsn
	}
	rsaKey := testkit.RSAKey(2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edFile := testkit.WriteKey(f.dir, "keys/b.example.pem", edKey, false)
	c.Exec(t, dsn, "INSERT INTO dkim_keys VALUES ('a.example', 'sa', $1), ('b.example', 'sb', $2), ('bad.example', 'sx', 'garbage')",
		string(testkit.KeyPEM(rsaKey, true)), edFile)
	f.dns.SetTXT("sa._domainkey.a.example", testkit.KeyRecord(rsaKey, ""))
	f.dns.SetTXT("sb._domainkey.b.example", testkit.KeyRecord(edKey, ""))
	return f, c, dsn
}

const listQuery = `list_query = "SELECT domain, selector, private_key FROM dkim_keys ORDER BY domain"`

// check connects and runs the queries once; keys list, keys check and
// keys dns work on the database's rows, all of them with list_query or
// the one named with -d, and judge each key as the daemon would.
func TestDatabaseKeyCommands(t *testing.T) {
	f, c, _ := dbFixture(t, "", listQuery)

	code, out, errs := runCmd("check", "-config", f.cfg, "-user", me)
	if code != exitOK {
		t.Fatalf("check: exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "key db: d=%, selector and key from PostgreSQL (host "+c.SocketDir()+" port 5432 database ",
		"; list_query for the keys commands\n", "key db: the query runs (no row for dkimmilter-check.invalid)\n", ": OK\n")

	code, out, _ = runCmd("keys", "list", "-config", f.cfg)
	if code != exitOK {
		t.Fatalf("keys list: exit %d\n%s", code, out)
	}
	wantOutput(t, out, "db ", "a.example", "sa", "rsa", "2048", "database",
		"db ", "b.example", "sb", "ed25519", "256", f.dir+"/keys/b.example.pem", "0600 ok",
		"db ", "bad.example", "sx", "-", "-", "database",
		"keys.db, domain bad.example: private_key: not a private key")

	code, out, _ = runCmd("keys", "check", "-config", f.cfg)
	if code != exitConfig {
		t.Errorf("keys check: exit %d, want %d for a row that cannot sign", code, exitConfig)
	}
	wantOutput(t, out, "ok   db (a.example) sa._domainkey.a.example: rsa 2048-bit key published and matching",
		"ok   db (b.example) sb._domainkey.b.example: ed25519",
		"FAIL db (bad.example) sx._domainkey.bad.example",
		"database row: private_key: not a private key",
		"4 keys checked: 3 ok, 0 with warnings, 1 failing, 0 not checked")

	code, out, _ = runCmd("keys", "check", "-config", f.cfg, "-d", "A.example")
	if code != exitOK {
		t.Errorf("keys check -d: exit %d\n%s", code, out)
	}
	wantOutput(t, out, "ok   db (a.example) sa._domainkey.a.example", "1 key checked: 1 ok")

	code, out, _ = runCmd("keys", "check", "-config", f.cfg, "-d", "none.example")
	if code != exitOK {
		t.Errorf("keys check -d none.example: exit %d\n%s", code, out)
	}
	wantOutput(t, out, "none db (none.example): the query finds no key for none.example in PostgreSQL (host ", "0 keys checked")

	code, out, errs = runCmd("keys", "dns", "-config", f.cfg, "-d", "b.example")
	if code != exitOK {
		t.Fatalf("keys dns: exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "; keys.db: ed25519 256 bits, "+f.dir+"/keys/b.example.pem\n", "sb._domainkey.b.example. IN TXT", "v=DKIM1; k=ed25519; p=")

	code, out, errs = runCmd("keys", "dns", "-config", f.cfg)
	if code != exitConfig || !strings.Contains(errs, "keys.db, domain bad.example: private_key: not a private key") {
		t.Errorf("keys dns: exit %d, stderr %s", code, errs)
	}
	wantOutput(t, out, "sa._domainkey.a.example.", "sb._domainkey.b.example.")
}

// Without list_query the commands say how to name a domain; -d works.
func TestDatabaseKeyCommandsWithoutListQuery(t *testing.T) {
	f, _, _ := dbFixture(t, "", "")
	code, out, _ := runCmd("keys", "list", "-config", f.cfg)
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	wantOutput(t, out, "keys.db: the domains of a key with a query are listed by its list_query, which keys.db has not", "name one with -d DOMAIN")
	code, out, _ = runCmd("keys", "check", "-config", f.cfg, "db")
	if code != exitOK {
		t.Errorf("keys check: exit %d\n%s", code, out)
	}
	wantOutput(t, out, "none db: the domains of a key with a query are listed by its list_query", "0 keys checked")
	code, out, _ = runCmd("keys", "check", "-config", f.cfg, "-d", "a.example")
	if code != exitOK {
		t.Errorf("keys check -d: exit %d\n%s", code, out)
	}
}

// check fails, naming the server but never the password, when the
// database does not answer, and when a query does not run or its row for
// a rule's domain cannot sign.
func TestDatabaseCheckErrors(t *testing.T) {
	t.Run("down", func(t *testing.T) {
		dir := t.TempDir()
		f, _, _ := dbFixture(t, "host="+dir+" dbname=mail user=dkimmilter password=s3cret", "")
		code, out, errs := runCmd("check", "-config", f.cfg, "-user", me)
		if code != exitConfig {
			t.Fatalf("exit %d\n%s", code, out)
		}
		if strings.Contains(errs+out, "s3cret") {
			t.Errorf("the password is shown:\n%s", errs)
		}
		wantOutput(t, errs, "dkimmilter.toml: database.dsn: PostgreSQL (host "+dir+" port 5432 database mail user dkimmilter): cannot connect", "hint: check that the server runs")
	})
	t.Run("bad query", func(t *testing.T) {
		f, _, _ := dbFixture(t, "", `list_query = "SELECT domain, selector FROM dkim_keys"`)
		// The query itself names a table that does not exist.
		data := strings.Replace(readFile(t, f.cfg), "FROM dkim_keys WHERE", "FROM dkim_kyes WHERE", 1)
		writeFile(t, f.cfg, data)
		code, _, errs := runCmd("check", "-config", f.cfg, "-user", me)
		if code != exitConfig {
			t.Fatalf("exit %d", code)
		}
		wantOutput(t, errs, `keys.db.query: PostgreSQL (host `, `relation "dkim_kyes" does not exist`)
		writeFile(t, f.cfg, strings.Replace(data, "dkim_kyes", "dkim_keys", 1))
		code, _, errs = runCmd("check", "-config", f.cfg, "-user", me)
		if code != exitConfig {
			t.Fatalf("exit %d", code)
		}
		wantOutput(t, errs, "keys.db.list_query: PostgreSQL (host ", "the query returns 2 columns; it must return 3: domain, selector, private_key")
	})
	t.Run("bad row for a rule's domain", func(t *testing.T) {
		f, _, _ := dbFixture(t, "", "")
		writeFile(t, f.cfg, strings.Replace(readFile(t, f.cfg), `from = "*"`, `from = "*@bad.example"`, 1))
		code, _, errs := runCmd("check", "-config", f.cfg, "-user", me)
		if code != exitConfig {
			t.Fatalf("exit %d", code)
		}
		wantOutput(t, errs, "keys.db: PostgreSQL (host ", "domain bad.example: private_key: not a private key")
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The README's schema and its [keys.hosted] query work as it says: the
// daemon's role reads keys through the view and cannot read the table.
func TestReadmeDatabaseSchema(t *testing.T) {
	readme := readFile(t, "../../README.md")
	_, section, ok := strings.Cut(readme, "## Many domains and several hosts\n")
	if !ok {
		t.Fatal("README.md has no section \"Many domains and several hosts\"")
	}
	_, sqlBlock, ok := strings.Cut(section, "```sql\n")
	sqlBlock, _, _ = strings.Cut(sqlBlock, "```")
	if !ok || sqlBlock == "" {
		t.Fatal("the section has no ```sql block")
	}
	_, tomlBlock, _ := strings.Cut(section, "```toml\n")
	tomlBlock, _, _ = strings.Cut(tomlBlock, "```")
	cfg, err := config.Parse("README.md", []byte(tomlBlock))
	if err != nil {
		t.Fatal(err)
	}
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t)
	db := dsn[strings.Index(dsn, "dbname=")+len("dbname="):]
	db, _, _ = strings.Cut(db, " ")
	// Roles belong to the whole server: one of this test's own.
	role := "dkimmilter_readme_" + strconv.Itoa(os.Getpid())
	sqlBlock = strings.NewReplacer("DATABASE mail", "DATABASE "+db, "ROLE dkimmilter", "ROLE "+role, "TO dkimmilter", "TO "+role).Replace(sqlBlock)
	for _, stmt := range strings.Split(sqlBlock, ";") {
		if strings.TrimSpace(stmt) != "" {
			c.Exec(t, dsn, stmt)
		}
	}
	t.Cleanup(func() {
		c.Exec(t, dsn, "DROP OWNED BY "+role)
		c.Exec(t, c.DSN("postgres"), "DROP ROLE IF EXISTS "+role)
	})
	pemKey := string(testkit.KeyPEM(testkit.RSAKey(2048), false))
	c.Exec(t, dsn, "INSERT INTO dkim_keys (domain, selector, private_key) VALUES ('a.example', 's1', $1), ('off.example', 's1', $1)", pemKey)
	c.Exec(t, dsn, "UPDATE dkim_keys SET active = false WHERE domain = 'off.example'")

	asDaemon := strings.Replace(dsn, "user=postgres", "user="+role, 1)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, asDaemon)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var sel, key string
	if err := conn.QueryRow(ctx, cfg.Keys["hosted"].Query, "a.example").Scan(&sel, &key); err != nil || sel != "s1" || key != pemKey {
		t.Errorf("the README's query as the daemon's role: %q, %v", sel, err)
	}
	if err := conn.QueryRow(ctx, cfg.Keys["hosted"].Query, "off.example").Scan(&sel, &key); err != pgx.ErrNoRows {
		t.Errorf("an inactive key: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM ("+cfg.Keys["hosted"].ListQuery+") AS l").Scan(&n); err != nil || n != 1 {
		t.Errorf("the README's list_query: %d rows, %v", n, err)
	}
	if _, err := conn.Exec(ctx, "SELECT private_key FROM dkim_keys"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("the daemon's role reads the table itself: %v", err)
	}
	// The rotation table is the one the daemon uses, and its role may
	// read, insert and update its rows.
	if !strings.Contains(strings.Join(strings.Fields(sqlBlock), " "), strings.Join(strings.Fields(keystore.RotationSchema), " ")) {
		t.Errorf("the README's CREATE TABLE dkimmilter_rotation is not keystore.RotationSchema:\n%s", keystore.RotationSchema)
	}
	for _, q := range []string{
		"INSERT INTO dkimmilter_rotation (key, domain, state) VALUES ('hosted', 'a.example', '{}')",
		"UPDATE dkimmilter_rotation SET active_selector = 's2' WHERE key = 'hosted'",
		"SELECT state FROM dkimmilter_rotation",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Errorf("the daemon's role: %s: %v", q, err)
		}
	}

	// The sender binding's table: logins lower-case, read through the
	// view with the README's senders_query.
	c.Exec(t, dsn, "INSERT INTO dkim_senders VALUES ('alice@a.example', 'ceo@b.example'), ('alice@a.example', 'c.example')")
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "INSERT INTO dkim_senders VALUES ('Bob@A.example', 'b.example')"); err == nil || !strings.Contains(err.Error(), "check constraint") {
		t.Errorf("a login in upper case was taken: %v", err)
	}
	if cfg.Database.SendersQuery == "" {
		t.Fatal("the README's [database] has no senders_query")
	}
	rows, err := conn.Query(ctx, cfg.Database.SendersQuery+" ORDER BY allowed", "alice@a.example")
	if err != nil {
		t.Fatal(err)
	}
	allowed, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || strings.Join(allowed, ",") != "c.example,ceo@b.example" {
		t.Errorf("the README's senders_query as the daemon's role: %q, %v", allowed, err)
	}
	if _, err := conn.Exec(ctx, "SELECT allowed FROM dkim_senders"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("the daemon's role reads the senders table itself: %v", err)
	}
}

// The daemon as a process, with its keys in PostgreSQL: it starts while
// the database is down and tempfails the mail that needs it; signs once
// the server is up, without a restart; signs a domain added to the table
// once negative_cache_ttl has passed, without a reload; and goes on
// through a SIGHUP.
func TestDaemonDatabase(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.CreateDB(t, "CREATE TABLE dkim_keys (domain text PRIMARY KEY, selector text, private_key text)")
	f := newFixture(t, `
[database]
dsn = `+config.TOMLString(dsn)+`
query_timeout = "500ms"
negative_cache_ttl = "1s"
[keys.db]
domain = "%"
query = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1"
[[signing]]
from = "*"
keys = ["db"]
`)
	key := testkit.RSAKey(2048)
	add := func(domain, selector string) {
		c.Exec(t, dsn, "INSERT INTO dkim_keys VALUES ($1, $2, $3)", domain, selector, string(testkit.KeyPEM(key, false)))
		f.dns.SetTXT(selector+"._domainkey."+domain, testkit.KeyRecord(key, ""))
	}
	add("a.example", "sa")
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "serve", "-config", f.cfg)
	send := func(domain string) *testkit.Result {
		t.Helper()
		cl := f.dial(t)
		defer cl.Close()
		r, err := cl.Send(testkit.Envelope{From: "a@" + domain}, testkit.CRLF([]byte("From: a@"+domain+"\nTo: b@example.net\nSubject: hi\n\nhello\n")), 0)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	signedWith := func(domain string) string {
		t.Helper()
		r := send(domain)
		ins := testkit.Mods(r, gomilter.ActInsertHeader)
		if len(ins) != 1 || ins[0].HeaderName != "DKIM-Signature" {
			return ""
		}
		tags, err := dkim.ParseTagList(ins[0].HeaderValue)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := tags.Get("s")
		return s
	}

	if r := send("a.example"); r.Action.SMTPCode != 451 {
		t.Fatalf("database down: %+v, want 451", r.Action)
	}
	if s := signedWith("example.com"); s != "rsa" {
		t.Errorf("a key file with the database down: s=%q", s)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if s := signedWith("a.example"); s != "sa" {
		t.Fatalf("database back: s=%q\n%s", s, p.stderr.String())
	}
	if s := signedWith("new.example"); s != "" {
		t.Fatalf("a domain not in the table signed with %s", s)
	}
	add("new.example", "sn")
	time.Sleep(1100 * time.Millisecond)
	if s := signedWith("new.example"); s != "sn" {
		t.Fatalf("after negative_cache_ttl: s=%q", s)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "configuration reloaded")
	if s := signedWith("a.example"); s != "sa" {
		t.Errorf("after the reload: s=%q", s)
	}
	if !strings.Contains(p.stderr.String(), `database="host `+c.SocketDir()+" port 5432 database ") {
		t.Errorf("the ready line does not name the database:\n%s", p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "PostgreSQL (host "+c.SocketDir()) {
		t.Errorf("the log does not name the server:\n%s", p.stderr.String())
	}
}
