package rotation

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// LockKey is the PostgreSQL advisory lock (pg_try_advisory_lock) that
// the host rotating the keys with a query holds, on a connection of its
// own: one host rotates at a time, and a host that dies frees it with
// its session. It is the first 8 bytes of SHA-256("dkimmilter rotation"),
// so that it does not collide with an application's small numbers.
var LockKey = func() int64 {
	h := sha256.Sum256([]byte("dkimmilter rotation"))
	return int64(binary.BigEndian.Uint64(h[:8]))
}()

// The statements on keystore.RotationTable. A state is written in one
// statement (one transaction): the state and the active key together,
// so that a host that reads the active key reads the one the state says.
const (
	dbUpsert = `INSERT INTO ` + keystore.RotationTable + ` (key, domain, state, active_selector, active_private_key, updated)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (key, domain) DO UPDATE SET state = EXCLUDED.state, active_selector = EXCLUDED.active_selector,
active_private_key = EXCLUDED.active_private_key, updated = now()`
	dbStates = `SELECT domain, state FROM ` + keystore.RotationTable + ` WHERE key = $1`
	// dbNewStates reads those of some domains only: the rotating host
	// reads a domain's state once, when list_query first returns it.
	dbNewStates = dbStates + ` AND domain = ANY($2)`
)

// dbRotation is the rotation of the keys with a query: each domain their
// list_query returns rotates on its own, its state in the rotation
// table, while this process holds LockKey.
type dbRotation struct {
	db       *keystore.DB
	settings config.Database // what opened db
	// conn holds LockKey: the states are read and written on it, so a
	// process whose session ended (and whose lock another host may
	// have taken since) cannot write a state any more.
	conn     *pgx.Conn
	tryAt    time.Time // when to try to take the lock again
	listedAt time.Time // when list_query last ran
	said     string    // the last waiting line, said once
	reportAt time.Time // when the states were last read for the metrics, without the lock
	reported map[string]bool
	bad      map[string]string // by dbID: the error of a row that is not a state, logged once
}

// dbID is a domain's entry in Engine.dbkeys.
func dbID(name, domain string) string { return name + "\x00" + domain }

// dbStore keeps one domain's state in the rotation table.
type dbStore struct {
	r        *dbRotation
	timeout  time.Duration
	cacheTTL time.Duration
}

func (d *dbStore) save(st *State) error {
	st.Version = stateVersion
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if d.r.conn == nil {
		return errors.New("the database session holding the rotation lock ended: the state is not written (another host may rotate now)")
	}
	var sel, pem *string
	if st.Active.PEM != "" {
		// Switched to a key rotation made: it signs on every host.
		sel, pem = &st.Active.Selector, &st.Active.PEM
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	if _, err := d.r.conn.Exec(ctx, dbUpsert, st.Key, st.Domain, data, sel, pem); err != nil {
		return fmt.Errorf("writing the rotation state of keys.%s, domain %s, to %s: %w (the daemon's user needs SELECT, INSERT and UPDATE on it; the README has its CREATE TABLE and GRANT)",
			st.Key, st.Domain, keystore.RotationTable, err)
	}
	return nil
}

func (d *dbStore) newKey(st *State, selector string, pk *keystore.PrivateKey) (KeyState, *keystore.PrivateKey, error) {
	pem, err := keystore.EncodePEM(pk)
	if err != nil {
		return KeyState{}, nil, err
	}
	return KeyState{Selector: selector, Made: true, PEM: pem}, pk, nil
}

func (d *dbStore) removeKey(k KeyState) string {
	if !k.Made {
		return "kept (not made by rotation)"
	}
	return "removed with the state"
}

// switched: nothing to do here. The state saved is the switch: every
// host's lookups read the active key from the table (within cache_ttl).
func (d *dbStore) switched(string, *keystore.Key) {}

func (d *dbStore) spread() time.Duration { return d.cacheTTL }

func (d *dbStore) keyDir(string) string { return "" }

func (d *dbStore) startOver(st *State) string {
	return fmt.Sprintf("delete its row (DELETE FROM %s WHERE key = '%s' AND domain = '%s'); its keys go with it", keystore.RotationTable, st.Key, st.Domain)
}

// dbKeyNames are the keys of cfg that rotate from the database.
func dbKeyNames(cfg *config.Config) []string {
	var names []string
	for _, name := range cfg.KeyNames() {
		if k := cfg.Keys[name]; k.Query != "" && k.ListQuery != "" && k.Rotate > 0 {
			names = append(names, name)
		}
	}
	return names
}

// closeDB ends the database session, which frees the lock, and forgets
// the domains: whoever takes the lock next reads their states.
func (e *Engine) closeDB() {
	if e.db == nil {
		return
	}
	e.dropLock()
	e.db.db.Close()
	e.db = nil
}

// dropLock ends the session that holds the lock, and forgets everything
// read under it.
func (e *Engine) dropLock() {
	r := e.db
	if r.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r.conn.Close(ctx)
		cancel()
		r.conn = nil
	}
	e.dbkeys = map[string]*keyRun{}
	r.listedAt = time.Time{}
}

// stepDB makes the due steps of the keys with a query, once it holds the
// lock; until then, it tries to take it every check_interval and reports
// the states the rotating host writes.
func (e *Engine) stepDB(ctx context.Context) time.Time {
	now := e.opts.Now()
	far := now.Add(time.Hour)
	names := dbKeyNames(e.cfg)
	if len(names) == 0 {
		e.closeDB()
		return far
	}
	ci := e.cfg.Rotation.CheckInterval
	if ci <= 0 {
		ci = time.Minute
	}
	log := e.opts.Log
	if e.db != nil && e.db.settings != e.cfg.Database {
		e.closeDB()
	}
	if e.db == nil {
		db, err := keystore.OpenDB(e.cfg)
		if err != nil || db == nil {
			log.Error("rotation: cannot open the database: keys with a query do not rotate", "err", err)
			return now.Add(ci)
		}
		e.db = &dbRotation{db: db, settings: e.cfg.Database, reported: map[string]bool{}, bad: map[string]string{}}
	}
	r := e.db
	timeout := e.cfg.Database.QueryTimeout
	if r.conn != nil {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := r.conn.Ping(pctx)
		cancel()
		if err != nil {
			log.Error("rotation: the database session holding the rotation lock ended: this host stops rotating the keys from the database, and tries to take the lock again", "database", r.db.Target(), "err", err)
			e.dropLock()
			r.tryAt = now // at once: another host may not be there
		}
	}
	if r.conn == nil {
		if now.Before(r.tryAt) {
			return r.tryAt
		}
		r.tryAt = now.Add(ci)
		ok, err := e.tryLock(ctx)
		switch {
		case err != nil:
			e.onceDB(slog.LevelWarn, "rotation: cannot take the rotation lock in the database; trying again", "database", r.db.Target(), "err", err)
		case !ok:
			e.onceDB(slog.LevelInfo, "rotation: another host rotates the keys from the database; this one takes over if it stops", "database", r.db.Target())
		}
		if !ok {
			e.reportDB(ctx, names, now)
			return r.tryAt
		}
		r.said = ""
		log.Info("rotation: this host rotates the keys from the database", "database", r.db.Target(), "keys", strings.Join(names, ","))
	}
	if !now.Before(r.listedAt.Add(ci)) {
		e.listDB(ctx, names, now)
		r.listedAt = now
	}
	return minTime(e.stepKeys(ctx, e.dbkeys), r.listedAt.Add(ci))
}

// tryLock connects and takes the lock, without waiting.
func (e *Engine) tryLock(ctx context.Context) (bool, error) {
	r := e.db
	cc := r.db.ConnConfig()
	cc.RuntimeParams["application_name"] = "dkimmilter rotation"
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Database.QueryTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return false, err
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", LockKey).Scan(&ok); err != nil || !ok {
		conn.Close(context.Background())
		return false, err
	}
	r.conn = conn
	return true, nil
}

// onceDB logs a waiting line once until it changes.
func (e *Engine) onceDB(level slog.Level, msg string, attrs ...any) {
	line := msg + fmt.Sprint(attrs...)
	if e.db.said == line {
		return
	}
	e.db.said = line
	e.opts.Log.Log(context.Background(), level, msg, attrs...)
}

// parseDBState reads one row of the rotation table.
func parseDBState(name, domain string, data []byte) (*State, error) {
	var st State
	err := json.Unmarshal(data, &st)
	switch {
	case err == nil && st.Version != stateVersion:
		err = fmt.Errorf("state format %d, this version of dkimmilter reads %d", st.Version, stateVersion)
	case err == nil && (st.Key != name || st.Domain != domain || st.Active.Selector == ""):
		err = fmt.Errorf("incomplete state (key %q, domain %q, active selector %q)", st.Key, st.Domain, st.Active.Selector)
	}
	if err != nil {
		return nil, fmt.Errorf("%s, key %s, domain %s: not a rotation state: %v (to start the domain over from the key table's key, %s)",
			keystore.RotationTable, name, domain, err, (&dbStore{}).startOver(&State{Key: name, Domain: domain}))
	}
	return &st, nil
}

// ReadDBStates reads the rotation states of keys.NAME, a key with a
// query, from the rotation table, by domain: the commands show them. A
// row that is not a state is in bad, by domain.
func ReadDBStates(ctx context.Context, db *keystore.DB, name string) (states map[string]*State, bad map[string]error, err error) {
	states, bad = map[string]*State{}, map[string]error{}
	err = db.Query(ctx, dbStates, func(rows pgx.Rows) error {
		var domain string
		var data []byte
		if err := rows.Scan(&domain, &data); err != nil {
			return err
		}
		if st, err := parseDBState(name, domain, data); err != nil {
			bad[domain] = err
		} else {
			states[domain] = st
		}
		return nil
	}, name)
	return states, bad, err
}

// readStates reads keys.NAME's states on conn (nil: the pool), by domain,
// of every domain or of those listed. A row that is not a state is
// logged (once) and left out, nil in the map: that domain waits.
func (e *Engine) readStates(ctx context.Context, name string, conn *pgx.Conn, domains []string) (map[string]*State, error) {
	out := map[string]*State{}
	scan := func(rows pgx.Rows) error {
		var domain string
		var data []byte
		if err := rows.Scan(&domain, &data); err != nil {
			return err
		}
		st, err := parseDBState(name, domain, data)
		if id := dbID(name, domain); err != nil && e.db.bad[id] != err.Error() {
			e.db.bad[id] = err.Error()
			e.opts.Log.Error("rotation: the domain does not rotate", "key", name, "domain", domain, "err", err)
		}
		out[domain] = st
		return nil
	}
	query, args := dbStates, []any{name}
	if domains != nil {
		query, args = dbNewStates, []any{name, domains}
	}
	if conn == nil {
		return out, e.db.db.Query(ctx, query, scan, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Database.QueryTimeout)
	defer cancel()
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return nil, err
		}
	}
	return out, rows.Err()
}

// listDB runs each key's list_query: a domain new to it starts rotating
// (from its state in the table, or from the key table's key), a domain
// gone from it stops (its row stays).
func (e *Engine) listDB(ctx context.Context, names []string, now time.Time) {
	r := e.db
	log := e.opts.Log
	keep := map[string]bool{}
	for _, name := range names {
		kc := e.cfg.Keys[name]
		rows, err := r.db.List(ctx, name, nil)
		states := map[string]*State{}
		if err == nil {
			var fresh []string
			for _, row := range rows {
				if e.dbkeys[dbID(name, row.Domain)] == nil {
					fresh = append(fresh, row.Domain)
				}
			}
			if len(fresh) > 0 {
				states, err = e.readStates(ctx, name, r.conn, fresh)
			}
		}
		if err != nil {
			log.Warn("rotation: cannot list the domains of a key with a query; those known go on rotating", "key", name, "err", err)
			for id, kr := range e.dbkeys {
				keep[id] = keep[id] || kr.name == name
			}
			continue
		}
		for _, row := range rows {
			if row.Status.Err != nil || row.Status.Key == nil {
				continue // the key query refuses it too: nothing signs to rotate from
			}
			id := dbID(name, row.Domain)
			keep[id] = true
			if kr := e.dbkeys[id]; kr != nil {
				kr.kc, kr.conf, kr.pub = kc, row.Status.Key, nil
				continue
			}
			st, known := states[row.Domain]
			if known && st == nil {
				continue // not a state: logged
			}
			kr := &keyRun{name: name, kc: kc, st: st, conf: row.Status.Key,
				store: &dbStore{r: r, timeout: e.cfg.Database.QueryTimeout, cacheTTL: e.cfg.Database.CacheTTL}}
			if st == nil {
				made := now
				if row.File != "" && !row.Status.ModTime.IsZero() && row.Status.ModTime.Before(now) {
					made = row.Status.ModTime
				}
				kr.st = &State{Key: name, Domain: row.Domain, Active: KeyState{Selector: row.Selector, File: row.File,
					Record: keystore.Record(row.Status.Key), Created: made, Since: made}}
				kr.dirty = true
			}
			e.dbkeys[id] = kr
		}
	}
	for id, kr := range e.dbkeys {
		if !keep[id] {
			delete(e.dbkeys, id)
			if m := e.opts.Metrics; m != nil {
				m.RotationForget(kr.name, kr.st.Domain, nil)
			}
			log.Warn("rotation: a domain is no longer listed by the key's list_query: it stops rotating, its row stays", "key", kr.name, "domain", kr.st.Domain)
		}
	}
}

// reportDB sets the metrics from the states the rotating host writes,
// every check_interval, so that every host's /metrics shows them.
func (e *Engine) reportDB(ctx context.Context, names []string, now time.Time) {
	r := e.db
	if e.opts.Metrics == nil || now.Before(r.reportAt.Add(e.cfg.Rotation.CheckInterval)) {
		return
	}
	r.reportAt = now
	seen := map[string]bool{}
	for _, name := range names {
		states, err := e.readStates(ctx, name, nil, nil)
		if err != nil {
			e.onceDB(slog.LevelWarn, "rotation: cannot read the rotation states for the metrics", "err", err)
			return
		}
		for domain, st := range states {
			if st == nil {
				continue
			}
			seen[dbID(name, domain)] = true
			e.report(&keyRun{name: name, kc: e.cfg.Keys[name], st: st}, now)
		}
	}
	for id := range r.reported {
		if !seen[id] {
			name, domain, _ := strings.Cut(id, "\x00")
			e.opts.Metrics.RotationForget(name, domain, nil)
		}
	}
	r.reported = seen
}
