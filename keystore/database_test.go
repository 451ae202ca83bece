package keystore

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/pgtest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const keySchema = "CREATE TABLE dkim_keys (domain text PRIMARY KEY, selector text, private_key text)"

// recorder is a DBObserver that counts, the key queries' results and
// outcomes by their name, the senders query's as "senders/NAME".
type recorder struct {
	mu      sync.Mutex
	cache   map[string]int
	queries map[string]int
}

func recorded(query, what string) string {
	if query == DBKeys {
		return what
	}
	return query + "/" + what
}

func (r *recorder) DBCache(query, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		r.cache = map[string]int{}
	}
	r.cache[recorded(query, result)]++
}

func (r *recorder) DBQuery(query, outcome string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.queries == nil {
		r.queries = map[string]int{}
	}
	r.queries[recorded(query, outcome)]++
}

func (r *recorder) count(m *map[string]int, k string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return (*m)[k]
}

// dbStore loads a Store whose key "db" has query (the default query when
// ""), in front of a '%' file key "files" for the domains it has no row
// for; database adds to [database].
func dbStore(t *testing.T, dsn, query, database string) (*Store, *recorder) {
	t.Helper()
	if query == "" {
		query = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1"
	}
	dir := t.TempDir()
	cfgText := `
[database]
dsn = ` + config.TOMLString(dsn) + `
` + database + `
[keys.db]
domain = "%"
query = ` + config.TOMLString(query) + `
[keys.files]
domain = "%"
selector = "f"
file = "` + dir + `/%.pem"
[[signing]]
from = "*"
keys = ["db"]
[[signing]]
from = "*"
keys = ["files"]
`
	return loadObserved(t, dir, cfgText, "fallback.example.pem")
}

// loadObserved writes an RSA key to dir/keyFile, loads cfgText as
// dir/dkimmilter.toml, and returns the Store with a recorder watching its
// database lookups; the Store is closed when the test ends.
func loadObserved(t *testing.T, dir, cfgText, keyFile string) (*Store, *recorder) {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(dir, "dkimmilter.toml"), []byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteKey(dir, keyFile, testkit.RSAKey(2048), false)
	s, _, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	rec := &recorder{}
	s.SetObserver(rec)
	return s, rec
}

func insertKey(t *testing.T, c *pgtest.Cluster, dsn, domain string, selector, key any) {
	t.Helper()
	c.Exec(t, dsn, "INSERT INTO dkim_keys VALUES ($1, $2, $3) ON CONFLICT (domain) DO UPDATE SET selector = $2, private_key = $3", domain, selector, key)
}

// Every kind of row, through Lookup: a key signs, no row lets the next
// rule apply, and a row that cannot sign is an error naming the key, the
// domain and what is wrong (actions.sign_error in the milter).
func TestDatabaseRows(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, keySchema)
	dir := t.TempDir()
	rsaKey := testkit.RSAKey(2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyFile := testkit.WriteKey(dir, "file.pem", rsaKey, true)
	openFile := testkit.WriteKey(dir, "open.pem", rsaKey, true)
	os.Chmod(openFile, 0o644)
	// A link to a good key: the row must name the file itself.
	linkFile := filepath.Join(dir, "link.pem")
	if err := os.Symlink(keyFile, linkFile); err != nil {
		t.Fatal(err)
	}
	// A good key followed by more than any key file holds: not read.
	bigFile := filepath.Join(dir, "big.pem")
	if err := os.WriteFile(bigFile, append(testkit.KeyPEM(rsaKey, false), strings.Repeat("#", maxKeyFile)...), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, r := range []struct {
		domain   string
		selector any
		key      any
	}{
		{"pem.example", "s1", string(testkit.KeyPEM(rsaKey, false))},
		{"pkcs1.example", "s1", string(testkit.KeyPEM(rsaKey, true))},
		{"ed.example", "e1", string(testkit.KeyPEM(edKey, false))},
		{"file.example", "f1", keyFile},
		{"nullsel.example", nil, string(testkit.KeyPEM(rsaKey, false))},
		{"badsel.example", "a b", string(testkit.KeyPEM(rsaKey, false))},
		{"nullkey.example", "s1", nil},
		{"garbage.example", "s1", "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n"},
		{"text.example", "s1", "hello"},
		{"ec.example", "s1", string(testkit.KeyPEM(ecKey, false))},
		{"short.example", "s1", string(testkit.File("rsa512.key"))},
		{"nofile.example", "s1", dir + "/missing.pem"},
		{"openfile.example", "s1", openFile},
		{"link.example", "s1", linkFile},
		{"big.example", "s1", bigFile},
	} {
		insertKey(t, c, dsn, r.domain, r.selector, r.key)
	}
	s, rec := dbStore(t, dsn, "", "")

	for _, tc := range []struct {
		from     string
		selector string // "" with err: an error; "" without: no key at all
		keyName  string
		file     string
		err      string
		errIs    error
	}{
		{from: "a@pem.example", selector: "s1", keyName: "db"},
		{from: "a@PKCS1.example", selector: "s1", keyName: "db"},
		{from: "a@ed.example", selector: "e1", keyName: "db"},
		{from: "a@file.example", selector: "f1", keyName: "db", file: keyFile},
		// No row: the next rule's '%' file key.
		{from: "a@fallback.example", selector: "f", keyName: "files"},
		{from: "a@nowhere.example"},
		{from: "a@nullsel.example", err: "keys.db, domain nullsel.example: the selector is NULL"},
		{from: "a@badsel.example", err: `keys.db, domain badsel.example: the selector "a b" is not a selector`},
		{from: "a@nullkey.example", err: "keys.db, domain nullkey.example: private_key is NULL"},
		{from: "a@garbage.example", err: "keys.db, domain garbage.example: selector s1, private_key: bad PKCS#8 key"},
		{from: "a@text.example", err: "keys.db, domain text.example: selector s1, private_key: not a private key"},
		{from: "a@ec.example", err: "keys.db, domain ec.example: selector s1, private_key: a *ecdsa.PrivateKey key cannot sign DKIM"},
		{from: "a@short.example", err: "keys.db, domain short.example: selector s1, private_key: RSA", errIs: dkim.ErrKeyTooShort},
		{from: "a@nofile.example", err: "keys.db, domain nofile.example: selector s1, private_key file: " + dir + "/missing.pem does not exist"},
		{from: "a@openfile.example", err: "unsafe key file permissions", errIs: ErrUnsafePermissions},
		{from: "a@link.example", err: "keys.db, domain link.example: selector s1, private_key file: " + linkFile + " is a symbolic link; the private_key column must name the key file itself"},
		{from: "a@big.example", err: "keys.db, domain big.example: selector s1, private_key file: " + bigFile + " has 67" /* …bytes */},
	} {
		t.Run(tc.from, func(t *testing.T) {
			for range 2 { // the second answer comes from the cache
				sel, err := s.Lookup(tc.from)
				if tc.err != "" {
					if err == nil || !strings.Contains(err.Error(), tc.err) {
						t.Fatalf("err = %v, want %q", err, tc.err)
					}
					if !strings.Contains(err.Error(), "PostgreSQL (host "+c.SocketDir()) {
						t.Errorf("the error does not name the server: %v", err)
					}
					if tc.errIs != nil && !errors.Is(err, tc.errIs) {
						t.Errorf("err %v is not %v", err, tc.errIs)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if tc.selector == "" {
					if sel != nil {
						t.Fatalf("signed by %+v", sel.Keys[0])
					}
					continue
				}
				_, domain, _ := strings.Cut(strings.ToLower(tc.from), "@")
				if sel == nil || len(sel.Keys) != 1 {
					t.Fatalf("selection %+v", sel)
				}
				k := sel.Keys[0]
				if k.Name != tc.keyName || k.Selector != tc.selector || k.Domain != domain || k.Name == "db" && k.File != tc.file || k.Signer == nil {
					t.Errorf("key %+v", k)
				}
			}
		})
	}
	// Each domain was asked once; the second lookups were cache hits.
	// A missing key file is a failure, not an answer: not cached (one
	// more miss, and an "error" query, for nofile.example).
	if n := rec.count(&rec.cache, DBMiss); n != 18 {
		t.Errorf("%d misses, want 18 (one per domain, two for the missing file)", n)
	}
	if h, nh := rec.count(&rec.cache, DBHit), rec.count(&rec.cache, DBNegativeHit); h != 4 || nh != 12 {
		t.Errorf("%d hits and %d negative hits, want 4 and 12", h, nh)
	}
	if f, nf, bad, fail := rec.count(&rec.queries, DBFound), rec.count(&rec.queries, DBNotFound), rec.count(&rec.queries, DBBadKey), rec.count(&rec.queries, DBError); f != 4 || nf != 2 || bad != 10 || fail != 2 {
		t.Errorf("queries: %d found, %d not found, %d bad keys, %d errors; want 4, 2, 10, 2", f, nf, bad, fail)
	}
	// So the file, once there, signs at once, not after negative_cache_ttl.
	testkit.WriteKey(dir, "missing.pem", rsaKey, false)
	if sel, err := s.Lookup("a@nofile.example"); err != nil || sel == nil || sel.Keys[0].File != dir+"/missing.pem" {
		t.Errorf("after the key file appeared: %+v, %v", sel, err)
	}
}

// An SMTPUTF8 From domain is looked up, cached and signed (d=) as its
// A-label, the form the table holds; a name IDNA refuses is not a domain
// the key signs for: no query, no key, no error.
func TestDatabaseIDN(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, keySchema)
	insertKey(t, c, dsn, "xn--bcher-kva.example", "s1", string(testkit.KeyPEM(testkit.RSAKey(2048), false)))
	s, rec := dbStore(t, dsn, "", "")
	for _, tc := range []struct {
		from, domain string // domain "": no key
		queries      int    // queries sent so far
	}{
		{"x@bücher.example", "xn--bcher-kva.example", 1},
		{"x@BÜCHER.example", "xn--bcher-kva.example", 1}, // the same cache entry
		{"x@xn--bcher-kva.example", "xn--bcher-kva.example", 1},
		{"x@\u0300x.example", "", 1}, // a label may not start with a combining mark
	} {
		t.Run(tc.from, func(t *testing.T) {
			sel, err := s.Lookup(tc.from)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.domain == "" && sel != nil:
				t.Errorf("signed by %+v", sel.Keys[0])
			case tc.domain != "" && (sel == nil || sel.Keys[0].Domain != tc.domain || sel.Keys[0].Selector != "s1"):
				t.Errorf("selection %+v, want d=%s s=s1", sel, tc.domain)
			}
			if n := rec.count(&rec.queries, DBFound) + rec.count(&rec.queries, DBNotFound); n != tc.queries {
				t.Errorf("%d queries, want %d", n, tc.queries)
			}
		})
	}
}

// A query the server refuses, or one that returns the wrong columns or
// several rows, is an error for the message, never "no key".
func TestDatabaseQueryErrors(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, keySchema, "CREATE TABLE twice (domain text, selector text, private_key text)")
	pemKey := string(testkit.KeyPEM(testkit.RSAKey(2048), false))
	c.Exec(t, dsn, "INSERT INTO twice VALUES ('a.example', 's1', $1), ('a.example', 's2', $1)", pemKey)
	for _, tc := range []struct {
		query, err, outcome string
	}{
		{"SELECT selector, private_key FROM no_such_table WHERE domain = $1", `relation "no_such_table" does not exist`, DBError},
		{"SELECT selector FROM dkim_keys WHERE domain = $1 UNION SELECT 'x'", "the query returns 1 columns; it must return 2: selector, private_key", DBBadKey},
		{"SELECT selector, private_key FROM twice WHERE domain = $1", "more than one row", DBBadKey},
	} {
		t.Run(tc.query, func(t *testing.T) {
			s, rec := dbStore(t, dsn, tc.query, "")
			_, err := s.Lookup("x@a.example")
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "a.example") {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
			if n := rec.count(&rec.queries, tc.outcome); n != 1 {
				t.Errorf("outcomes %v, want one %s", rec.queries, tc.outcome)
			}
		})
	}
}

// A slow query is given up after query_timeout, and the server stops it
// (statement_timeout). A lookup waiting for the only connection, held by
// that slow query or by anyone else, is not kept longer than its own
// query_timeout: an unrelated message is never held by another's slow
// lookup.
func TestDatabaseSlowQuery(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, keySchema)
	for _, d := range []string{"fast.example", "held.example", "slow.example"} {
		insertKey(t, c, dsn, d, "s1", string(testkit.KeyPEM(testkit.RSAKey(2048), false)))
	}
	const q = "SELECT selector, private_key FROM dkim_keys, pg_sleep(CASE WHEN $1::text LIKE 'slow%' THEN 5 ELSE 0 END) WHERE domain = $1"
	s, rec := dbStore(t, dsn, q, `max_conns = 1
query_timeout = "400ms"`)
	const timeout = 400 * time.Millisecond
	// Room for a loaded machine, well under the slow query's 5s.
	const slack = 600 * time.Millisecond
	timedOut := func(err error) bool {
		return err != nil && (strings.Contains(err.Error(), "no answer within database.query_timeout (400ms)") || strings.Contains(err.Error(), "statement timeout"))
	}

	var wg sync.WaitGroup
	var slowErr error
	var slowTook time.Duration
	wg.Go(func() {
		start := time.Now()
		_, slowErr = s.Lookup("a@slow.example")
		slowTook = time.Since(start)
	})
	time.Sleep(100 * time.Millisecond)
	// Waits for the connection the slow query holds: it gets it when the
	// slow query is given up, or its own deadline runs out first.
	fastStart := time.Now()
	sel, fastErr := s.Lookup("a@fast.example")
	fastTook := time.Since(fastStart)
	wg.Wait()
	if !timedOut(slowErr) || slowTook > timeout+slack {
		t.Errorf("slow lookup: %v after %v; want a timeout after %v", slowErr, slowTook, timeout)
	}
	if !timedOut(fastErr) && (fastErr != nil || sel == nil || sel.Keys[0].Domain != "fast.example") {
		t.Errorf("the lookup waiting for the connection: %+v, %v; want its key, or its own timeout", sel, fastErr)
	}
	if fastTook > timeout+slack {
		t.Errorf("the lookup waiting for the connection took %v; query_timeout is %v", fastTook, timeout)
	}
	if n := rec.count(&rec.queries, DBTimeout); n < 1 {
		t.Errorf("outcomes %v, want a timeout", rec.queries)
	}

	// The only connection held for longer than a lookup waits: the
	// lookup fails with its own timeout, neither sooner nor much later.
	time.Sleep(100 * time.Millisecond)
	conn, err := s.dbs.db.pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	heldStart := time.Now()
	sel, err = s.Lookup("a@held.example")
	heldTook := time.Since(heldStart)
	conn.Release()
	if !timedOut(err) || heldTook < timeout || heldTook > timeout+slack {
		t.Errorf("with the connection held: %+v, %v after %v; want a timeout after %v", sel, err, heldTook, timeout)
	}
	// The connection comes back: the next lookup works.
	if sel, err := s.Lookup("a@held.example"); err != nil || sel == nil {
		t.Errorf("after the timeouts: %+v, %v", sel, err)
	}
}

// One Lookup waits for the database no longer than query_timeout in all,
// however many query keys it tries: two keys of one rule (RSA and
// Ed25519), or the keys of two rules, the first without a row. Each query
// takes 450ms and query_timeout is 500ms, so the second always runs out.
func TestDatabaseOneDeadlinePerLookup(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, keySchema)
	insertKey(t, c, dsn, "a.example", "s1", string(testkit.KeyPEM(testkit.RSAKey(2048), false)))
	const (
		slow   = "SELECT selector, private_key FROM dkim_keys WHERE domain = (SELECT $1::text FROM pg_sleep(0.45))"
		noRow  = "SELECT selector, private_key FROM dkim_keys WHERE domain = (SELECT 'none.' || $1::text FROM pg_sleep(0.45))"
		budget = 500 * time.Millisecond
	)
	for _, tc := range []struct {
		name, keys, rules string
	}{
		{"two keys of one rule", `
[keys.r]
domain = "%"
query = ` + config.TOMLString(slow) + `
[keys.e]
domain = "%"
query = ` + config.TOMLString(slow), `
[[signing]]
from = "*"
keys = ["r", "e"]`},
		{"keys of two rules", `
[keys.r]
domain = "%"
query = ` + config.TOMLString(noRow) + `
[keys.e]
domain = "%"
query = ` + config.TOMLString(slow), `
[[signing]]
from = "*"
keys = ["r"]
[[signing]]
from = "*"
keys = ["e"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse(filepath.Join(t.TempDir(), "d.toml"), []byte(`
[database]
dsn = `+config.TOMLString(dsn)+`
query_timeout = "500ms"
`+tc.keys+tc.rules))
			if err != nil {
				t.Fatal(err)
			}
			s, _, err := Load(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			start := time.Now()
			sel, err := s.Lookup("x@a.example")
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "no answer within database.query_timeout (500ms)") && !strings.Contains(err.Error(), "statement timeout") {
				t.Errorf("Lookup = %+v, %v; want a timeout", sel, err)
			}
			if took > budget+300*time.Millisecond {
				t.Errorf("the lookup took %v; query_timeout is %v", took, budget)
			}
		})
	}
}

// A server that does not answer: the lookup fails at once with an error
// naming host and database, never the password; the daemon's start does
// not wait for it.
func TestDatabaseDown(t *testing.T) {
	dir := t.TempDir()
	dsn := "host=" + dir + " port=5432 dbname=mail user=dkimmilter password=s3cret sslmode=disable"
	start := time.Now()
	s, rec := dbStore(t, dsn, "", `query_timeout = "1s"`)
	if d := time.Since(start); d > time.Second {
		t.Errorf("Load took %v with the database down", d)
	}
	_, err := s.Lookup("a@example.net")
	if err == nil {
		t.Fatal("no error with the database down")
	}
	msg := err.Error()
	if strings.Contains(msg, "s3cret") {
		t.Errorf("the error shows the password: %v", err)
	}
	if !strings.Contains(msg, "PostgreSQL (host "+dir+" port 5432 database mail user dkimmilter)") || !strings.Contains(msg, "example.net") {
		t.Errorf("err = %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	if rec.count(&rec.queries, DBError)+rec.count(&rec.queries, DBTimeout) != 1 {
		t.Errorf("outcomes %v", rec.queries)
	}
	// Failures are not cached: the next message asks again.
	s.Lookup("a@example.net")
	if n := rec.count(&rec.cache, DBMiss); n != 2 {
		t.Errorf("%d misses, want 2", n)
	}
}

// A bad DSN is a load error naming the config file and what a DSN looks
// like, never the password: pgx's masking of its own message misses valid
// libpq forms, so none of the connection string is shown; pgx's cause is
// added when it cannot hold a part of it.
func TestDatabaseBadDSN(t *testing.T) {
	const fix = "/etc/dkimmilter/dkimmilter.toml: database.dsn cannot be parsed; write it as key=value pairs separated by spaces (host=/run/postgresql dbname=mail user=dkimmilter) or as a postgres:// URL"
	for _, tc := range []struct {
		dsn   string
		cause string // "" : no cause may be added
	}{
		{dsn: "postgres://u:s3cret@db.example.net:notaport/mail"},
		// Spaces around '=' are valid libpq; pgx's masking misses them.
		{dsn: "host=db user=u password = s3cret sslmode=bogus"},
		// So is a quoted password with an escaped quote.
		{dsn: `host=db user=u password='it\'s s3cret' sslmode=bogus`},
		{dsn: "host=db password='s3cret", cause: "unterminated quoted string in connection info string"},
		{dsn: "host=db s3cret", cause: "invalid keyword/value"},
		{dsn: "postgres://u:s3%zzcret@db/mail", cause: "invalid percent-encoded token in password"},
	} {
		t.Run(tc.dsn, func(t *testing.T) {
			cfg, err := config.Parse("/etc/dkimmilter/dkimmilter.toml", []byte(`
[database]
dsn = `+config.TOMLString(tc.dsn)+`
[keys.db]
domain = "%"
query = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1"
[[signing]]
from = "*"
keys = ["db"]
`))
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = Load(cfg)
			want := fix
			if tc.cause != "" {
				want += " (" + tc.cause + ")"
			}
			if err == nil || err.Error() != want {
				t.Errorf("err = %v\nwant   %s", err, want)
			}
			if err != nil && strings.Contains(err.Error(), "s3") {
				t.Errorf("the error shows (part of) the password: %v", err)
			}
		})
	}
}

// A domain added to the table is signed once negative_cache_ttl has
// passed since it was found missing: no reload.
func TestDatabaseNewDomainAfterNegativeTTL(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, keySchema)
	s, _ := dbStore(t, dsn, "", `negative_cache_ttl = "1s"`)
	if sel, err := s.Lookup("a@new.example"); sel != nil || err != nil {
		t.Fatalf("before: %+v, %v", sel, err)
	}
	insertKey(t, c, dsn, "new.example", "n1", string(testkit.KeyPEM(testkit.RSAKey(2048), false)))
	if sel, err := s.Lookup("a@new.example"); sel != nil || err != nil {
		t.Fatalf("within the negative TTL the cache should still say no key: %+v, %v", sel, err)
	}
	time.Sleep(1100 * time.Millisecond)
	sel, err := s.Lookup("a@new.example")
	if err != nil || sel == nil || sel.Keys[0].Selector != "n1" {
		t.Fatalf("after the negative TTL: %+v, %v", sel, err)
	}
}

// A database outage fails the lookups, and they recover by themselves
// when the server is back: the pool reconnects.
func TestDatabaseOutageRecovers(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.CreateDB(t, keySchema)
	insertKey(t, c, dsn, "a.example", "s1", string(testkit.KeyPEM(testkit.RSAKey(2048), false)))
	s, _ := dbStore(t, dsn, "", `cache_ttl = "0s"
query_timeout = "1s"`)
	if sel, err := s.Lookup("x@a.example"); err != nil || sel == nil {
		t.Fatalf("before: %+v, %v", sel, err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Lookup("x@a.example"); err == nil {
			t.Fatal("a lookup succeeded with the server down")
		}
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if sel, err := s.Lookup("x@a.example"); err != nil || sel == nil {
		t.Fatalf("after the restart: %+v, %v", sel, err)
	}
}

// A hundred concurrent messages for one domain make one query.
func TestDatabaseSingleFlight(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, keySchema)
	insertKey(t, c, dsn, "a.example", "s1", string(testkit.KeyPEM(testkit.RSAKey(2048), false)))
	s, rec := dbStore(t, dsn, "SELECT selector, private_key FROM dkim_keys, pg_sleep(0.3) WHERE domain = $1", "")
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Go(func() {
			if sel, err := s.Lookup("x@a.example"); err != nil || sel == nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("lookup: %v", err)
	}
	if n := rec.count(&rec.queries, DBFound); n != 1 {
		t.Errorf("%d queries, want 1", n)
	}
}

// Memory is bounded by cache_size, not by the number of domains.
func TestDatabaseCacheBounded(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, keySchema)
	s, _ := dbStore(t, dsn, "", "cache_size = 10")
	for i := range 50 {
		s.Lookup("x@d" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".example")
	}
	if n := s.dbs.cache.len(); n != 10 {
		t.Errorf("%d answers kept, want cache_size 10", n)
	}
}

// A reload to the same [database] keeps the pool; the pool closes with the
// last Store that uses it.
func TestDatabaseAdoptAndClose(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, keySchema)
	insertKey(t, c, dsn, "a.example", "s1", string(testkit.KeyPEM(testkit.RSAKey(2048), false)))
	old, _ := dbStore(t, dsn, "", "")
	cur, _ := dbStore(t, dsn, "", "")
	cur.Adopt(old)
	if cur.dbs.db != old.dbs.db {
		t.Fatal("the same settings did not keep the pool")
	}
	old.Close()
	old.Close() // twice is harmless
	if sel, err := cur.Lookup("x@a.example"); err != nil || sel == nil {
		t.Fatalf("after closing the old store: %+v, %v", sel, err)
	}
	cur.Close()
	if _, err := cur.Lookup("x@other.example"); err == nil {
		t.Error("a lookup on a closed pool succeeded")
	}
	other, _ := dbStore(t, dsn, "", "max_conns = 2")
	before := other.dbs.db
	other.Adopt(cur)
	if other.dbs.db != before {
		t.Error("other settings took the old pool")
	}
}
