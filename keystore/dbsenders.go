package keystore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dkimmilter/dkimmilter/config"
)

// database.senders_query: the sender binding's mapping from logins to the
// From addresses and domains they may use, kept in the database beside
// the keys, for the panels that add mailboxes and aliases all day. It is
// a SenderSource asked after [sign.senders], on the keys' pool and with a
// cache of its own of the same kind: bounded, single flight, positive
// and negative TTLs, failures never kept.

// MaxSenderRows is the most rows senders_query may return for one login.
// Entries are few (a domain covers its subdomains, "*" every From); a
// query that returns more has lost its WHERE, and its answer would be
// kept in memory for every login.
const MaxSenderRows = 1000

// senderAnswer is what senders_query said for one login: its entries, or
// a row that is not one (err). No row is a nil *senderAnswer.
type senderAnswer struct {
	allowed []string
	err     error
}

// SenderSources returns the Store's sources for NewBinding:
// database.senders_query when it is set, else none.
func (s *Store) SenderSources() []SenderSource {
	if s == nil || s.dbs == nil || s.cfg.Database.SendersQuery == "" {
		return nil
	}
	return []SenderSource{dbSenders{s}}
}

// dbSenders is database.senders_query as a SenderSource. It reads the
// Store's pool at each call: a reload may hand the Store another's.
type dbSenders struct{ s *Store }

func (dbSenders) String() string { return "database.senders_query" }

// Senders asks senders_query for the login, through the cache, within
// database.query_timeout. The login goes to the query as $1 in lower
// case, so that the database, like [sign.senders], matches it without
// regard to case: SASL mechanisms and Postfix pass the login as the user
// typed it, "Alice@A.example" as well as "alice@a.example", and both are
// one mailbox. The table must hold logins in lower case (a CHECK
// constraint can say so); one answer is cached for all spellings.
//
// No row: found is false. A row that is not an entry (NULL, a pattern,
// a space, an address with a bad domain), more than MaxSenderRows rows,
// or rows of the wrong shape: an error naming the login and the row, and
// the message gets actions.sign_error, as a key row that cannot sign.
// Skipping the row instead would guess what the table meant: the entry
// that allows this From may be the one mistyped, and the mail would go
// out unsigned, or be refused for good with actions.sender_mismatch =
// "reject", for a mistake in the table that a tempfail gives the
// operator time to fix (it is kept negative_cache_ttl, like no row).
func (d dbSenders) Senders(ctx context.Context, login string) ([]string, bool, error) {
	s := d.s // SenderSources made d only with a database
	if login == "" || !utf8.ValidString(login) || strings.IndexByte(login, 0) >= 0 {
		// Authenticated without a login name, or with one that text
		// in PostgreSQL cannot hold (the server would refuse the
		// query, and tempfail the login's mail for ever): no row can
		// be for it.
		return nil, false, nil
	}
	login = strings.ToLower(login)
	timeout := s.cfg.Database.QueryTimeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	a, hit, err := s.dbs.senders.get(ctx, login, func(ctx context.Context) (*senderAnswer, time.Duration, error) {
		return s.querySenders(ctx, login)
	})
	switch {
	case !hit:
		s.observeCache(DBSenders, DBMiss)
	case a == nil || a.err != nil:
		s.observeCache(DBSenders, DBNegativeHit)
	default:
		s.observeCache(DBSenders, DBHit)
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within database.query_timeout (%v)", timeout)
		}
		return nil, false, fmt.Errorf("PostgreSQL (%s): %w", s.dbs.db.target, err)
	}
	switch {
	case a == nil:
		return nil, false, nil
	case a.err != nil:
		return nil, false, fmt.Errorf("PostgreSQL (%s): %w", s.dbs.db.target, a.err)
	}
	return a.allowed, true, nil
}

// querySenders runs senders_query for a login (lower-case) and says how
// long to keep the answer: cache_ttl for entries, negative_cache_ttl for
// no row and for a row that is not an entry; a failure is not kept.
func (s *Store) querySenders(ctx context.Context, login string) (*senderAnswer, time.Duration, error) {
	start := time.Now()
	a, err := runSendersQuery(ctx, s.dbs.db, s.cfg.Database.SendersQuery, login)
	var bad error
	if a != nil {
		bad = a.err
	}
	ttl, err := s.judge(DBSenders, DBBadRow, start, err, a != nil, bad)
	if err != nil {
		return nil, 0, err
	}
	return a, ttl, nil
}

// runSendersQuery runs query for login and judges its rows: nil for no
// row, an answer with err for rows that cannot be used (the query's
// shape, a row that is not an entry, too many rows). err is the
// database's.
func runSendersQuery(ctx context.Context, db *database, query, login string) (*senderAnswer, error) {
	vals, err := db.fetchSenders(ctx, query, login)
	var se shapeError
	switch {
	case errors.As(err, &se):
		return &senderAnswer{err: sendersRowError(login, err)}, nil
	case err != nil:
		return nil, err
	case len(vals) == 0:
		return nil, nil
	case len(vals) > MaxSenderRows:
		return &senderAnswer{err: sendersRowError(login, fmt.Errorf("the query returns more than %d rows; a login's entries are few (a domain covers its subdomains, \"*\" any From): check its WHERE", MaxSenderRows))}, nil
	}
	allowed := make([]string, 0, len(vals))
	for i, v := range vals {
		if v == nil {
			return &senderAnswer{err: sendersRowError(login, fmt.Errorf("row %d is NULL; leave NULLs out (WHERE allowed IS NOT NULL), or write an entry", i+1))}, nil
		}
		// A char(n) column pads with spaces; they are no part of the
		// entry.
		e, prob := config.SenderEntry(strings.TrimSpace(*v))
		if prob != "" {
			return &senderAnswer{err: sendersRowError(login, fmt.Errorf("row %d: %s", i+1, prob))}, nil
		}
		allowed = append(allowed, e)
	}
	return &senderAnswer{allowed: allowed}, nil
}

func sendersRowError(login string, err error) error {
	return fmt.Errorf("database.senders_query, login %q: %w", login, err)
}

// fetchSenders runs a senders query with the login as $1 and returns its
// one text column, at most MaxSenderRows+1 rows (one more tells that
// there are too many). A failure of the server or the SQL is an error as
// pgx says it; rows of the wrong shape a shapeError.
func (db *database) fetchSenders(ctx context.Context, query, login string) ([]*string, error) {
	rows, err := db.pool.Query(ctx, query, login)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if n := len(rows.FieldDescriptions()); n != 1 {
		// No columns at all is also how a query that failed looks.
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, shapeError{fmt.Sprintf("the query returns %d columns; it must return 1, the From address or domain the login may use (e.g. \"SELECT allowed FROM dkim_senders WHERE login = $1\")", n)}
	}
	var vals []*string
	for rows.Next() {
		var v *string
		if err := rows.Scan(&v); err != nil {
			// Scan decodes what Next has read: its error is the
			// column's type, not the connection (rows.Err says the
			// same error again).
			return nil, shapeError{fmt.Sprintf("cannot read the row: %v; the column must be text", err)}
		}
		if vals = append(vals, v); len(vals) > MaxSenderRows {
			break
		}
	}
	rows.Close()
	return vals, rows.Err()
}
