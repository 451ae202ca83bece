package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/jackc/pgx/v5"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/bindtest"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/pgtest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/keystore/rotation"
)

// dbHost is one daemon of a fleet that signs with keys from one
// PostgreSQL database.
type dbHost struct {
	name string
	dir  string
	p    *proc
}

func (h *dbHost) log() string { return h.p.stderr.String() }

// signVia sends one message from addr through the milter of the daemon
// listening in dir, and returns its selector and the message as
// delivered.
func signVia(dir, addr string) (string, []byte, error) {
	c, err := testkit.Dial("unix", filepath.Join(dir, "milter.sock"))
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	if err := c.Connect("localhost", "127.0.0.1"); err != nil {
		return "", nil, err
	}
	msg := []byte(strings.Replace(string(testMsg), "a@example.com", addr, -1))
	res, err := c.Send(testkit.Envelope{From: addr}, msg, 0)
	if err != nil {
		return "", nil, err
	}
	ins := testkit.Mods(res, gomilter.ActInsertHeader)
	if len(ins) != 1 || ins[0].HeaderName != "DKIM-Signature" {
		return "", nil, fmt.Errorf("not signed: %+v", res.Mods)
	}
	tags, err := dkim.ParseTagList(ins[0].HeaderValue)
	if err != nil {
		return "", nil, err
	}
	sel, _ := tags.Get("s")
	return sel, testkit.Apply(msg, res.Mods, c.Session.ProtocolOption(gomilter.OptHeaderLeadingSpace)), nil
}

// signThrough signs a message from domain through one host every 300 ms
// and verifies it at once against each authoritative server alone.
func signThrough(h *dbHost, domain string, servers []string) *fleetSigner {
	return &fleetSigner{host: h.name, domain: domain, signer: startSigner(domain+" via "+h.name,
		func() (string, []byte, error) { return signVia(h.dir, "a@"+domain) },
		func() []string { return servers })}
}

// fleetSigner is a signer for one domain through one host.
type fleetSigner struct {
	host, domain string
	*signer
}

// activeWatch reads the rotation table every 100 ms and keeps each
// domain's switches: when its active selector was first seen.
type activeWatch struct {
	mu     sync.Mutex
	seen   map[string][]signed // domain → (when, active selector)
	quit   chan struct{}
	closed chan struct{}
}

func watchActive(t *testing.T, dsn string) *activeWatch {
	w := &activeWatch{seen: map[string][]signed{}, quit: make(chan struct{}), closed: make(chan struct{})}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(w.closed)
		defer conn.Close(context.Background())
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			rows, err := conn.Query(context.Background(), "SELECT domain, coalesce(active_selector, '') FROM dkimmilter_rotation")
			if err == nil {
				for rows.Next() {
					var d, sel string
					if rows.Scan(&d, &sel) == nil && sel != "" {
						w.mu.Lock()
						if s := w.seen[d]; len(s) == 0 || s[len(s)-1].selector != sel {
							w.seen[d] = append(s, signed{time.Now(), sel})
						}
						w.mu.Unlock()
					}
				}
				rows.Close()
			}
			select {
			case <-w.quit:
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *activeWatch) stop() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.closed
}

func (w *activeWatch) of(domain string) []signed {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]signed(nil), w.seen[domain]...)
}

// dbState reads a domain's rotation state.
func dbState(t *testing.T, dsn, domain string) *rotation.State {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var data []byte
	if err := conn.QueryRow(ctx, "SELECT state FROM dkimmilter_rotation WHERE key = 'db' AND domain = $1", domain).Scan(&data); err == pgx.ErrNoRows {
		return nil
	} else if err != nil {
		t.Fatal(err)
	}
	var st rotation.State
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func waitUntil(t *testing.T, limit time.Duration, what string, logs func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s\n%s", limit, what, logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rotationLines is a log without the one line per message.
func rotationLines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "msg=message ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Keys from the database rotate on a fleet, end to end: two daemons on
// one PostgreSQL, publishing through a real BIND primary whose secondary
// the switch waits for, each domain found in its own zone. One host
// rotates, the other waits for the lock; both sign with each new key
// within cache_ttl of the switch, and every message verifies at each
// authoritative server alone. The rotating host dies (SIGKILL) while a
// key is pending: the other takes over and switches to that same key,
// with no second one. A domain added to the key table rotates too.
func TestDatabaseRotationEndToEnd(t *testing.T) {
	bindtest.Missing(t)
	c := pgtest.Shared(t)
	dsn := c.CreateDB(t, "CREATE TABLE dkim_keys (domain text PRIMARY KEY, selector text, private_key text)", keystore.RotationSchema)
	b := bindtest.New(t, "example.com", "example.net", "example.org")
	servers := []string{b.Primary(), b.Secondary()}
	addDomain := func(domain string) {
		key := testkit.RSAKey(2048)
		c.Exec(t, dsn, "INSERT INTO dkim_keys VALUES ($1, 's1', $2)", domain, string(testkit.KeyPEM(key, false)))
		b.SetTXT(t, "s1._domainkey."+domain, testkit.KeyRecord(key, ""))
	}
	addDomain("example.com")
	addDomain("example.net")
	b.Sync(t)
	const cacheTTL = time.Second
	var hosts []*dbHost
	for _, name := range []string{"mx1", "mx2"} {
		dir, err := os.MkdirTemp("", "dkdb")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		tsig := filepath.Join(dir, "tsig.key")
		copyKeyFile(t, b.KeyFile(), tsig)
		cfg := fmt.Sprintf(`listen = "unix:%[1]s/milter.sock"
authserv_id = "%[2]s.example.com"
[dns]
nameservers = [%[3]q]
timeout = "2s"
[sign]
expire = "3s"
[database]
dsn = %[4]s
query_timeout = "2s"
cache_ttl = "1s"
negative_cache_ttl = "1s"
[keys.db]
domain = "%%"
query = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1"
list_query = "SELECT domain, selector, private_key FROM dkim_keys"
rotate = "8s"
publish = "bind"
selectors = ["s1", "s2", "s3"]
[[signing]]
from = "*"
keys = ["db"]
[publish.bind]
method = "rfc2136"
server = %[3]q
tsig_key = %[5]q
ttl = "1s"
timeout = "2s"
[rotation]
state_dir = "%[1]s/state"
margin = "2s"
revoked_for = "4s"
check_interval = "1s"
retry = "1s"
retry_max = "4s"
`, dir, name, b.Primary(), config.TOMLString(dsn), tsig)
		path := filepath.Join(dir, "dkimmilter.toml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		h := &dbHost{name: name, dir: dir}
		h.p = startProcEnv(t, []string{"DKIMMILTER_TEST_AUTH_PORT=" + strconv.Itoa(b.Port())}, "serve", "-config", path)
		hosts = append(hosts, h)
		if name == "mx1" {
			waitUntil(t, 10*time.Second, "mx1 does not rotate", h.log, func() bool {
				return strings.Contains(h.log(), "rotation: this host rotates the keys from the database")
			})
		}
	}
	mx1, mx2 := hosts[0], hosts[1]
	logs := func() string {
		return "mx1:\n" + rotationLines(mx1.log()) + "\nmx2:\n" + rotationLines(mx2.log())
	}
	waitUntil(t, 10*time.Second, "mx2 does not wait for the lock", logs, func() bool {
		return strings.Contains(mx2.log(), "another host rotates the keys from the database")
	})
	watch := watchActive(t, dsn)
	var signers []*fleetSigner
	for _, h := range hosts {
		for _, d := range []string{"example.com", "example.net"} {
			signers = append(signers, signThrough(h, d, servers))
		}
	}
	// The first rotation of both domains: s1 → s2.
	waitUntil(t, 30*time.Second, "example.com and example.net did not switch to s2", logs, func() bool {
		a, n := watch.of("example.com"), watch.of("example.net")
		return len(a) > 0 && a[len(a)-1].selector == "s2" && len(n) > 0 && n[len(n)-1].selector == "s2"
	})
	if strings.Contains(mx2.log(), "switched") {
		t.Errorf("mx2 rotated too:\n%s", logs())
	}
	// The second: s3 is published, and the secondary holds it back.
	b.Hold()
	var pending *rotation.KeyState
	waitUntil(t, 30*time.Second, "no pending s3 for example.com", logs, func() bool {
		st := dbState(t, dsn, "example.com")
		if st != nil && st.Pending != nil && !st.Pending.PublishedAt.IsZero() {
			pending = st.Pending
		}
		return pending != nil
	})
	// mx1 dies: its messages stop, its session ends with it.
	for _, s := range signers[:2] {
		s.end(t)
	}
	mx1.p.cmd.Process.Signal(syscall.SIGKILL)
	<-mx1.p.done
	waitUntil(t, 15*time.Second, "mx2 does not take over", logs, func() bool {
		return strings.Contains(mx2.log(), "rotation: this host rotates the keys from the database")
	})
	time.Sleep(2 * time.Second) // mx2 must not switch while the secondary lags
	if st := dbState(t, dsn, "example.com"); st.Active.Selector != "s2" || st.Pending == nil || st.Pending.PEM != pending.PEM {
		t.Fatalf("after the takeover, with the secondary held: active %s, pending %+v; want s2 and the same pending key\n%s", st.Active.Selector, st.Pending, logs())
	}
	b.Release(t)
	waitUntil(t, 20*time.Second, "example.com did not switch to s3", logs, func() bool {
		a := watch.of("example.com")
		return a[len(a)-1].selector == "s3"
	})
	if st := dbState(t, dsn, "example.com"); st.Active.PEM != pending.PEM {
		t.Errorf("example.com switched to another s3 than the one pending when mx1 died")
	}
	if n := strings.Count(mx1.log()+mx2.log(), `domain=example.com selector=s3 active=s2 next=`); n == 0 {
		t.Errorf("no log line for s3's key")
	}
	if n := len(lines(mx1.log()+mx2.log(), `msg="rotation: due; new key made" key=db domain=example.com selector=s3`)); n != 1 {
		t.Errorf("s3 of example.com made %d times, want once\n%s", n, logs())
	}
	// A domain added to the key table rotates too.
	addDomain("example.org")
	b.Sync(t)
	signers = append(signers, signThrough(mx2, "example.org", servers))
	waitUntil(t, 30*time.Second, "example.org did not rotate", logs, func() bool {
		o := watch.of("example.org")
		return len(o) > 0 && o[len(o)-1].selector == "s2"
	})
	time.Sleep(cacheTTL + time.Second)
	for _, s := range signers[2:] {
		msgs := s.end(t)
		// Every message signed longer than cache_ttl after a switch (and
		// before the next) has the switch's selector.
		sw := watch.of(s.domain)
		for _, m := range msgs {
			want := ""
			for _, x := range sw {
				if x.at.Add(cacheTTL + 700*time.Millisecond).Before(m.at) {
					want = x.selector
				}
			}
			if want != "" && m.selector != want && !switchedNear(sw, m.selector, m.at, cacheTTL+700*time.Millisecond) {
				t.Errorf("%s via %s at %s: signed with %s, want %s (switches %v)", s.domain, s.host, m.at.Format("15:04:05.000"), m.selector, want, sw)
			}
		}
	}
	if t.Failed() {
		t.Log(logs())
	}
}

// switchedNear: the table switched to sel within d of at (the message
// was signed just after a switch the watch had not seen yet, or a host
// had not yet dropped the previous key from its cache).
func switchedNear(sw []signed, sel string, at time.Time, d time.Duration) bool {
	for i, x := range sw {
		near := at.Sub(x.at) <= d && x.at.Sub(at) <= d
		if near && (x.selector == sel || i > 0 && sw[i-1].selector == sel) {
			return true
		}
	}
	return false
}

// lines are the lines of log that contain sub.
func lines(log, sub string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}
