package milter

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/pgtest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// One throwaway PostgreSQL server for the package's database tests, a
// database each.
func TestMain(m *testing.M) { pgtest.Main(m) }

const dbSchema = "CREATE TABLE dkim_keys (domain text PRIMARY KEY, selector text NOT NULL, private_key text NOT NULL)"

// dbConfig is baseConfig with a key from the database for every From
// domain but example.com; extra goes into [database].
func dbConfig(dsn, extra string) string {
	return strings.Replace(baseConfig, "[keys.rsa]", `[database]
dsn = `+config.TOMLString(dsn)+`
`+extra+`
[keys.rsa]`, 1) + `
[keys.db]
domain = "%"
query = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1"
[[signing]]
from = "*"
keys = ["db"]
`
}

// newDBEnv is newEnv on dbConfig, its database lookups counted in its own
// metrics, its pool closed at the end.
func newDBEnv(t *testing.T, dsn, extra string) *env {
	t.Helper()
	e := newEnv(t, dbConfig(dsn, extra))
	e.rt.Keys.SetObserver(e.metrics)
	t.Cleanup(e.rt.Close)
	return e
}

// addDomain puts a fresh Ed25519 key for domain in the table under
// selector and publishes its record.
func addDomain(t *testing.T, c *pgtest.Cluster, dsn string, e []*env, domain, selector string) {
	t.Helper()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	c.Exec(t, dsn, "INSERT INTO dkim_keys VALUES ($1, $2, $3) ON CONFLICT (domain) DO UPDATE SET selector = $2, private_key = $3",
		domain, selector, string(testkit.KeyPEM(k, false)))
	for _, e := range e {
		e.dns.SetTXT(selector+"._domainkey."+domain, testkit.KeyRecord(k, ""))
	}
}

func fromDomain(domain string) string {
	return strings.ReplaceAll(outbound, "alice@example.com", "alice@"+domain)
}

// signedBy returns the d= and s= of the one signature on out, verified
// here and by go-msgauth (env.verify), or fails.
func (e *env) signedBy(out []byte) (d, s string) {
	e.t.Helper()
	res := e.verify(out)
	if len(res) != 1 || res[0].Result != verifier.Pass {
		e.t.Fatalf("signatures: %+v", res)
	}
	return res[0].Domain, res[0].Selector
}

// metric reads one series of e's metrics, 0 when absent.
func (e *env) metric(series string) float64 {
	var b bytes.Buffer
	e.metrics.WritePrometheus(&b)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(b.String())
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// Ten milter connections, as ten smtpd processes, sign mail for 1,000
// domains whose keys are only in the database; every signature verifies
// with go-msgauth against the keys published in DNS.
func TestDatabaseSigningManyDomains(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, dbSchema)
	e := newDBEnv(t, dsn, "")
	const sessions, domains = 10, 1000
	var rows [][]any
	for i := range domains {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		d, sel := fmt.Sprintf("d%04d.example", i), "s"+strconv.Itoa(i%7)
		rows = append(rows, []any{d, sel, string(testkit.KeyPEM(k, false))})
		e.dns.SetTXT(sel+"._domainkey."+d, testkit.KeyRecord(k, ""))
	}
	c.CopyRows(t, dsn, "dkim_keys", []string{"domain", "selector", "private_key"}, rows)
	clients := make([]*testkit.Client, sessions)
	for i := range clients {
		clients[i] = e.dial("127.0.0.1")
	}
	outs := make([][]byte, domains)
	errs := make(chan error, domains)
	var wg sync.WaitGroup
	for s, cl := range clients {
		wg.Go(func() {
			for i := s; i < domains; i += sessions {
				raw := testkit.CRLF([]byte(fromDomain(fmt.Sprintf("d%04d.example", i))))
				r, err := cl.Send(aliceEnv, raw, 0)
				if err != nil {
					errs <- err
					return
				}
				outs[i] = testkit.Apply(raw, r.Mods, cl.Session.ProtocolOption(gomilter.OptHeaderLeadingSpace))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, out := range outs {
		if d, s := e.signedBy(out); d != fmt.Sprintf("d%04d.example", i) || s != "s"+strconv.Itoa(i%7) {
			t.Fatalf("message %d signed d=%s s=%s", i, d, s)
		}
	}
	if got := e.metric(`dkimmilter_database_queries_total{query="keys",outcome="found"}`); got != domains {
		t.Errorf("%v queries found a key, want %d", got, domains)
	}
	if got := e.metric(`dkimmilter_messages_total{decision="signed"}`); got != domains {
		t.Errorf("%v messages signed, want %d", got, domains)
	}
}

// The database down, a slow query, and a row that cannot sign: the
// message gets actions.sign_error (451 by default), never goes out
// unsigned; mail for example.com (a key file) is signed all the while.
// When the server is back, signing resumes by itself.
func TestDatabaseOutageTempfailsAndRecovers(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.CreateDB(t, dbSchema)
	e := newDBEnv(t, dsn, `query_timeout = "500ms"
cache_ttl = "0s"`)
	addDomain(t, c, dsn, []*env{e}, "a.example", "s1")
	c.Exec(t, dsn, "INSERT INTO dkim_keys VALUES ('garbage.example', 's1', 'not a key')")

	tempfailed := func(domain, why string) {
		t.Helper()
		r, _ := e.send("127.0.0.1", aliceEnv, fromDomain(domain), 0)
		if r.Action.Code != gomilter.ActReplyCode || r.Action.SMTPCode != 451 || len(r.Mods) != 0 {
			t.Fatalf("%s: answer %+v (%d modifications), want 451 and no signature", why, r.Action, len(r.Mods))
		}
	}
	signed := func(domain, why string) {
		t.Helper()
		_, out := e.send("127.0.0.1", aliceEnv, fromDomain(domain), 0)
		if d, _ := e.signedBy(out); d != domain {
			t.Fatalf("%s: signed for %s", why, d)
		}
	}
	signed("a.example", "before")
	tempfailed("garbage.example", "a key column holding garbage")
	if !strings.Contains(e.logs.String(), "keys.db, domain garbage.example: selector s1, private_key: not a private key") {
		t.Errorf("the log does not say which key and domain: %s", e.logs.String())
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tempfailed("a.example", "database down")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the answer took %v with query_timeout 500ms", d)
	}
	signed("example.com", "a key file while the database is down")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	signed("a.example", "after the restart")
	if got := e.metric(`dkimmilter_sign_errors_total`); got != 2 {
		t.Errorf("sign errors %v, want 2", got)
	}
	if e.metric(`dkimmilter_database_queries_total{query="keys",outcome="error"}`)+e.metric(`dkimmilter_database_queries_total{query="keys",outcome="timeout"}`) < 1 {
		t.Error("the outage is not counted")
	}
}

// A slow query beyond query_timeout tempfails its message within about
// the timeout, and the next message is signed as soon as the query is
// fast again.
func TestDatabaseSlowQueryTempfails(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, dbSchema, "CREATE TABLE slow (on_ boolean)", "INSERT INTO slow VALUES (true)",
		`CREATE FUNCTION key_for(d text) RETURNS TABLE (selector text, private_key text) LANGUAGE plpgsql AS $$
BEGIN
	IF (SELECT on_ FROM slow) THEN PERFORM pg_sleep(3); END IF;
	RETURN QUERY SELECT k.selector, k.private_key FROM dkim_keys k WHERE k.domain = d;
END $$`)
	cfg := strings.Replace(dbConfig(dsn, `query_timeout = "300ms"`),
		"FROM dkim_keys WHERE domain = $1", "FROM key_for($1)", 1)
	e := newEnv(t, cfg)
	t.Cleanup(e.rt.Close)
	addDomain(t, c, dsn, []*env{e}, "a.example", "s1")
	start := time.Now()
	r, _ := e.send("127.0.0.1", aliceEnv, fromDomain("a.example"), 0)
	if r.Action.SMTPCode != 451 {
		t.Fatalf("slow query: %+v", r.Action)
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("took %v with query_timeout 300ms and a query of 3s", d)
	}
	if !strings.Contains(e.logs.String(), "no answer within database.query_timeout (300ms)") && !strings.Contains(e.logs.String(), "statement timeout") {
		t.Errorf("log: %s", e.lastLog())
	}
	c.Exec(t, dsn, "UPDATE slow SET on_ = false")
	_, out := e.send("127.0.0.1", aliceEnv, fromDomain("a.example"), 0)
	e.signedBy(out)
}

// Two hosts, one database: a domain added after both were asked is
// signed by both once negative_cache_ttl passes; a key changed in the
// table is used by both within cache_ttl, without a reload; each host's
// metrics count its own cache hits and queries.
func TestDatabaseTwoHostsShareKeys(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, dbSchema)
	const ttl = 1500 * time.Millisecond
	extra := `cache_ttl = "1500ms"
negative_cache_ttl = "1500ms"`
	h1, h2 := newDBEnv(t, dsn, extra), newDBEnv(t, dsn, extra)
	hosts := []*env{h1, h2}

	for _, h := range hosts {
		_, out := h.send("127.0.0.1", aliceEnv, fromDomain("new.example"), 0)
		if len(testkit.Fields(out, "DKIM-Signature")) != 0 {
			t.Fatal("signed a domain the table does not have")
		}
	}
	addDomain(t, c, dsn, hosts, "new.example", "old")
	// Still the negative answer, on both.
	for _, h := range hosts {
		_, out := h.send("127.0.0.1", aliceEnv, fromDomain("new.example"), 0)
		if len(testkit.Fields(out, "DKIM-Signature")) != 0 {
			t.Fatal("the negative answer was not cached")
		}
	}
	time.Sleep(ttl + 100*time.Millisecond)
	for _, h := range hosts {
		_, out := h.send("127.0.0.1", aliceEnv, fromDomain("new.example"), 0)
		if _, s := h.signedBy(out); s != "old" {
			t.Fatalf("signed with %s", s)
		}
	}
	// Host 1 sends three more, host 2 one: cache hits, each its own.
	for range 3 {
		_, out := h1.send("127.0.0.1", aliceEnv, fromDomain("new.example"), 0)
		h1.signedBy(out)
	}
	_, out := h2.send("127.0.0.1", aliceEnv, fromDomain("new.example"), 0)
	h2.signedBy(out)

	// The key changes in the table: within cache_ttl both hosts use it.
	addDomain(t, c, dsn, hosts, "new.example", "new")
	time.Sleep(ttl + 100*time.Millisecond)
	for _, h := range hosts {
		_, out := h.send("127.0.0.1", aliceEnv, fromDomain("new.example"), 0)
		if _, s := h.signedBy(out); s != "new" {
			t.Fatalf("after cache_ttl: signed with %s", s)
		}
	}

	for i, want := range []struct{ hits, negative, misses, queries float64 }{
		{hits: 3, negative: 1, misses: 3, queries: 3},
		{hits: 1, negative: 1, misses: 3, queries: 3},
	} {
		h := hosts[i]
		got := struct{ hits, negative, misses, queries float64 }{
			h.metric(`dkimmilter_database_cache_total{query="keys",result="hit"}`),
			h.metric(`dkimmilter_database_cache_total{query="keys",result="negative_hit"}`),
			h.metric(`dkimmilter_database_cache_total{query="keys",result="miss"}`),
			h.metric(`dkimmilter_database_query_duration_seconds_count{query="keys"}`),
		}
		if got != want {
			t.Errorf("host %d: metrics %+v, want %+v", i+1, got, want)
		}
	}
}

// A reload hands new sessions a new Runtime; the old one's connection
// pool stays open while a session still runs on it, and closes when the
// last one ends. A reload to the same [database] keeps the pool itself.
// Shutdown closes the current one.
func TestDatabasePoolLifecycle(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, dbSchema)
	e := newDBEnv(t, dsn, `cache_ttl = "0s"`)
	addDomain(t, c, dsn, []*env{e}, "a.example", "s1")
	works := func(rt *Runtime) bool {
		sel, err := rt.Keys.Lookup("x@a.example")
		return err == nil && sel != nil
	}
	load := func(extra string) *Runtime {
		t.Helper()
		cfg, err := config.Parse(e.dir+"/dkimmilter.toml", []byte(strings.NewReplacer("{{dir}}", e.dir, "{{dns}}", e.dns.Addr).Replace(dbConfig(dsn, extra))))
		if err != nil {
			t.Fatal(err)
		}
		rt, _, err := LoadRuntime(cfg, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
	first := e.rt
	cl := e.dial("127.0.0.1") // a session on the first Runtime
	_, out := e.sendOn(cl, aliceEnv, fromDomain("a.example"), 0)
	e.signedBy(out)

	same := load(`cache_ttl = "0s"`)
	e.srv.SetRuntime(same)
	if same.Keys.DatabaseTarget() == "" || !works(first) || !works(same) {
		t.Fatal("after a reload to the same database")
	}
	other := load(`cache_ttl = "0s"
max_conns = 3`)
	e.srv.SetRuntime(other)
	if !works(same) {
		t.Error("a Runtime closed while its pool is shared with a session's")
	}
	cl.Close()
	deadline := time.Now().Add(5 * time.Second)
	for works(first) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if works(first) || works(same) {
		t.Error("the old pool is still open after the last session on it ended")
	}
	if !works(other) {
		t.Fatal("the new Runtime does not work")
	}
	e.srv.Shutdown(context.Background())
	if works(other) {
		t.Error("Shutdown left the pool open")
	}
}

// A reload whose resolver cannot be built after the key store was loaded
// closes that store's connection pool: each failed reload would otherwise
// leave a pool, and its health-check goroutine, behind.
func TestLoadRuntimeFailureClosesPool(t *testing.T) {
	pools := func() int {
		buf := make([]byte, 1<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "pgxpool.(*Pool).backgroundHealthCheck")
	}
	before := pools()
	for _, ns := range []string{"dns.example", "127.0.0.1:notaport"} {
		t.Run(ns, func(t *testing.T) {
			cfg, err := config.Parse(t.TempDir()+"/dkimmilter.toml", []byte(`
[database]
dsn = "host=/nonexistent dbname=mail user=dkimmilter"
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
			cfg.DNS.Nameservers = []string{ns}
			if rt, _, err := LoadRuntime(cfg, nil, nil, nil); err == nil || !strings.Contains(err.Error(), ns) {
				t.Fatalf("LoadRuntime: %v, %v; want an error naming %s", rt, err, ns)
			}
			deadline := time.Now().Add(5 * time.Second)
			for pools() > before && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := pools(); n > before {
				t.Errorf("%d connection pools open after the failed load, %d before", n, before)
			}
		})
	}
}
