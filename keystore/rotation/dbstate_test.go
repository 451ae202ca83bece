package rotation

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnsupdate"
	"github.com/dkimmilter/dkimmilter/internal/pgtest"
	"github.com/dkimmilter/dkimmilter/keystore"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const keySchema = "CREATE TABLE dkim_keys (domain text PRIMARY KEY, selector text, private_key text)"

// host is one dkimmilter of a fleet: its engine and the Store its
// messages are signed from.
type host struct {
	name  string
	e     *Engine
	store *keystore.Store
	log   *syncBuffer
	m     *domainMetrics
	dead  bool // stopped: no more steps, no more mail
}

// domainMetrics records the state of each domain's selectors.
type domainMetrics struct {
	mu     sync.Mutex
	states map[string]string // "DOMAIN SELECTOR" → state
}

func (m *domainMetrics) RotationKey(key, domain, selector, state string, age, next time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[domain+" "+selector] = state
}

func (m *domainMetrics) RotationForget(key, domain string, keep []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.states {
		d, sel, _ := strings.Cut(k, " ")
		if d == domain && !slices.Contains(keep, sel) {
			delete(m.states, k)
		}
	}
}

func (m *domainMetrics) RotationPaused(key, domain string, paused bool) {}
func (m *domainMetrics) RotationPublishError(key, domain string)        {}

// dbRig is two hosts rotating the keys of one database, publishing to
// one fake zone, on the wall clock with days compressed into seconds.
type dbRig struct {
	t     *testing.T
	c     *pgtest.Cluster
	dsn   string
	cfg   *config.Config
	zone  *zone
	hosts []*host
	// switched is when the table's active key of a domain last changed,
	// and to which selector.
	switched map[string]time.Time
	active   map[string]string
	signed   map[string]map[string]bool // domain → selectors some host signed with
}

func newDBRig(t *testing.T, domains ...string) *dbRig {
	t.Helper()
	c := pgtest.Shared(t)
	r := &dbRig{t: t, c: c, dsn: c.CreateDB(t, keySchema, keystore.RotationSchema), zone: newZone(1),
		switched: map[string]time.Time{}, active: map[string]string{}, signed: map[string]map[string]bool{}}
	for _, d := range domains {
		r.addDomain(d)
	}
	cfg := config.Default()
	cfg.Database = config.Database{DSN: r.dsn, MaxConns: 4, QueryTimeout: 2 * time.Second, CacheSize: 100,
		CacheTTL: time.Second, NegativeCacheTTL: time.Second}
	cfg.Keys = map[string]*config.Key{"db": {Name: "db", Domain: "%",
		Query:     "SELECT selector, private_key FROM dkim_keys WHERE domain = $1",
		ListQuery: "SELECT domain, selector, private_key FROM dkim_keys ORDER BY domain",
		Rotate:    4 * time.Second, Publish: "bind", Selectors: []string{"s1", "s2"}}}
	cfg.Signing = []*config.SigningRule{{From: "*", Keys: []string{"db"}}}
	cfg.Publishers = map[string]*config.Publisher{"bind": {Name: "bind", Method: "rfc2136", Server: "127.0.0.1:53", Timeout: time.Second}}
	cfg.Sign.Expire = time.Second
	cfg.Rotation = config.Rotation{StateDir: t.TempDir(), Margin: time.Second, RevokedFor: 2 * time.Second,
		CheckInterval: 200 * time.Millisecond, Retry: 200 * time.Millisecond, RetryMax: time.Second}
	r.cfg = cfg
	for _, name := range []string{"mx1", "mx2"} {
		store, _, err := keystore.Load(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(store.Close)
		h := &host{name: name, store: store, log: &syncBuffer{}, m: &domainMetrics{states: map[string]string{}}}
		h.e = New(cfg, Options{
			Publisher: func(cfg *config.Config, name string) (dnsupdate.Publisher, error) { return r.zone, nil },
			Checker:   r.zone,
			Metrics:   h.m,
			Log:       slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		t.Cleanup(func() {
			h.e.mu.Lock()
			h.e.closeDB()
			h.e.mu.Unlock()
		})
		r.hosts = append(r.hosts, h)
	}
	return r
}

// addDomain puts a domain's key in the admin's table, its record in the
// zone.
func (r *dbRig) addDomain(domain string) {
	r.t.Helper()
	pk, err := keystore.Generate("ed25519", 0)
	if err != nil {
		r.t.Fatal(err)
	}
	pem, _ := keystore.EncodePEM(pk)
	r.c.Exec(r.t, r.dsn, "INSERT INTO dkim_keys VALUES ($1, 's1', $2)", domain, pem)
	r.zone.set(RecordName("s1", domain, ""), keystore.Record(pk))
}

// states reads the rotation table: each domain's state.
func (r *dbRig) states() map[string]*State {
	r.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, r.dsn)
	if err != nil {
		r.t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT domain, state FROM dkimmilter_rotation WHERE key = 'db'")
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[string]*State{}
	for rows.Next() {
		var d string
		var data []byte
		if err := rows.Scan(&d, &data); err != nil {
			r.t.Fatal(err)
		}
		var st State
		if err := json.Unmarshal(data, &st); err != nil {
			r.t.Fatal(err)
		}
		out[d] = &st
	}
	return out
}

// holders are the living hosts that hold the rotation lock.
func (r *dbRig) holders() []string {
	var out []string
	for _, h := range r.hosts {
		h.e.mu.Lock()
		if !h.dead && h.e.db != nil && h.e.db.conn != nil {
			out = append(out, h.name)
		}
		h.e.mu.Unlock()
	}
	return out
}

// run steps every living host every 50ms for d, and after each round
// signs a message for every domain on every host: the key it signs with
// must be served by every server of the zone, and be the table's active
// key within cache_ttl of the switch. At most one host rotates.
func (r *dbRig) run(d time.Duration, domains ...string) {
	r.t.Helper()
	ctx := context.Background()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, h := range r.hosts {
			if !h.dead {
				h.e.Step(ctx)
			}
		}
		if hs := r.holders(); len(hs) > 1 {
			r.t.Fatalf("hosts %v rotate at the same time", hs)
		}
		now := time.Now()
		for dom, st := range r.states() {
			if st.Active.Selector != r.active[dom] {
				r.active[dom], r.switched[dom] = st.Active.Selector, now
			}
		}
		for _, h := range r.hosts {
			if h.dead {
				continue
			}
			for _, dom := range domains {
				sel, err := h.store.Lookup("someone@" + dom)
				if err != nil || sel == nil {
					r.t.Fatalf("%s, %s: %v %v", h.name, dom, sel, err)
				}
				k := sel.Keys[0]
				if r.signed[dom] == nil {
					r.signed[dom] = map[string]bool{}
				}
				r.signed[dom][k.Selector] = true
				answers, _ := r.zone.Lookup(ctx, k.Selector, dom)
				for _, a := range answers {
					if len(a.Records) != 1 || !matches(a.Records[0], k.PrivateKey) {
						r.t.Fatalf("%s signs %s with %s, but %s serves %v\n%s", h.name, dom, k.Selector, a.Server, a.Records, h.log)
					}
				}
				if k.Selector != r.active[dom] && r.active[dom] != "" && now.Sub(r.switched[dom]) > r.cfg.Database.CacheTTL+300*time.Millisecond {
					r.t.Fatalf("%s signs %s with %s %v after the switch to %s (cache_ttl %v)", h.name, dom, k.Selector,
						now.Sub(r.switched[dom]).Round(time.Millisecond), r.active[dom], r.cfg.Database.CacheTTL)
				}
			}
		}
	}
}

func (r *dbRig) host(name string) *host {
	for _, h := range r.hosts {
		if h.name == name {
			return h
		}
	}
	return nil
}

func (r *dbRig) adds(domain, selector string) int {
	r.zone.mu.Lock()
	defer r.zone.mu.Unlock()
	n := 0
	for _, c := range r.zone.applied {
		if c.Action == dnsupdate.Add && c.Name == RecordName(selector, domain, "") {
			n++
		}
	}
	return n
}

// Two hosts, one database: one rotates while the other waits for the
// lock; both sign with each new key within cache_ttl of the switch, and
// never with one the zone's servers do not all serve. The rotating host
// dies while a key is pending: the other takes over from the table and
// switches to that key, making no second one. A domain added to the key
// table rotates too.
func TestDatabaseRotationTwoHosts(t *testing.T) {
	r := newDBRig(t, "a.example", "b.example")
	domains := []string{"a.example", "b.example"}
	r.run(time.Second, domains...)
	holders := r.holders()
	if len(holders) != 1 {
		t.Fatalf("rotating hosts %v, want one", holders)
	}
	first := r.host(holders[0])
	other := r.hosts[0]
	if other == first {
		other = r.hosts[1]
	}
	if !strings.Contains(other.log.String(), "another host rotates") {
		t.Errorf("the waiting host does not say so:\n%s", other.log)
	}
	// The first rotation: s2 published; the secondary holds it back.
	r.zone.mu.Lock()
	r.zone.lag = true
	r.zone.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := r.states()["a.example"]
		if st != nil && st.Pending != nil && !st.Pending.PublishedAt.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pending key published for a.example: %+v\n%s", st, first.log)
		}
		r.run(100*time.Millisecond, domains...)
	}
	pending := r.states()["a.example"].Pending
	// The host that waits for the lock shows the rotation on its
	// metrics too, read from the table every check_interval.
	r.run(500*time.Millisecond, domains...)
	other.m.mu.Lock()
	shown := other.m.states["a.example s2"]
	other.m.mu.Unlock()
	if shown != StatePending {
		t.Errorf("the waiting host's metrics say s2 is %q, want %q", shown, StatePending)
	}
	if pending.PEM == "" || pending.File != "" {
		t.Fatalf("the pending key is not kept in the table: %+v", pending)
	}
	// The rotating host dies: its session ends, and it steps no more.
	first.dead = true
	r.c.Exec(t, r.dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'dkimmilter rotation'")
	r.run(time.Second, domains...)
	if hs := r.holders(); len(hs) != 1 || hs[0] != other.name {
		t.Fatalf("after %s died, rotating hosts %v, want %s\n%s", first.name, hs, other.name, other.log)
	}
	// The secondary catches up: the same pending key becomes active.
	r.zone.mu.Lock()
	r.zone.lag = false
	r.zone.syncLocked()
	r.zone.mu.Unlock()
	r.addDomain("c.example")
	r.run(3*time.Second, domains...)
	st := r.states()["a.example"]
	if st.Active.Selector != "s2" || st.Active.PEM != pending.PEM {
		t.Fatalf("a.example after the takeover: active %s, want the pending s2 of before (same key)\n%s", st.Active.Selector, other.log)
	}
	if n := r.adds("a.example", "s2"); n != 1 {
		t.Errorf("s2._domainkey.a.example added %d times, want once", n)
	}
	// Long enough for the old records to be revoked, deleted, and a
	// second rotation back to s1 for every domain, c.example included.
	r.run(8*time.Second, append(domains, "c.example")...)
	states := r.states()
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		st := states[d]
		if st == nil || !r.signed[d]["s2"] {
			t.Errorf("%s did not rotate: %+v\n%s", d, st, other.log)
		}
	}
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		if !r.signed[d]["s1"] || !r.signed[d]["s2"] || len(r.signed[d]) != 2 {
			t.Errorf("%s signed with %v, want s1 and s2", d, r.signed[d])
		}
		if n := strings.Count(other.log.String(), `msg="rotation: switched: the new key signs" key=db domain=`+d+" "); n < 2 || !states[d].Active.Made {
			t.Errorf("%s: %d switches by %s, active %s, want two rotations or more, to keys rotation made\n%s", d, n, other.name, states[d].Active.Selector, other.log)
		}
	}
}

// A host whose session the server ended (a restart, an admin's
// pg_terminate_backend) notices it before its next step, forgets what it
// read under the lock, and takes the lock again: the rotation goes on
// from the table, with no second key.
func TestDatabaseRotationSessionEnded(t *testing.T) {
	r := newDBRig(t, "a.example")
	r.hosts[1].dead = true // one host
	h := r.hosts[0]
	r.zone.mu.Lock()
	r.zone.lag = true
	r.zone.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.run(100*time.Millisecond, "a.example")
		if st := r.states()["a.example"]; st != nil && st.Pending != nil && !st.Pending.PublishedAt.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pending key:\n%s", h.log)
		}
	}
	pending := r.states()["a.example"].Pending
	r.c.Exec(t, r.dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'dkimmilter rotation'")
	r.run(time.Second, "a.example")
	if !strings.Contains(h.log.String(), "the database session holding the rotation lock ended") {
		t.Fatalf("the host did not notice that its session ended:\n%s", h.log)
	}
	if hs := r.holders(); len(hs) != 1 {
		t.Fatalf("after its session ended, rotating hosts %v, want the host again\n%s", hs, h.log)
	}
	r.zone.mu.Lock()
	r.zone.lag = false
	r.zone.syncLocked()
	r.zone.mu.Unlock()
	r.run(time.Second, "a.example")
	if st := r.states()["a.example"]; st.Active.Selector != "s2" || st.Active.PEM != pending.PEM {
		t.Errorf("after the session ended: active %s, want the pending s2 of before\n%s", st.Active.Selector, h.log)
	}
	if n := r.adds("a.example", "s2"); n != 1 {
		t.Errorf("s2 added %d times, want once", n)
	}
}

// A row of the rotation table that is not a state leaves its domain
// alone, said once; the other domains rotate.
func TestDatabaseRotationDamagedRow(t *testing.T) {
	r := newDBRig(t, "a.example", "b.example")
	r.hosts[1].dead = true
	r.c.Exec(t, r.dsn, "INSERT INTO dkimmilter_rotation (key, domain, state) VALUES ('db', 'b.example', '{\"version\": 1}')")
	r.run(6*time.Second, "a.example", "b.example")
	st := r.states()
	if st["a.example"].Active.Selector != "s2" {
		t.Errorf("a.example did not rotate: %+v", st["a.example"])
	}
	if st["b.example"].Key != "" {
		t.Errorf("the damaged row of b.example was written over: %+v", st["b.example"])
	}
	log := r.hosts[0].log.String()
	if n := strings.Count(log, `msg="rotation: the domain does not rotate" key=db domain=b.example`); n != 1 {
		t.Errorf("the damaged row is logged %d times, want once:\n%s", n, log)
	}
	if !strings.Contains(log, "DELETE FROM dkimmilter_rotation WHERE key = 'db' AND domain = 'b.example'") {
		t.Errorf("the log does not say how to start b.example over:\n%s", log)
	}
}
