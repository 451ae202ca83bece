package keystore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/net/idna"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// DBObserver is told what the database lookups do, for the metrics:
// those of keys with a query (query DBKeys) and those of
// database.senders_query (query DBSenders). Its methods are called on the
// message's goroutine and must not block.
type DBObserver interface {
	// DBCache: "hit" (an answer from the cache: a key, a login's
	// entries), "negative_hit" (the cache says there is no usable
	// answer: no row, or a row that cannot be used) or "miss" (the
	// database was asked, or a query for the same domain or login
	// already running was waited for).
	DBCache(query, result string)
	// DBQuery: a query sent to the database, how long it took and its
	// outcome: "found", "not_found", "bad_key" (a key row that cannot
	// sign), "bad_row" (a senders row that is not an entry), "timeout"
	// or "error" (the server, the connection, the SQL, or the file
	// system for a key file the row names).
	DBQuery(query, outcome string, d time.Duration)
}

// The queries of DBObserver, and the outcomes of its DBQuery and DBCache.
const (
	DBKeys    = "keys"
	DBSenders = "senders"

	DBFound       = "found"
	DBNotFound    = "not_found"
	DBBadKey      = "bad_key"
	DBBadRow      = "bad_row"
	DBTimeout     = "timeout"
	DBError       = "error"
	DBHit         = "hit"
	DBNegativeHit = "negative_hit"
	DBMiss        = "miss"
)

// database is the connection pool of [database], shared by the Stores of
// successive reloads while its settings stay the same, and closed when
// the last of them is closed.
type database struct {
	pool     *pgxpool.Pool
	settings config.Database // the part that made the pool (see samePool)
	target   string          // "host H port P database D user U": no password
	refs     atomic.Int32
}

// openDatabase makes the pool; it does not connect. The daemon starts
// without the server, and lookups fail (actions.sign_error) until it
// answers: a database outage must not stop the mail that does not need it.
func openDatabase(cfg *config.Config) (*database, error) {
	pc, err := pgxpool.ParseConfig(cfg.Database.DSN)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", cfg.Where(0), dsnError(cfg.Database.DSN, err))
	}
	pc.MaxConns = int32(cfg.Database.MaxConns)
	pc.MinConns = 0
	rp := pc.ConnConfig.RuntimeParams
	if rp == nil {
		rp = map[string]string{}
		pc.ConnConfig.RuntimeParams = rp
	}
	if _, ok := rp["application_name"]; !ok {
		rp["application_name"] = "dkimmilter"
	}
	if _, ok := rp["statement_timeout"]; !ok {
		// The server stops a query the milter has given up on, instead
		// of running it to the end for nobody.
		rp["statement_timeout"] = strconv.FormatInt(cfg.Database.QueryTimeout.Milliseconds(), 10)
	}
	if pc.ConnConfig.ConnectTimeout == 0 || pc.ConnConfig.ConnectTimeout > cfg.Database.QueryTimeout {
		pc.ConnConfig.ConnectTimeout = cfg.Database.QueryTimeout
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("%s: database: %v", cfg.Where(0), err)
	}
	db := &database{pool: pool, settings: cfg.Database, target: DSNTarget(pc.ConnConfig.Config)}
	db.refs.Store(1)
	return db, nil
}

// dsnError says that dsn does not parse without showing it: pgx's own
// message quotes the connection string with the password masked, but its
// masking is best effort and misses valid libpq forms ("password = x",
// quoted passwords with escaped quotes), and the message goes to the log.
// The inner cause is added only when its text cannot carry a part of the
// string: no quotes (pgx and net/url quote what they cite) and none of
// its words.
func dsnError(dsn string, err error) error {
	const msg = "database.dsn cannot be parsed; write it as key=value pairs separated by spaces (host=/run/postgresql dbname=mail user=dkimmilter) or as a postgres:// URL"
	var pe *pgconn.ParseConfigError
	if !errors.As(err, &pe) {
		return errors.New(msg)
	}
	inner := errors.Unwrap(pe)
	var ue *url.Error
	if errors.As(inner, &ue) {
		inner = ue.Err // url.Error repeats the whole URL
	}
	if inner == nil || !safeCause(dsn, inner.Error()) {
		return errors.New(msg)
	}
	return fmt.Errorf("%s (%s)", msg, inner.Error())
}

// safeCause: text quotes nothing and contains no word of dsn (split at
// spaces and the separators of both syntaxes) longer than two letters.
func safeCause(dsn, text string) bool {
	if strings.ContainsAny(text, "\"'`") {
		return false
	}
	words := strings.FieldsFunc(dsn, func(r rune) bool { return unicode.IsSpace(r) || strings.ContainsRune("=:/@?&\\'", r) })
	for _, w := range words {
		if len(w) > 2 && strings.Contains(text, w) {
			return false
		}
	}
	return true
}

// DSNTarget names the server of a connection configuration for messages:
// host (or socket directory), port, database and user, never the password.
func DSNTarget(c pgconn.Config) string {
	return fmt.Sprintf("host %s port %d database %s user %s", c.Host, c.Port, c.Database, c.User)
}

func (db *database) retain() { db.refs.Add(1) }

func (db *database) release() {
	if db.refs.Add(-1) == 0 {
		db.pool.Close()
	}
}

// samePool: a reload to these settings can keep the pool, and its
// connections, of the Store before. The cache is not kept: a reload reads
// every key again.
func (db *database) samePool(c config.Database) bool {
	return db.settings.DSN == c.DSN && db.settings.MaxConns == c.MaxConns && db.settings.QueryTimeout == c.QueryTimeout
}

// dbAnswer is what a query said for one domain: a key, or a row that
// cannot sign (err). No row is a nil *dbAnswer.
type dbAnswer struct {
	selector string
	file     string // the row's private_key when it is a file path
	key      *PrivateKey
	err      error
}

// dbState is a Store's part for keys with a query and for
// database.senders_query: the pool, and a cache for each query.
type dbState struct {
	db      *database
	cache   *cache[*dbAnswer]     // keys, by key name and From domain
	senders *cache[*senderAnswer] // database.senders_query, by login
	obs     DBObserver
	once    sync.Once // Close
}

func (s *Store) observeCache(query, result string) {
	if s.dbs != nil && s.dbs.obs != nil {
		s.dbs.obs.DBCache(query, result)
	}
}

func (s *Store) observeQuery(query, outcome string, d time.Duration) {
	if s.dbs != nil && s.dbs.obs != nil {
		s.dbs.obs.DBQuery(query, outcome, d)
	}
}

// SetObserver makes obs see the database lookups. Call it before the
// Store is used.
func (s *Store) SetObserver(obs DBObserver) {
	if s.dbs != nil {
		s.dbs.obs = obs
	}
}

// Adopt takes over the connection pool of prev, the Store in force until
// a reload, when its database settings are the same: the connections
// stay open. Call it before s is used.
func (s *Store) Adopt(prev *Store) {
	if s == nil || prev == nil || s.dbs == nil || prev.dbs == nil || s.dbs.db == prev.dbs.db {
		return
	}
	if !prev.dbs.db.samePool(s.cfg.Database) {
		return
	}
	prev.dbs.db.retain()
	own := s.dbs.db
	s.dbs.db = prev.dbs.db
	own.release()
}

// Close releases the Store's connection pool (shared with the Stores of
// other reloads, and closed with the last). A lookup after Close fails.
// It is safe to call more than once, and on a Store without a database.
func (s *Store) Close() {
	if s == nil || s.dbs == nil {
		return
	}
	s.dbs.once.Do(s.dbs.db.release)
}

// DatabaseTarget names the server of [database] ("" without one in use)
// for messages: host, port, database and user, never the password.
func (s *Store) DatabaseTarget() string {
	if s.dbs == nil {
		return ""
	}
	return s.dbs.db.target
}

// dbKey resolves key ck for a From domain through its query and the
// cache, within ctx, the deadline of the whole Lookup. No row is
// errNoDomainKey: the rule does not apply, as with a missing '%' key
// file. A row that cannot sign, and a database that does not answer
// within query_timeout (waiting for a connection included), are errors:
// the message gets actions.sign_error.
func (s *Store) dbKey(ctx context.Context, ck *config.Key, domain string) (*Key, error) {
	if s.dbs == nil {
		return nil, fmt.Errorf("key %s has a query but no database is open", ck.Name)
	}
	// The table holds A-labels (d= is one, RFC 6376 §3.5); an SMTPUTF8
	// From has U-labels. A name IDNA refuses is not a domain this key can
	// sign for: the rule does not apply, as for other non-DNS names.
	domain, err := idna.Lookup.ToASCII(domain)
	if err != nil {
		return nil, errNoDomainKey
	}
	timeout := s.cfg.Database.QueryTimeout
	a, hit, err := s.dbs.cache.get(ctx, ck.Name+"\x00"+domain, func(ctx context.Context) (*dbAnswer, time.Duration, error) {
		return s.queryKey(ctx, ck, domain)
	})
	switch {
	case !hit:
		s.observeCache(DBKeys, DBMiss)
	case a == nil || a.err != nil:
		s.observeCache(DBKeys, DBNegativeHit)
	default:
		s.observeCache(DBKeys, DBHit)
	}
	if errors.As(err, new(fileFailure)) {
		return nil, err // it names the server, the key and the domain
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within database.query_timeout (%v)", timeout)
		}
		return nil, fmt.Errorf("PostgreSQL (%s): looking up the key of %s: %w", s.dbs.db.target, domain, err)
	}
	if a == nil {
		return nil, errNoDomainKey
	}
	if a.err != nil {
		return nil, a.err
	}
	return &Key{Name: ck.Name, Domain: domain, Selector: a.selector, File: a.file, PrivateKey: a.key}, nil
}

// queryKey asks the database for the key of domain and says how long to
// keep the answer: cache_ttl for a key, negative_cache_ttl for no row and
// for a row that cannot sign (it is fixed in the table, and seen within
// that time); a failure of the database, or of the file system for a key
// file the row names, is not kept.
func (s *Store) queryKey(ctx context.Context, ck *config.Key, domain string) (*dbAnswer, time.Duration, error) {
	start := time.Now()
	a, err := s.runKeyQuery(ctx, ck, domain)
	var bad error
	if a != nil {
		bad = a.err
	}
	ttl, err := s.judge(DBKeys, DBBadKey, start, err, a != nil, bad)
	if err != nil {
		return nil, 0, err
	}
	return a, ttl, nil
}

// judge counts one query of either kind by its outcome, and says how long
// the cache keeps its answer: cache_ttl for a usable row, negative_cache_ttl
// for no row (found false) and for a row that cannot be used (bad, counted
// as badOutcome). A failure (err) is returned as it is, and not kept.
func (s *Store) judge(query, badOutcome string, start time.Time, err error, found bool, bad error) (time.Duration, error) {
	outcome := DBFound
	switch {
	case err != nil && isTimeout(err):
		outcome = DBTimeout
	case err != nil:
		outcome = DBError
	case !found:
		outcome = DBNotFound
	case bad != nil:
		outcome = badOutcome
	}
	s.observeQuery(query, outcome, time.Since(start))
	switch {
	case err != nil:
		return 0, err
	case !found || bad != nil:
		return s.cfg.Database.NegativeCacheTTL, nil
	}
	return s.cfg.Database.CacheTTL, nil
}

// isTimeout: the query_timeout ran out here, or the server's
// statement_timeout (SQLSTATE 57014, query_canceled) stopped the query.
func isTimeout(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "57014" {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)
}

func (s *Store) runKeyQuery(ctx context.Context, ck *config.Key, domain string) (*dbAnswer, error) {
	found, err := s.dbs.db.fetch(ctx, ck.Query, false, 2, domain)
	var se shapeError
	switch {
	case errors.As(err, &se):
		return &dbAnswer{err: s.rowError(ck, domain, err)}, nil
	case err != nil:
		return nil, err
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
	default:
		return &dbAnswer{err: s.rowError(ck, domain, errTwoRows)}, nil
	}
	if ck.Rotate > 0 {
		// The key rotation switched to wins over the query's, for a
		// domain the query still has a row for (one removed from the
		// admin's table stops signing, rotated or not). Cached with it:
		// every host switches within cache_ttl, and rotation keeps the
		// old record that much longer (doc/rotation.md).
		a, err := s.rotatedKey(ctx, ck, domain)
		if err != nil || a != nil {
			return a, err
		}
	}
	sel, file, pk, err := ParseKeyRow(found[0].selector, found[0].key)
	if errors.As(err, new(fileFailure)) {
		return nil, fileFailure{s.rowError(ck, domain, err)}
	}
	if err != nil {
		return &dbAnswer{err: s.rowError(ck, domain, err)}, nil
	}
	return &dbAnswer{selector: sel, file: file, key: pk}, nil
}

var errTwoRows = errors.New("the query returns more than one row; which key signs must not depend on row order (add a condition, or ORDER BY ... LIMIT 1)")

// keyRow is a row of a key query, or of a list query (with domain).
type keyRow struct {
	domain   *string
	selector *string
	key      []byte
}

// shapeError: the query runs, but its rows are not what a key query
// returns (columns, types).
type shapeError struct{ msg string }

func (e shapeError) Error() string { return e.msg }

// fetch runs a key query (list false: selector, private_key) or a list
// query (domain, selector, private_key) with args, and returns at most max
// rows (0: all). A failure of the server or the SQL is an error as pgx
// says it; rows of the wrong shape a shapeError.
func (db *database) fetch(ctx context.Context, query string, list bool, max int, args ...any) ([]keyRow, error) {
	rows, err := db.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	want, cols := 2, "selector, private_key"
	if list {
		want, cols = 3, "domain, selector, private_key"
	}
	if n := len(rows.FieldDescriptions()); n != want {
		// No columns at all is also how a query that failed looks.
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, shapeError{fmt.Sprintf("the query returns %d columns; it must return %d: %s", n, want, cols)}
	}
	var found []keyRow
	for rows.Next() {
		var r keyRow
		dest := []any{&r.selector, &r.key}
		if list {
			dest = append([]any{&r.domain}, dest...)
		}
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, err
			}
			return nil, shapeError{fmt.Sprintf("cannot read the row: %v; the columns must be %s, text (private_key may be bytea)", err, cols)}
		}
		if found = append(found, r); max > 0 && len(found) >= max {
			break
		}
	}
	rows.Close()
	return found, rows.Err()
}

func (s *Store) rowError(ck *config.Key, domain string, err error) error {
	return fmt.Errorf("PostgreSQL (%s): keys.%s, domain %s: %w", s.dbs.db.target, ck.Name, domain, err)
}

// ParseKeyRow checks a row of a key query: the selector, and the private
// key, held in the column (PEM, or the other forms ParsePrivateKey takes)
// or named by an absolute file path, read with the checks of a key file
// (permissions included) and refused when it is a symbolic link or larger
// than any key (see readKeyPath). Keys are held to the rules of key files: RSA
// under dkim.MinRSABits is refused (RFC 8301 §3.2), and only RSA and
// Ed25519 sign. file is the path when the column holds one.
func ParseKeyRow(selector *string, key []byte) (sel, file string, pk *PrivateKey, err error) {
	switch {
	case selector == nil:
		return "", "", nil, errors.New("the selector is NULL")
	case dkim.NameProblem(*selector) != "":
		return "", "", nil, fmt.Errorf("the selector %q is not a selector: %s", *selector, dkim.NameProblem(*selector))
	case key == nil:
		return "", "", nil, errors.New("private_key is NULL")
	}
	sel = *selector
	text := strings.TrimSpace(string(key))
	if strings.HasPrefix(text, "/") && !strings.ContainsAny(text, "\n") {
		file = text
		pk, err = readKeyPath(file)
		if err != nil {
			return "", "", nil, fmt.Errorf("selector %s, private_key file: %w", sel, err)
		}
		return sel, file, pk, nil
	}
	pk, err = ParsePrivateKey(key)
	if err != nil {
		return "", "", nil, fmt.Errorf("selector %s, private_key: %w", sel, err)
	}
	return sel, "", pk, nil
}

// openDBState opens the pool of cfg's [database] when a key has a query
// or database.senders_query is set.
func openDBState(cfg *config.Config) (*dbState, error) {
	need := cfg.Database.SendersQuery != ""
	for _, k := range cfg.Keys {
		need = need || k.Query != ""
	}
	if !need || cfg.Database.DSN == "" {
		return nil, nil
	}
	db, err := openDatabase(cfg)
	if err != nil {
		return nil, err
	}
	keys := newCache[*dbAnswer](cfg.Database.CacheSize, nil)
	keys.flightTTL = cfg.Database.QueryTimeout // a Lookup's own deadline
	senders := newCache[*senderAnswer](cfg.Database.CacheSize, nil)
	senders.flightTTL = cfg.Database.QueryTimeout
	return &dbState{db: db, cache: keys, senders: senders}, nil
}
