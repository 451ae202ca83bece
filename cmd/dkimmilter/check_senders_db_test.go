package main

import (
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/pgtest"
)

// check runs database.senders_query once, for a login that cannot exist:
// it passes when the query runs and finds nothing, and fails, naming the
// server but never the password, when the server is down, the query does
// not run or has the wrong shape, or it gives that login entries (every
// login would get them). The summary says the database is asked, and how
// to map a bare login there; a query that cannot take effect is warned of.
func TestCheckSendersQuery(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, "CREATE TABLE dkim_senders (login text NOT NULL, allowed text NOT NULL)",
		"INSERT INTO dkim_senders VALUES ('alice@example.com', 'example.org')")
	const org = `[keys.org]
domain = "example.org"
selector = "rsa"
file = "keys/rsa.pem"
[[signing]]
from = "*@example.org"
keys = ["org"]
`
	database := func(dsn, query string) string {
		return "[database]\ndsn = " + config.TOMLString(dsn) + "\nsenders_query = " + config.TOMLString(query) + "\n"
	}
	const good = "SELECT allowed FROM dkim_senders WHERE login = $1"
	down := t.TempDir()
	tests := []struct {
		name, extra string
		code        int
		out, errs   []string
	}{
		{"ok", org + database(dsn, good), exitOK, []string{
			"and for what [sign.senders] lists for it (none listed), then for what database.senders_query returns for it\n",
			`gets mail signed only for what [sign.senders] or database.senders_query lists for it (in [sign.senders], none is mapped; the database's are not listed here)`,
			"or a row for database.senders_query (the login in lower case), e.g.\n    INSERT INTO dkim_senders (login, allowed) VALUES ('alice', 'alice@example.com');\n",
			"sender binding: database.senders_query runs (no row for dkimmilter-check@dkimmilter-check.invalid)\n",
			": OK\n",
		}, nil},
		{"down", database("host="+down+" dbname=mail user=dkimmilter password=s3cret", good), exitConfig, nil, []string{
			"dkimmilter.toml: database.dsn: PostgreSQL (host " + down + " port 5432 database mail user dkimmilter): cannot connect",
		}},
		{"no such table", database(dsn, "SELECT allowed FROM dkim_sendrs WHERE login = $1"), exitConfig, nil, []string{
			"dkimmilter.toml: database.senders_query: PostgreSQL (host " + c.SocketDir() + " port 5432 database ", `relation "dkim_sendrs" does not exist`,
		}},
		{"two columns", database(dsn, "SELECT login, allowed FROM dkim_senders WHERE login = $1"), exitConfig, nil, []string{
			`database.senders_query, login "dkimmilter-check@dkimmilter-check.invalid": the query returns 2 columns; it must return 1`,
		}},
		{"rows for any login", database(dsn, "SELECT allowed FROM dkim_senders WHERE login = $1 OR true"), exitConfig, nil, []string{
			"dkimmilter.toml: database.senders_query: PostgreSQL (host ", "for login dkimmilter-check@dkimmilter-check.invalid, which cannot exist, the query returns example.org: every login would get these too; check its WHERE",
		}},
		{"a row that is not an entry", database(dsn, "SELECT 'example org' WHERE $1::text <> ''"), exitConfig, nil, []string{
			`row 1: "example org" is not a domain`,
		}},
		{"binding off", "[sign]\nsender_binding = \"off\"\n" + database(dsn, good), exitOK, nil, []string{
			`database.senders_query has no effect: sign.sender_binding is "off"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.extra)
			code, out, errs := runCmd("check", "-config", f.cfg, "-user", me)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\n%s%s", code, tt.code, out, errs)
			}
			wantOutput(t, out, tt.out...)
			wantOutput(t, errs, tt.errs...)
			if strings.Contains(out+errs, "s3cret") {
				t.Errorf("the password is shown:\n%s", errs)
			}
		})
	}
}
