package keystore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// DB is the database of keys with a query, as the commands use it
// (check, keys list, keys check, keys dns): without the cache, asking
// for one domain or listing them all.
type DB struct {
	cfg *config.Config
	db  *database
}

// OpenDB makes the pool of cfg's [database]; nil when no key has a
// query and database.senders_query is not set. It does not connect: Ping
// does.
func OpenDB(cfg *config.Config) (*DB, error) {
	st, err := openDBState(cfg)
	if err != nil || st == nil {
		return nil, err
	}
	return &DB{cfg: cfg, db: st.db}, nil
}

// Close closes the pool.
func (d *DB) Close() { d.db.release() }

// Target names the server: host, port, database and user, never the
// password.
func (d *DB) Target() string { return d.db.target }

// Ping connects within query_timeout; the error names the server.
func (d *DB) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Database.QueryTimeout)
	defer cancel()
	if err := d.db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("PostgreSQL (%s): cannot connect: %w", d.db.target, err)
	}
	return nil
}

// KeyRow is one domain's key as the database holds it, judged as the
// daemon would judge it.
type KeyRow struct {
	Domain, Selector string
	// File is the key file the row names; "" when the key is in the
	// column.
	File string
	// Status: Key (also for a key too short to sign with, so that a
	// listing can say what it is), Err (what the daemon refuses: a NULL
	// or bad selector, not a key, the wrong type or size, a key file it
	// cannot use), and for a file, its mode and age.
	Status KeyFileStatus
}

// Key asks key name's query for domain, as a message would: nil without
// a row. An error is the database's (or a query of the wrong shape); a
// row that cannot sign is a KeyRow with Status.Err.
func (d *DB) Key(ctx context.Context, name, domain string, acct *Account) (*KeyRow, error) {
	ck := d.cfg.Keys[name]
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Database.QueryTimeout)
	defer cancel()
	rows, err := d.db.fetch(ctx, ck.Query, false, 2, domain)
	if err != nil {
		return nil, d.queryError(name, "query", err)
	}
	switch len(rows) {
	case 0:
		return nil, nil
	case 1:
	default:
		return &KeyRow{Domain: domain, Status: KeyFileStatus{Err: errTwoRows}}, nil
	}
	r := inspectRow(domain, rows[0].selector, rows[0].key, acct)
	return &r, nil
}

// List runs key name's list_query: every domain's key, in the query's
// order. Rows for the same domain twice, or a NULL or bad domain, come
// back with Status.Err. It reads every row: the commands that call it list
// every key, and are run by an admin, not per message.
func (d *DB) List(ctx context.Context, name string, acct *Account) ([]KeyRow, error) {
	ck := d.cfg.Keys[name]
	if ck.ListQuery == "" {
		return nil, fmt.Errorf("keys.%s has no list_query", name)
	}
	rows, err := d.db.fetch(ctx, ck.ListQuery, true, 0)
	if err != nil {
		return nil, d.queryError(name, "list_query", err)
	}
	out := make([]KeyRow, 0, len(rows))
	seen := map[string]bool{}
	for _, r := range rows {
		domain := ""
		if r.domain != nil {
			domain = strings.ToLower(strings.TrimSuffix(*r.domain, "."))
		}
		kr := inspectRow(domain, r.selector, r.key, acct)
		switch {
		case r.domain == nil:
			kr.Domain, kr.Status.Err = "NULL", errors.New("the domain is NULL")
		case dkim.NameProblem(domain) != "":
			kr.Status.Err = fmt.Errorf("the domain %q is not a domain name: %s", domain, dkim.NameProblem(domain))
		case seen[domain]:
			kr.Status.Err = fmt.Errorf("%s is listed more than once; the key query must find one row per domain", domain)
		}
		seen[domain] = true
		out = append(out, kr)
	}
	return out, nil
}

// Probe runs each query of key name once, as `dkimmilter check` does:
// query for domain (rows of the wrong shape are an error; a row that
// cannot sign comes back as a KeyRow with Status.Err), and list_query,
// when there is one, for its first row only.
func (d *DB) Probe(ctx context.Context, name, domain string, acct *Account) (*KeyRow, error) {
	row, err := d.Key(ctx, name, domain, acct)
	if err != nil {
		return nil, err
	}
	ck := d.cfg.Keys[name]
	if ck.ListQuery == "" {
		return row, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Database.QueryTimeout)
	defer cancel()
	// The list may be long: the server stops after one row.
	q := "SELECT * FROM (" + strings.TrimRight(strings.TrimSpace(ck.ListQuery), "; \t\n") + ") AS dkimmilter_check LIMIT 1"
	if _, err := d.db.fetch(ctx, q, true, 1); err != nil {
		return row, d.queryError(name, "list_query", err)
	}
	return row, nil
}

// Senders runs database.senders_query once for login (lower-cased, as a
// message does), without the cache: the login's entries, nil without a
// row. The database's errors, rows of the wrong shape and rows that are
// not entries are errors naming the file, the query and the server.
func (d *DB) Senders(ctx context.Context, login string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Database.QueryTimeout)
	defer cancel()
	a, err := runSendersQuery(ctx, d.db, d.cfg.Database.SendersQuery, strings.ToLower(login))
	switch {
	case err != nil:
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within database.query_timeout (%v)", d.cfg.Database.QueryTimeout)
		}
		return nil, fmt.Errorf("%s: database.senders_query: PostgreSQL (%s): %w", d.cfg.Where(0), d.db.target, err)
	case a == nil:
		return nil, nil
	case a.err != nil:
		return nil, fmt.Errorf("%s: PostgreSQL (%s): %w", d.cfg.Where(0), d.db.target, a.err)
	}
	return a.allowed, nil
}

func (d *DB) queryError(name, which string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("no answer within database.query_timeout (%v)", d.cfg.Database.QueryTimeout)
	}
	return fmt.Errorf("%s: keys.%s.%s: PostgreSQL (%s): %w", d.cfg.Where(d.cfg.Keys[name].Line), name, which, d.db.target, err)
}

// inspectRow judges a row as ParseKeyRow does, keeping what a listing
// shows of a key that the daemon refuses (its type and size), and the
// mode and age of a key file it names.
func inspectRow(domain string, selector *string, key []byte, acct *Account) KeyRow {
	kr := KeyRow{Domain: domain}
	if selector != nil {
		kr.Selector = *selector
	}
	text := strings.TrimSpace(string(key))
	switch {
	case key != nil && strings.HasPrefix(text, "/") && !strings.Contains(text, "\n"):
		kr.File = text
		kr.Status = InspectKeyFileFor(text, acct)
	case key != nil:
		k, err := decodeKey(key)
		if err == nil {
			kr.Status.Key = k
			err = sizeError(k)
		}
		if err != nil {
			kr.Status.Err = fmt.Errorf("private_key: %w", err)
		}
	}
	// The selector and NULLs first: they are what ParseKeyRow says first.
	if _, _, _, err := ParseKeyRow(selector, key); err != nil && (selector == nil || key == nil || dkim.NameProblem(*selector) != "") {
		kr.Status.Err = err
	}
	return kr
}
