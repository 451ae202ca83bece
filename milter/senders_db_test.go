package milter

import (
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/pgtest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

const sendersSchema = "CREATE TABLE dkim_senders (login text NOT NULL CHECK (login = lower(login)), allowed text)"

// sendersEnv is the two-tenant host of tenantsEnv (a.example, b.example,
// keys in files), its logins' extra From domains in the database's
// dkim_senders; extra goes into [database]. Its database lookups are
// counted in its metrics.
func sendersEnv(t *testing.T, dsn, extra string) *env {
	t.Helper()
	e := tenantsEnv(t, "", `[database]
dsn = `+config.TOMLString(dsn)+`
senders_query = "SELECT allowed FROM dkim_senders WHERE login = $1"
`+extra, false)
	e.rt.Keys.SetObserver(e.metrics)
	t.Cleanup(e.rt.Close)
	return e
}

// The login -> From binding from PostgreSQL, through the milter as
// Postfix drives it ({auth_authen} at MAIL FROM): alice@a.example may not
// have b.example signed until a row allows it, and the row, inserted
// after she was found without one, takes effect once negative_cache_ttl
// has passed, without a reload. The login's case does not matter. A row
// that is not an entry is a signing failure (tempfail), naming the login
// and the row, never a signature nor a silent refusal.
func TestDatabaseSenderBinding(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, sendersSchema)
	e := sendersEnv(t, dsn, `negative_cache_ttl = "1s"`)

	signedFor := func(name, from string) string {
		t.Helper()
		r, out := e.send(remote, login(name), tenantMsg(from), 0)
		if r.Action.Code != gomilter.ActContinue {
			t.Fatalf("%s as %s: answer %c %d %s", name, from, r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText)
		}
		return e.signedFor(out)
	}

	if d := signedFor("alice@a.example", "alice@a.example"); d != "a.example" {
		t.Fatalf("own domain: signed for %q", d)
	}
	if got := e.counter(`dkimmilter_database_queries_total{query="senders",outcome="not_found"}`); got != 0 {
		t.Errorf("the own domain asked the database (%d queries)", got)
	}
	if d := signedFor("alice@a.example", "CEO <ceo@b.example>"); d != "" {
		t.Fatalf("another tenant's domain without a row: signed for %q", d)
	}
	line := e.lastLog()
	for _, w := range []string{"outcome=sender_mismatch", "login=alice@a.example", "from=ceo@b.example",
		"[sign.senders] or database.senders_query can allow more"} {
		if !strings.Contains(line, w) {
			t.Errorf("log line lacks %s: %s", w, line)
		}
	}

	c.Exec(t, dsn, "INSERT INTO dkim_senders VALUES ('alice@a.example', 'ceo@b.example')")
	if d := signedFor("alice@a.example", "ceo@b.example"); d != "" {
		t.Fatalf("within negative_cache_ttl: signed for %q", d)
	}
	time.Sleep(1100 * time.Millisecond)
	if d := signedFor("alice@a.example", "ceo@b.example"); d != "b.example" {
		t.Fatalf("after negative_cache_ttl: signed for %q, want b.example", d)
	}
	if !strings.Contains(e.lastLog(), "decision=signed") {
		t.Errorf("log: %s", e.lastLog())
	}
	// The login as the user typed it: the same mailbox, the same row.
	if d := signedFor("Alice@A.Example", "ceo@b.example"); d != "b.example" {
		t.Errorf("login in another case: signed for %q", d)
	}
	// The row allows one address, not the whole domain.
	if d := signedFor("alice@a.example", "sales@b.example"); d != "" {
		t.Errorf("another address of b.example: signed for %q", d)
	}

	c.Exec(t, dsn, "INSERT INTO dkim_senders VALUES ('mallory@a.example', 'b example')")
	r, out := e.send(remote, login("mallory@a.example"), tenantMsg("ceo@b.example"), 0)
	if r.Action.Code != gomilter.ActReplyCode || r.Action.SMTPCode != 451 || len(testkit.Fields(out, "DKIM-Signature")) != 0 {
		t.Fatalf("a bad row: answer %c %d %s, want the sign_error tempfail", r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText)
	}
	line = e.lastLog()
	for _, w := range []string{"outcome=sign_error", "level=ERROR", `database.senders_query, login \"mallory@a.example\": row 1: \"b example\" is not a domain`} {
		if !strings.Contains(line, w) {
			t.Errorf("log line lacks %s: %s", w, line)
		}
	}
	// Mallory's own domain needs no row: signed all the same.
	if d := signedFor("mallory@a.example", "mallory@a.example"); d != "a.example" {
		t.Errorf("own domain with a bad row: signed for %q", d)
	}

	for series, want := range map[string]int{
		`dkimmilter_database_queries_total{query="senders",outcome="not_found"}`: 1,
		`dkimmilter_database_queries_total{query="senders",outcome="found"}`:     1,
		`dkimmilter_database_queries_total{query="senders",outcome="bad_row"}`:   1,
		`dkimmilter_database_cache_total{query="senders",result="negative_hit"}`: 1,
		`dkimmilter_database_cache_total{query="senders",result="hit"}`:          2,
		`dkimmilter_database_queries_total{query="keys",outcome="found"}`:        0,
		`dkimmilter_sender_mismatches_total{reason="not_allowed"}`:               3,
		`dkimmilter_sign_errors_total`:                                           1,
		`dkimmilter_database_cache_total{query="senders",result="miss"}`:         3,
		`dkimmilter_database_query_duration_seconds_count{query="senders"}`:      3,
	} {
		if got := e.counter(series); got != want {
			t.Errorf("%s = %d, want %d", series, got, want)
		}
	}
}

// A database outage tempfails the mail that needs the database (a From
// beyond the login's own domain), never signs it and never refuses it
// for good; mail the login's own domain covers is signed all the while,
// and the binding recovers by itself when the server is back.
func TestDatabaseSenderBindingOutage(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.CreateDB(t, sendersSchema)
	c.Exec(t, dsn, "INSERT INTO dkim_senders VALUES ('alice@a.example', 'b.example')")
	e := sendersEnv(t, dsn, `query_timeout = "500ms"
cache_ttl = "0s"`)
	signed := func(from, want, why string) {
		t.Helper()
		r, out := e.send(remote, login("alice@a.example"), tenantMsg(from), 0)
		if r.Action.Code != gomilter.ActContinue || e.signedFor(out) != want {
			t.Fatalf("%s: answer %c %d %s, signed for %q, want %q", why, r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText, e.signedFor(out), want)
		}
	}
	signed("ceo@b.example", "b.example", "before")
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, out := e.send(remote, login("alice@a.example"), tenantMsg("ceo@b.example"), 0)
	if r.Action.Code != gomilter.ActReplyCode || r.Action.SMTPCode != 451 || len(testkit.Fields(out, "DKIM-Signature")) != 0 {
		t.Fatalf("database down: answer %c %d %s, want 451 and no signature", r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the answer took %v with query_timeout 500ms", d)
	}
	line := e.lastLog()
	for _, w := range []string{"outcome=sign_error", "database.senders_query could not say which From domains login", "PostgreSQL (host " + c.SocketDir()} {
		if !strings.Contains(line, w) {
			t.Errorf("log line lacks %s: %s", w, line)
		}
	}
	signed("alice@a.example", "a.example", "own domain while the database is down")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	signed("ceo@b.example", "b.example", "after the restart")
	if got := e.counter(`dkimmilter_sign_errors_total`); got != 1 {
		t.Errorf("sign errors %d, want 1", got)
	}
	if e.counter(`dkimmilter_database_queries_total{query="senders",outcome="error"}`)+e.counter(`dkimmilter_database_queries_total{query="senders",outcome="timeout"}`) != 1 {
		t.Error("the outage is not counted")
	}
}

// A reload to the same [database] hands the pool over: the new
// Runtime's sender binding asks the database on the pool it adopted
// (its own was closed), and sees the rows as before.
func TestDatabaseSenderBindingReload(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, sendersSchema)
	c.Exec(t, dsn, "INSERT INTO dkim_senders VALUES ('alice@a.example', 'b.example')")
	e := sendersEnv(t, dsn, `cache_ttl = "0s"`)
	first := e.rt
	cfg, err := config.Load(e.dir + "/dkimmilter.toml")
	if err != nil {
		t.Fatal(err)
	}
	rt, _, err := LoadRuntime(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt.Keys.SetObserver(e.metrics)
	e.srv.SetRuntime(rt)
	if rt.Keys.DatabaseTarget() == "" || rt.Keys.DatabaseTarget() != first.Keys.DatabaseTarget() {
		t.Fatalf("database %q after the reload, %q before", rt.Keys.DatabaseTarget(), first.Keys.DatabaseTarget())
	}
	for range 2 {
		r, out := e.send(remote, login("alice@a.example"), tenantMsg("ceo@b.example"), 0)
		if r.Action.Code != gomilter.ActContinue || e.signedFor(out) != "b.example" {
			t.Fatalf("after the reload: answer %c %d %s, signed for %q", r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText, e.signedFor(out))
		}
	}
	if got := e.counter(`dkimmilter_database_queries_total{query="senders",outcome="found"}`); got != 2 {
		t.Errorf("%d queries found the row, want 2 (cache_ttl 0s)", got)
	}
}
