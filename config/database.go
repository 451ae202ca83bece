package config

import (
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// database checks the [database] table. The DSN's syntax is the driver's
// to judge: keystore parses it when it loads the keys, and reports it with
// this file's name.
func (c *checker) database(f fileDatabase) Database {
	p := keyPath("database")
	out := Database{DSN: strings.TrimSpace(f.DSN), MaxConns: f.MaxConns, CacheSize: f.CacheSize}
	if f.MaxConns < 1 || f.MaxConns > 1000 {
		c.errf(p.child("max_conns"), "%d is out of range; write a number of connections from 1 to 1000, such as 8", f.MaxConns)
	}
	if f.CacheSize < 1 || f.CacheSize > 10_000_000 {
		c.errf(p.child("cache_size"), "%d is out of range; write a number of cached answers from 1 to 10000000, such as 10000", f.CacheSize)
	}
	for _, d := range []struct {
		name     string
		v        any
		dst      *time.Duration
		example  string
		min, max time.Duration
	}{
		{"query_timeout", f.QueryTimeout.v, &out.QueryTimeout, "2s", time.Millisecond, time.Minute},
		{"cache_ttl", f.CacheTTL.v, &out.CacheTTL, "5m", 0, 24 * time.Hour},
		{"negative_cache_ttl", f.NegativeCacheTTL.v, &out.NegativeCacheTTL, "1m", 0, 24 * time.Hour},
	} {
		v, ok := c.duration(p.child(d.name), d.v, d.example)
		if ok && (v < d.min || v > d.max) {
			c.errf(p.child(d.name), "%q is out of range; write a duration from %q to %q, such as %q", d.v, d.min.String(), d.max.String(), d.example)
		}
		*d.dst = v
	}
	if q := strings.TrimSpace(f.SendersQuery); q != "" {
		out.SendersQuery = q
		if prob := paramProblem(q, "the login", sendersQueryExample); prob != "" {
			c.errf(p.child("senders_query"), "%s", prob)
		}
		if out.DSN == "" {
			c.errf(p.child("senders_query"), `needs a database: add dsn = "host=/run/postgresql dbname=mail user=dkimmilter" to [database]`)
		}
	}
	return out
}

// The examples the query errors give.
const (
	keyQueryExample     = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1"
	sendersQueryExample = "SELECT allowed FROM dkim_senders WHERE login = $1"
)

// queryKey reads a [keys.NAME] table whose selector and private key come
// from [database]: domain must be "%" (the query is asked per From
// domain), and selector and file must be left out, since the row has them.
func (c *checker) queryKey(p path, k *Key, fk *fileKey, md *toml.MetaData) {
	name := k.Name
	k.Domain = strings.ToLower(fk.Domain)
	switch {
	case !md.IsDefined("keys", name, "domain"):
		c.errf(p.child("domain"), `missing: a key with a query signs for the From domain; write domain = "%%"`)
	case k.Domain != "%":
		c.errf(p.child("domain"), `%q: a key with a query signs for the From domain it is asked about; write domain = "%%"`, fk.Domain)
	}
	if md.IsDefined("keys", name, "file") {
		c.errf(p.child("file"), "a key takes its private key from file or from query, not both; remove one (the query's private_key column may hold a file path)")
	}
	if md.IsDefined("keys", name, "selector") {
		c.errf(p.child("selector"), "the query returns the selector; remove selector here")
	}
	if !md.IsDefined("keys", name, "query") {
		c.errf(p.child("query"), "missing: list_query only lists the keys that query finds; write query = \"SELECT selector, private_key FROM dkim_keys WHERE domain = $1\"")
	} else {
		k.Query = strings.TrimSpace(fk.Query)
		if prob := queryProblem(k.Query, true); prob != "" {
			c.errf(p.child("query"), "%s", prob)
		}
	}
	if md.IsDefined("keys", name, "list_query") {
		k.ListQuery = strings.TrimSpace(fk.ListQuery)
		if prob := queryProblem(k.ListQuery, false); prob != "" {
			c.errf(p.child("list_query"), "%s", prob)
		}
	}
}

var paramRE = regexp.MustCompile(`\$[0-9]+`)

// queryProblem checks what can be checked of a query without a server:
// the parameters. A query (withParam) takes the From domain as $1 and
// nothing else; a list query takes none. `dkimmilter check` runs both
// once against the server.
func queryProblem(q string, withParam bool) string {
	if q == "" {
		return "must not be empty"
	}
	params := paramRE.FindAllString(q, -1)
	if !withParam {
		if len(params) > 0 {
			return `takes no parameters (` + params[0] + `): it lists every domain's key, e.g. "SELECT domain, selector, private_key FROM dkim_keys"`
		}
		return ""
	}
	return paramProblem(q, "the From domain", keyQueryExample)
}

// paramProblem checks that q takes $1 (what, for the message) and no
// other parameter; example is a query that does.
func paramProblem(q, what, example string) string {
	has1 := false
	for _, prm := range paramRE.FindAllString(q, -1) {
		if prm != "$1" {
			return `uses ` + prm + `; the only parameter is $1, ` + what + `: e.g. "` + example + `"`
		}
		has1 = true
	}
	if !has1 {
		return `does not take $1, ` + what + `: write e.g. "` + example + `"`
	}
	return ""
}

// queryKeys checks what ties the keys with a query to [database].
func (c *checker) queryKeys(cfg *Config) {
	for _, name := range cfg.KeyNames() {
		k := cfg.Keys[name]
		if k.Query != "" && cfg.Database.DSN == "" {
			c.errf(keyPath("keys", name, "query"), `needs a database: add a [database] table with dsn = "host=/run/postgresql dbname=mail user=dkimmilter"`)
		}
	}
}
