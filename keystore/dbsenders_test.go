package keystore

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/pgtest"
)

const sendersSchema = "CREATE TABLE dkim_senders (id serial, login text NOT NULL, allowed text)"

const sendersQuery = "SELECT allowed FROM dkim_senders WHERE login = $1 ORDER BY id"

// sendersStore loads a Store whose database.senders_query is query (the
// default when ""), signing for a.example and b.example from key files;
// database adds to [database], more to the end of the file. It returns
// the Store's sender source.
func sendersStore(t *testing.T, dsn, query, database, more string) (*Store, SenderSource, *recorder) {
	t.Helper()
	if query == "" {
		query = sendersQuery
	}
	dir := t.TempDir()
	cfgText := `
[database]
dsn = ` + config.TOMLString(dsn) + `
senders_query = ` + config.TOMLString(query) + `
` + database + `
[keys.a]
domain = "a.example"
selector = "s1"
file = "` + dir + `/k.pem"
[keys.b]
domain = "b.example"
selector = "s1"
file = "` + dir + `/k.pem"
[[signing]]
from = "*@a.example"
keys = ["a"]
[[signing]]
from = "*@b.example"
keys = ["b"]
` + more
	s, rec := loadObserved(t, dir, cfgText, "k.pem")
	srcs := s.SenderSources()
	if len(srcs) != 1 {
		t.Fatalf("sender sources %v, want database.senders_query", srcs)
	}
	return s, srcs[0], rec
}

func addSenders(t *testing.T, c *pgtest.Cluster, dsn, login string, allowed ...any) {
	t.Helper()
	for _, a := range allowed {
		c.Exec(t, dsn, "INSERT INTO dkim_senders (login, allowed) VALUES ($1, $2)", login, a)
	}
}

// Every kind of row: entries as [sign.senders] takes them (lower-cased,
// without a trailing dot or padding), no row (found false), and rows
// that are not entries: an error naming the server, the login and the
// row, kept negative_cache_ttl like no row (the second answer comes from
// the cache, without a query).
func TestDatabaseSendersRows(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, sendersSchema)
	addSenders(t, c, dsn, "alice@a.example", "Sales@B.Example", "c.example.", " d.example ")
	addSenders(t, c, dsn, "gw@a.example", "*")
	addSenders(t, c, dsn, "bob", "bob@b.example")
	addSenders(t, c, dsn, "null@a.example", "b.example", nil)
	addSenders(t, c, dsn, "space@a.example", "b example")
	addSenders(t, c, dsn, "wild@a.example", "*.b.example")
	addSenders(t, c, dsn, "at@a.example", "@b.example")
	addSenders(t, c, dsn, "empty@a.example", "")
	addSenders(t, c, dsn, "Upper@A.example", "b.example") // never found: $1 is lower-case
	_, src, rec := sendersStore(t, dsn, "", "", "")
	if got := src.(interface{ String() string }).String(); got != "database.senders_query" {
		t.Errorf("the source names itself %q", got)
	}

	for _, tc := range []struct {
		login   string
		allowed []string
		found   bool
		err     string
	}{
		{"alice@a.example", []string{"sales@b.example", "c.example", "d.example"}, true, ""},
		{"ALICE@A.Example", []string{"sales@b.example", "c.example", "d.example"}, true, ""},
		{"gw@a.example", []string{"*"}, true, ""},
		{"bob", []string{"bob@b.example"}, true, ""},
		{"nobody@a.example", nil, false, ""},
		{"upper@a.example", nil, false, ""},
		{"null@a.example", nil, false, `database.senders_query, login "null@a.example": row 2 is NULL; leave NULLs out (WHERE allowed IS NOT NULL)`},
		{"space@a.example", nil, false, `login "space@a.example": row 1: "b example" is not a domain`},
		{"wild@a.example", nil, false, `row 1: "*.b.example" has a wildcard; write "b.example"`},
		{"at@a.example", nil, false, `row 1: "@b.example" is not an address; write "b.example"`},
		{"empty@a.example", nil, false, `row 1: "" is not a domain: it is empty`},
	} {
		t.Run(tc.login, func(t *testing.T) {
			before := rec.count(&rec.queries, "senders/"+DBFound) + rec.count(&rec.queries, "senders/"+DBNotFound) + rec.count(&rec.queries, "senders/"+DBBadRow)
			for range 2 {
				allowed, found, err := src.Senders(context.Background(), tc.login)
				if tc.err != "" {
					if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "PostgreSQL (host "+c.SocketDir()) {
						t.Fatalf("err = %v, want %q naming the server", err, tc.err)
					}
					continue
				}
				if err != nil || found != tc.found || !reflect.DeepEqual(allowed, tc.allowed) {
					t.Fatalf("got %q, %v, %v; want %q, %v", allowed, found, err, tc.allowed, tc.found)
				}
			}
			after := rec.count(&rec.queries, "senders/"+DBFound) + rec.count(&rec.queries, "senders/"+DBNotFound) + rec.count(&rec.queries, "senders/"+DBBadRow)
			if tc.login != "ALICE@A.Example" && after-before != 1 {
				t.Errorf("%d queries for two lookups, want 1 (the second from the cache)", after-before)
			}
			if tc.login == "ALICE@A.Example" && after != before {
				t.Errorf("another spelling of a cached login made a query")
			}
		})
	}
	if n := rec.count(&rec.queries, "senders/"+DBBadRow); n != 5 {
		t.Errorf("%d bad_row outcomes, want 5: %v", n, rec.queries)
	}
	if rec.count(&rec.cache, "senders/"+DBHit) != 5 || rec.count(&rec.cache, "senders/"+DBNegativeHit) != 7 {
		t.Errorf("cache results %v, want 5 hits and 7 negative hits", rec.cache)
	}
	if len(rec.queries) != 3 || rec.count(&rec.queries, DBFound) != 0 {
		t.Errorf("counted as key queries: %v", rec.queries)
	}
	// No login at all, or one no text column can hold, asks nothing.
	misses := rec.count(&rec.cache, "senders/"+DBMiss)
	for _, login := range []string{"", "al\xffice@a.example", "al\x00ice@a.example"} {
		if _, found, err := src.Senders(context.Background(), login); found || err != nil {
			t.Errorf("login %q: %v, %v", login, found, err)
		}
	}
	if n := rec.count(&rec.cache, "senders/"+DBMiss); n != misses {
		t.Errorf("%d lookups for logins no row can be for", n-misses)
	}
}

// A query the server refuses fails every time (never cached); one that
// returns the wrong shape, or too many rows, is an error for the message
// and kept like a bad row.
func TestDatabaseSendersQueryErrors(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, sendersSchema)
	addSenders(t, c, dsn, "alice@a.example", "b.example")
	for _, tc := range []struct {
		query, err, outcome string
		queries             int // for two lookups
	}{
		{"SELECT allowed FROM no_such_table WHERE login = $1", `relation "no_such_table" does not exist`, DBError, 2},
		{"SELECT login, allowed FROM dkim_senders WHERE login = $1", "the query returns 2 columns; it must return 1", DBBadRow, 1},
		{"SELECT id FROM dkim_senders WHERE login = $1", `row 1: "1" is not a domain`, DBBadRow, 1},
		{"SELECT array_agg(allowed) FROM dkim_senders WHERE login = $1", "cannot read the row", DBBadRow, 1},
		{"SELECT 'b.example' FROM generate_series(1, 1001) WHERE $1::text <> ''", "the query returns more than 1000 rows", DBBadRow, 1},
	} {
		t.Run(tc.query, func(t *testing.T) {
			_, src, rec := sendersStore(t, dsn, tc.query, "", "")
			for range 2 {
				_, _, err := src.Senders(context.Background(), "alice@a.example")
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "PostgreSQL (host ") {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
			}
			if n := rec.count(&rec.queries, "senders/"+tc.outcome); n != tc.queries {
				t.Errorf("outcomes %v, want %d %s", rec.queries, tc.queries, tc.outcome)
			}
		})
	}
	// 1000 rows are not too many.
	_, src, _ := sendersStore(t, dsn, "SELECT 'b.example' FROM generate_series(1, 1000) WHERE $1::text <> ''", "", "")
	if allowed, found, err := src.Senders(context.Background(), "alice@a.example"); err != nil || !found || len(allowed) != MaxSenderRows {
		t.Errorf("1000 rows: %d entries, %v, %v", len(allowed), found, err)
	}
}

// A slow query is given up after query_timeout; the server down fails at
// once, naming the server but never the password, and is not cached.
func TestDatabaseSendersSlowAndDown(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, sendersSchema)
	_, src, rec := sendersStore(t, dsn, "SELECT allowed FROM dkim_senders, pg_sleep(5) WHERE login = $1", `query_timeout = "300ms"`, "")
	start := time.Now()
	_, _, err := src.Senders(context.Background(), "alice@a.example")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v with query_timeout 300ms", took)
	}
	if err == nil || !strings.Contains(err.Error(), "no answer within database.query_timeout (300ms)") && !strings.Contains(err.Error(), "statement timeout") {
		t.Errorf("slow: %v", err)
	}
	if rec.count(&rec.queries, "senders/"+DBTimeout) != 1 {
		t.Errorf("outcomes %v, want a timeout", rec.queries)
	}

	dir := t.TempDir()
	down := "host=" + dir + " port=5432 dbname=mail user=dkimmilter password=s3cret sslmode=disable"
	_, src, rec = sendersStore(t, down, "", `query_timeout = "1s"`, "")
	for range 2 {
		_, _, err := src.Senders(context.Background(), "alice@a.example")
		if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "PostgreSQL (host "+dir+" port 5432 database mail user dkimmilter)") {
			t.Fatalf("down: %v", err)
		}
	}
	if n := rec.count(&rec.cache, "senders/"+DBMiss); n != 2 {
		t.Errorf("%d misses, want 2: a failure is not cached", n)
	}
}

// A row added after a login was found without one takes effect once
// negative_cache_ttl has passed, without a reload; a row removed after
// it was found, once cache_ttl has.
func TestDatabaseSendersTTLs(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, sendersSchema)
	_, src, _ := sendersStore(t, dsn, "", `negative_cache_ttl = "1s"
cache_ttl = "2s"`, "")
	ask := func() []string {
		t.Helper()
		allowed, _, err := src.Senders(context.Background(), "alice@a.example")
		if err != nil {
			t.Fatal(err)
		}
		return allowed
	}
	if got := ask(); got != nil {
		t.Fatalf("before: %q", got)
	}
	addSenders(t, c, dsn, "alice@a.example", "b.example")
	if got := ask(); got != nil {
		t.Fatalf("within negative_cache_ttl: %q", got)
	}
	time.Sleep(1100 * time.Millisecond)
	if got := ask(); !reflect.DeepEqual(got, []string{"b.example"}) {
		t.Fatalf("after negative_cache_ttl: %q", got)
	}
	c.Exec(t, dsn, "DELETE FROM dkim_senders")
	if got := ask(); got == nil {
		t.Fatal("within cache_ttl the entries should still be kept")
	}
	time.Sleep(2100 * time.Millisecond)
	if got := ask(); got != nil {
		t.Fatalf("after cache_ttl: %q", got)
	}
}

// Fifty messages of one login at once make one query; the logins kept
// are bounded by cache_size, apart from the keys.
func TestDatabaseSendersSingleFlightAndBound(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, sendersSchema)
	addSenders(t, c, dsn, "alice@a.example", "b.example")
	s, src, rec := sendersStore(t, dsn, "SELECT allowed FROM dkim_senders, pg_sleep(0.3) WHERE login = $1", "cache_size = 10", "")
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() {
			if _, found, err := src.Senders(context.Background(), "alice@a.example"); err != nil || !found {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("lookup: %v", err)
	}
	if n := rec.count(&rec.queries, "senders/"+DBFound); n != 1 {
		t.Errorf("%d queries, want 1", n)
	}

	s2, src2, _ := sendersStore(t, dsn, "", "cache_size = 10", "")
	for i := range 30 {
		src2.Senders(context.Background(), "u"+string(rune('a'+i%26))+string(rune('a'+i/26))+"@a.example")
	}
	if n := s2.dbs.senders.len(); n != 10 {
		t.Errorf("%d logins kept, want cache_size 10", n)
	}
	if n := s2.dbs.cache.len(); n != 0 || s.dbs.cache.len() != 0 {
		t.Errorf("the keys' cache holds %d answers", n)
	}
}

// Through the binding: [sign.senders] first, then the database; a From
// either allows is signed, and what [sign.senders] allows, or the login's
// own domain covers, makes no query.
func TestDatabaseSendersBinding(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, sendersSchema)
	addSenders(t, c, dsn, "alice@a.example", "ceo@b.example")
	addSenders(t, c, dsn, "bob", "b.example")
	s, _, rec := sendersStore(t, dsn, "", "", `[sign.senders]
"alice@a.example" = ["sales@b.example"]
`)
	b := NewBinding(s.cfg, s.SenderSources()...)
	queries := func() int {
		return rec.count(&rec.queries, "senders/"+DBFound) + rec.count(&rec.queries, "senders/"+DBNotFound)
	}
	for _, tc := range []struct {
		login, from string
		allowed     bool
		queries     int // made by this check
		reason      string
	}{
		{"alice@a.example", "alice@a.example", true, 0, ""},
		{"alice@a.example", "sales@b.example", true, 0, ""},
		{"alice@a.example", "ceo@b.example", true, 1, ""},
		{"Alice@A.example", "ceo@b.example", true, 0, ""},
		{"alice@a.example", "info@b.example", false, 0, "what [sign.senders] or database.senders_query lists for it, not for From info@b.example"},
		{"bob", "x@b.example", true, 1, ""},
		{"bob", "x@a.example", false, 0, `login "bob" may have mail signed only for what [sign.senders] or database.senders_query lists for it`},
		{"carol", "x@a.example", false, 1, `nothing in [sign.senders] or database.senders_query maps it`},
		{"dave@a.example", "x@b.example", false, 1, "[sign.senders] or database.senders_query can allow more"},
	} {
		before := queries()
		m, err := b.Check(context.Background(), tc.login, tc.from)
		if err != nil || (m == nil) != tc.allowed || m != nil && !strings.Contains(m.Reason, tc.reason) {
			t.Errorf("%s as %s: %+v, %v", tc.login, tc.from, m, err)
		}
		if n := queries() - before; n != tc.queries {
			t.Errorf("%s as %s: %d queries, want %d", tc.login, tc.from, n, tc.queries)
		}
	}
}

// Without senders_query the Store has no sender source.
func TestDatabaseSendersNone(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, keySchema)
	s, _ := dbStore(t, dsn, "", "")
	if srcs := s.SenderSources(); len(srcs) != 0 {
		t.Errorf("sources %v", srcs)
	}
	var nilStore *Store
	if srcs := nilStore.SenderSources(); len(srcs) != 0 {
		t.Errorf("sources %v", srcs)
	}
}
