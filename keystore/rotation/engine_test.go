package rotation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dnsupdate"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// zone is a fake DNS zone: a primary that applies changes as an RFC 2136
// server does (Expect as a prerequisite), and secondaries that follow it
// at once or when the test says so. It is the Publisher and the Checker.
type zone struct {
	mu      sync.Mutex
	servers []map[string][]string // [0] is the primary
	lag     bool                  // secondaries do not follow until sync
	cname   map[string]string     // customer name -> provider name
	down    bool                  // lookups fail
	failN   int                   // the next failN Apply calls fail
	applied []dnsupdate.Change
	// afterApply runs after a change is made (a crash before the
	// state is written).
	afterApply func(dnsupdate.Change)
}

func newZone(secondaries int) *zone {
	z := &zone{cname: map[string]string{}}
	for range 1 + secondaries {
		z.servers = append(z.servers, map[string][]string{})
	}
	return z
}

func (z *zone) Apply(ctx context.Context, c dnsupdate.Change) (string, error) {
	z.mu.Lock()
	if z.failN > 0 {
		z.failN--
		z.mu.Unlock()
		return "", errors.New("dns update to 127.0.0.1:53 for zone example.test: connection refused")
	}
	p := z.servers[0]
	cur := p[c.Name]
	switch {
	case c.Action == dnsupdate.Add && c.Expect == "" && len(cur) > 0,
		c.Action != dnsupdate.Add && c.Expect != "" && (len(cur) != 1 || cur[0] != c.Expect):
		z.mu.Unlock()
		return "", fmt.Errorf("%s: %w", c.Name, dnsupdate.ErrChanged)
	}
	if c.Action == dnsupdate.Delete {
		delete(p, c.Name)
	} else {
		p[c.Name] = []string{c.Value}
	}
	z.applied = append(z.applied, c)
	if !z.lag {
		z.syncLocked()
	}
	hook := z.afterApply
	z.mu.Unlock()
	if hook != nil {
		hook(c)
	}
	return "ok", nil
}

func (z *zone) Describe(c dnsupdate.Change) string { return c.Action.String() + " " + c.Name }

func (z *zone) Lookup(ctx context.Context, selector, domain string) ([]Answer, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.down {
		return nil, errors.New("connection refused")
	}
	name := dkim.DNSName(selector, domain)
	if t, ok := z.cname[name]; ok {
		name = t
	}
	var out []Answer
	for i, s := range z.servers {
		a := Answer{Server: fmt.Sprintf("ns%d.example.test (127.0.0.%d:53)", i+1, i+1)}
		if recs := s[name]; len(recs) > 0 {
			a.Records = append([]string(nil), recs...)
		} else {
			a.Err = &net.DNSError{Err: "NXDOMAIN", Name: name, IsNotFound: true}
		}
		out = append(out, a)
	}
	return out, nil
}

func (z *zone) syncLocked() {
	for _, s := range z.servers[1:] {
		clear(s)
		for k, v := range z.servers[0] {
			s[k] = append([]string(nil), v...)
		}
	}
}

func (z *zone) sync() {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.syncLocked()
}

// set changes a record by hand on every server ("" deletes it).
func (z *zone) set(name, rec string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, s := range z.servers {
		if rec == "" {
			delete(s, name)
		} else {
			s[name] = []string{rec}
		}
	}
}

func (z *zone) get(server int, name string) []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.servers[server][name]
}

// fakeMetrics records what the engine reports.
type fakeMetrics struct {
	mu        sync.Mutex
	states    map[string]string // selector -> state
	paused    bool
	pubErrors int
}

func (m *fakeMetrics) RotationKey(key, domain, selector, state string, age, next time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.states == nil {
		m.states = map[string]string{}
	}
	m.states[selector] = state
}

func (m *fakeMetrics) RotationForget(key, domain string, keep []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range m.states {
		found := false
		for _, k := range keep {
			found = found || k == s
		}
		if !found {
			delete(m.states, s)
		}
	}
}

func (m *fakeMetrics) RotationPaused(key, domain string, paused bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.paused = paused
}

func (m *fakeMetrics) RotationPublishError(key, domain string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pubErrors++
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// rig is one rotating key with its zone, clock and engine.
type rig struct {
	t       *testing.T
	cfg     *config.Config
	zone    *zone
	now     time.Time
	rotated *keystore.Rotated
	metrics *fakeMetrics
	log     *syncBuffer
	e       *Engine
	conf    *keystore.PrivateKey // the configured key
	real    bool                 // the engine runs on the wall clock
	made    int                  // publishers made
}

// newRig configures keys.main for example.test, its configured key's
// record published on every server, rotating every 10s with short
// margins: days compressed into seconds.
func newRig(t *testing.T, kind string, secondaries int, edit func(*config.Config)) *rig {
	t.Helper()
	dir := t.TempDir()
	pk, err := keystore.Generate(kind, 0)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "etc", "s0.pem")
	if err := keystore.WriteKeyFile(file, pk); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Keys = map[string]*config.Key{"main": {Name: "main", Domain: "example.test", Selector: "s0", File: file,
		Rotate: 10 * time.Second, Publish: "bind"}}
	cfg.Publishers = map[string]*config.Publisher{"bind": {Name: "bind", Method: "rfc2136", Server: "127.0.0.1:53", TTL: time.Second, Timeout: time.Second}}
	cfg.Sign.Expire = 3 * time.Second
	cfg.Rotation = config.Rotation{StateDir: filepath.Join(dir, "state"), Margin: 2 * time.Second, RevokedFor: 4 * time.Second,
		CheckInterval: time.Second, Retry: time.Second, RetryMax: 4 * time.Second}
	if edit != nil {
		edit(cfg)
	}
	r := &rig{t: t, cfg: cfg, zone: newZone(secondaries), now: time.Now().Add(time.Second), rotated: &keystore.Rotated{},
		metrics: &fakeMetrics{}, log: &syncBuffer{}, conf: pk}
	k := cfg.Keys["main"]
	r.zone.set(RecordName("s0", k.Domain, k.Delegate), keystore.Record(pk))
	if k.Delegate != "" {
		r.zone.cname[dkim.DNSName("s0", k.Domain)] = RecordName("s0", k.Domain, k.Delegate)
	}
	r.start()
	return r
}

// start makes a new engine, as the daemon does at start.
func (r *rig) start() {
	r.e = New(r.cfg, Options{
		Rotated: r.rotated,
		Publisher: func(cfg *config.Config, name string) (dnsupdate.Publisher, error) {
			if cfg.Publishers[name] == nil {
				return nil, errors.New("no such publisher")
			}
			r.made++
			return r.zone, nil
		},
		Checker: r.zone,
		Metrics: r.metrics,
		Log:     slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now: func() time.Time {
			if r.real {
				return time.Now()
			}
			return r.now
		},
	})
}

// signing is the key that signs for keys.main now.
func (r *rig) signing() (selector string, pk *keystore.PrivateKey) {
	if k := r.rotated.Get("main"); k != nil {
		return k.Selector, k.PrivateKey
	}
	return "s0", r.conf
}

// checkVisible fails unless every server serves the record of the key
// that signs: no message is ever signed with a key verifiers cannot see.
func (r *rig) checkVisible() {
	r.t.Helper()
	sel, pk := r.signing()
	k := r.cfg.Keys["main"]
	answers, _ := r.zone.Lookup(context.Background(), sel, k.Domain)
	for _, a := range answers {
		if len(a.Records) != 1 || !matches(a.Records[0], pk) {
			r.t.Fatalf("at %s, keys.main signs with %s, but %s serves %v", r.now.Format(time.TimeOnly), sel, a.Server, a.Records)
		}
	}
}

// run steps every 250ms for d, checking visibility at each step.
func (r *rig) run(d time.Duration) {
	r.t.Helper()
	for end := r.now.Add(d); r.now.Before(end); r.now = r.now.Add(250 * time.Millisecond) {
		r.e.Step(context.Background())
		r.checkVisible()
	}
}

func (r *rig) state() *State { return r.e.State("main") }

// Two whole cycles: publish, switch when visible, revoke after expire +
// margin, delete after revoked_for with the key file rotation made; the
// configured file is never deleted, and a key is never signing before
// every server serves its record.
func TestFullCycleTwice(t *testing.T) {
	for _, kind := range []string{"ed25519", "rsa"} {
		t.Run(kind, func(t *testing.T) {
			r := newRig(t, kind, 1, nil)
			var seen []string
			var files []string
			for i := 0; i < 200 && len(seen) < 3; i++ {
				r.run(250 * time.Millisecond)
				if sel, _ := r.signing(); len(seen) == 0 || seen[len(seen)-1] != sel {
					seen = append(seen, sel)
					files = append(files, r.state().Active.File)
				}
			}
			if len(seen) != 3 {
				t.Fatalf("signing keys %v after 50s, want 3 (two rotations)\n%s", seen, r.log)
			}
			// Long enough for every old key to be revoked and deleted.
			r.run(10 * time.Second)
			st := r.state()
			if st.Pending == nil && len(st.Retiring)+len(st.Revoked) > 0 {
				// Only the last old key may still be on its way out.
				if len(st.Retiring)+len(st.Revoked) > 1 {
					t.Errorf("old keys left: %+v %+v", st.Retiring, st.Revoked)
				}
			}
			k := r.cfg.Keys["main"]
			s0 := RecordName("s0", k.Domain, "")
			if got := r.zone.get(0, s0); got != nil {
				t.Errorf("the configured key's record is still there: %v", got)
			}
			if _, err := os.Stat(k.File); err != nil {
				t.Errorf("the configured key file was removed: %v", err)
			}
			// A date-based selector is free again once its record
			// is deleted (in compressed time, the same month): a
			// file of that name must then hold another key.
			if pk, err := keystore.ReadPrivateKey(files[1]); err == nil && seen[1] != st.Active.Selector && (st.Pending == nil || st.Pending.Selector != seen[1]) {
				t.Errorf("the first rotated key's file %s is still there after its record was deleted", files[1])
			} else if err == nil && st.Active.Selector == seen[1] && keystore.Record(pk) != r.state().Active.Record {
				t.Errorf("the file %s does not hold the key of its record", files[1])
			}
			pk, err := keystore.ReadPrivateKey(files[2])
			if err != nil {
				t.Fatal(err)
			}
			if pk.KeyType != kind || kind == "rsa" && pk.Bits != 2048 {
				t.Errorf("new key %s %d bits, want %s", pk.KeyType, pk.Bits, kind)
			}
			if fi, _ := os.Stat(files[2]); fi.Mode().Perm() != 0o600 {
				t.Errorf("new key file mode %v", fi.Mode())
			}
			// The order of the changes: add, then revoke of the old,
			// then delete.
			var ops []string
			for _, c := range r.zone.applied {
				ops = append(ops, c.Action.String()+" "+strings.SplitN(c.Name, ".", 2)[0])
			}
			want := []string{"add " + seen[1], "revoke s0", "delete s0", "add " + seen[2], "revoke " + seen[1], "delete " + seen[1]}
			if strings.Join(ops, ",")[:len(strings.Join(want, ","))] != strings.Join(want, ",") {
				t.Errorf("changes %v, want them to start with %v", ops, want)
			}
			for _, line := range []string{"new key made", "record published", "switched", "old key revoked", "revoked record deleted"} {
				if !strings.Contains(r.log.String(), line) {
					t.Errorf("no log line %q:\n%s", line, r.log)
				}
			}
			if !strings.Contains(r.log.String(), "next=") {
				t.Errorf("log lines lack next=")
			}
		})
	}
}

// The revocation waits for sign.expire + margin after the switch, and
// the deletion for revoked_for after the revocation.
func TestTiming(t *testing.T) {
	r := newRig(t, "ed25519", 0, nil)
	r.run(10*time.Second + 500*time.Millisecond)
	st := r.state()
	if len(st.Retiring) != 1 {
		t.Fatalf("after the rotation period: %+v", st)
	}
	sw := st.Retiring[0].SwitchedAt
	if got := st.Retiring[0].RevokeAt.Sub(sw); got != 5*time.Second {
		t.Errorf("revoke %v after the switch, want expire 3s + margin 2s", got)
	}
	r.run(sw.Add(5*time.Second).Sub(r.now) - 250*time.Millisecond)
	if st := r.state(); len(st.Retiring) != 1 || len(st.Revoked) != 0 {
		t.Fatalf("revoked before its time: %+v", st)
	}
	r.run(500 * time.Millisecond)
	st = r.state()
	if len(st.Revoked) != 1 {
		t.Fatalf("not revoked at its time: %+v", st)
	}
	if got := r.zone.get(0, "s0._domainkey.example.test"); len(got) != 1 || got[0] != "v=DKIM1; k=ed25519; p=" {
		t.Errorf("revoked record %v", got)
	}
	if got := st.Revoked[0].DeleteAt.Sub(st.Revoked[0].RevokedAt); got != 4*time.Second {
		t.Errorf("delete %v after the revocation, want revoked_for 4s", got)
	}
	r.metrics.mu.Lock()
	if r.metrics.states["s0"] != StateRevoked {
		t.Errorf("metrics: s0 is %q", r.metrics.states["s0"])
	}
	r.metrics.mu.Unlock()
}

// A secondary that lags holds the switch: the pending key never signs.
func TestSecondaryLags(t *testing.T) {
	r := newRig(t, "ed25519", 2, nil)
	r.zone.lag = true
	r.run(15 * time.Second)
	st := r.state()
	if st.Pending == nil || st.Pending.PublishedAt.IsZero() || st.Pending.FirstSeenAt.IsZero() {
		t.Fatalf("want a pending key published and seen by the primary: %+v", st)
	}
	if sel, _ := r.signing(); sel != "s0" {
		t.Fatalf("switched to %s while the secondaries lag", sel)
	}
	if n := strings.Count(r.log.String(), "serves the new key's record"); n != 1 {
		t.Errorf("the waiting line logged %d times, want once:\n%s", n, r.log)
	}
	if !strings.Contains(r.log.String(), "ns2.example.test") {
		t.Errorf("the waiting line does not name the lagging servers:\n%s", r.log)
	}
	r.metrics.mu.Lock()
	if r.metrics.states[st.Pending.Selector] != StatePending {
		t.Errorf("metrics: %v", r.metrics.states)
	}
	r.metrics.mu.Unlock()
	r.zone.sync()
	r.run(time.Second + 250*time.Millisecond)
	if sel, _ := r.signing(); sel != st.Pending.Selector {
		t.Fatalf("signs with %s after the secondaries caught up, want %s", sel, st.Pending.Selector)
	}
}

// A failing publisher: the current key signs on, the step is retried
// after retry, doubling up to retry_max, each failure counted; then it
// goes on.
func TestPublishFailsBackoff(t *testing.T) {
	r := newRig(t, "ed25519", 0, nil)
	r.zone.failN = 4
	var retries []time.Duration
	last := time.Time{}
	for i := 0; i < 120 && (r.state().Pending == nil || r.state().Pending.PublishedAt.IsZero()); i++ {
		at := r.now
		r.e.Step(context.Background())
		r.checkVisible()
		if st := r.state(); !st.RetryAt.IsZero() && !st.RetryAt.Equal(last) {
			retries = append(retries, st.RetryAt.Sub(at))
			last = st.RetryAt
		}
		r.now = r.now.Add(250 * time.Millisecond)
	}
	if sel, _ := r.signing(); sel != "s0" {
		t.Fatalf("switched while publishing failed")
	}
	want := "[1s 2s 4s 4s]"
	if fmt.Sprint(retries) != want {
		t.Errorf("retries after %v, want %s\n%s", retries, want, r.log)
	}
	if r.metrics.pubErrors != 4 {
		t.Errorf("%d publish errors counted, want 4", r.metrics.pubErrors)
	}
	if !strings.Contains(r.log.String(), "connection refused") || !strings.Contains(r.log.String(), "the current key goes on signing") {
		t.Errorf("the failure is not logged with its cause:\n%s", r.log)
	}
	r.run(2 * time.Second)
	if sel, _ := r.signing(); sel == "s0" {
		t.Fatalf("did not switch once publishing worked:\n%s", r.log)
	}
	if st := r.state(); st.Failures != 0 || st.LastError != "" {
		t.Errorf("failures not reset: %+v", st)
	}
}

// After a failed change the publisher is made again for the next try:
// the file the error points to (a TSIG key) is read again, and the
// operator's fix works without a reload. A publisher that works is kept.
func TestPublisherMadeAgainAfterFailure(t *testing.T) {
	r := newRig(t, "ed25519", 0, nil)
	r.zone.failN = 2
	r.run(16 * time.Second) // due at 10s, tried at 10s, 11s, 13s
	if sel, _ := r.signing(); sel == "s0" {
		t.Fatalf("did not switch once publishing worked:\n%s", r.log)
	}
	// One per try of the publication (two failed, one made it); the
	// switch changes nothing.
	if r.made != 3 {
		t.Errorf("%d publishers made, want 3", r.made)
	}
}

// DNS down (the servers cannot be asked): nothing changes, the current
// key signs, and the step is retried; a publisher that cannot be made
// (dnsupdate.New failing) is a publishing error too.
func TestDNSDownAndNoPublisher(t *testing.T) {
	r := newRig(t, "ed25519", 0, nil)
	r.zone.down = true
	r.run(15 * time.Second)
	if st := r.state(); st.Failures == 0 || !strings.Contains(st.LastError, "connection refused") {
		t.Errorf("DNS down not recorded: %+v", st)
	}
	if len(r.zone.applied) != 0 {
		t.Errorf("changes sent without looking first: %v", r.zone.applied)
	}
	r.zone.down = false
	r.cfg.Keys["main"].Publish = "gone"
	r.e.Reload(r.cfg)
	r.run(5 * time.Second)
	if r.metrics.pubErrors == 0 || !strings.Contains(r.state().LastError, `publish = "gone"`) {
		t.Errorf("no publisher: %+v, %d errors", r.state(), r.metrics.pubErrors)
	}
	if sel, _ := r.signing(); sel != "s0" {
		t.Fatalf("switched without publishing")
	}
}

// A record changed by hand pauses the rotation, with an error that says
// what is expected and what is there; nothing is overwritten, and the
// rotation resumes once the record is put back.
func TestPauseOnChangedRecord(t *testing.T) {
	t.Run("pending", func(t *testing.T) {
		r := newRig(t, "ed25519", 1, nil)
		r.zone.lag = true
		r.run(10*time.Second + 500*time.Millisecond)
		p := r.state().Pending
		if p == nil || p.PublishedAt.IsZero() {
			t.Fatalf("no pending key: %+v", r.state())
		}
		name := RecordName(p.Selector, "example.test", "")
		r.zone.set(name, "v=DKIM1; k=rsa; p=SOMEONEELSE")
		r.run(2 * time.Second)
		st := r.state()
		if st.Paused == nil || st.Paused.Name != name {
			t.Fatalf("not paused: %+v", st)
		}
		for _, s := range []string{"rotation paused", name, "SOMEONEELSE", "expected=", "hint="} {
			if !strings.Contains(r.log.String(), s) {
				t.Errorf("the pause line lacks %q:\n%s", s, r.log)
			}
		}
		if !r.metrics.paused {
			t.Errorf("paused metric not set")
		}
		if sel, _ := r.signing(); sel != "s0" {
			t.Fatalf("switched to a record changed by hand")
		}
		r.zone.set(name, p.Record)
		r.run(2 * time.Second)
		if r.state().Paused != nil || r.metrics.paused {
			t.Fatalf("did not resume")
		}
		if sel, _ := r.signing(); sel != p.Selector {
			t.Fatalf("did not switch after resuming")
		}
		if !strings.Contains(r.log.String(), "rotation resumed") {
			t.Errorf("no resume line")
		}
	})
	t.Run("retiring", func(t *testing.T) {
		r := newRig(t, "ed25519", 1, nil)
		r.run(11 * time.Second)
		if len(r.state().Retiring) != 1 {
			t.Fatalf("no retiring key: %+v", r.state())
		}
		name := "s0._domainkey.example.test"
		r.zone.set(name, "v=DKIM1; k=ed25519; p=HANDMADE")
		r.run(10 * time.Second)
		st := r.state()
		if st.Paused == nil || len(st.Revoked) != 0 {
			t.Fatalf("not paused before the revocation: %+v", st)
		}
		if got := r.zone.get(0, name); got[0] != "v=DKIM1; k=ed25519; p=HANDMADE" {
			t.Fatalf("the record changed by hand was overwritten: %v", got)
		}
		for _, c := range r.zone.applied {
			if c.Name == name {
				t.Fatalf("a change was sent for %s: %+v", name, c)
			}
		}
	})
	t.Run("add over a record", func(t *testing.T) {
		r := newRig(t, "ed25519", 0, func(c *config.Config) { c.Keys["main"].Selectors = []string{"s0", "s1"} })
		r.zone.set("s1._domainkey.example.test", "v=DKIM1; k=ed25519; p=OTHER")
		r.run(12 * time.Second)
		if st := r.state(); st.Paused == nil || st.Paused.Step != "add" {
			t.Fatalf("not paused: %+v", st)
		}
		if len(r.zone.applied) != 0 {
			t.Fatalf("changes sent: %v", r.zone.applied)
		}
		r.zone.set("s1._domainkey.example.test", "")
		r.run(2 * time.Second)
		if sel, _ := r.signing(); sel != "s1" {
			t.Fatalf("signs with %s after the name was freed, want s1\n%s", sel, r.log)
		}
	})
	t.Run("changed between look and update", func(t *testing.T) {
		// Apply's prerequisite catches what the look missed.
		r := newRig(t, "ed25519", 0, nil)
		r.run(11 * time.Second)
		pub := r.e.keys["main"]
		pub.pub = &racing{zone: r.zone, name: "s0._domainkey.example.test", rec: "v=DKIM1; p=RACE"}
		r.run(6 * time.Second)
		if st := r.state(); st.Paused == nil || st.Paused.Found != "v=DKIM1; p=RACE" {
			t.Fatalf("not paused: %+v\n%s", st, r.log)
		}
	})
}

// racing changes a record by hand just before its update arrives.
type racing struct {
	*zone
	name, rec string
}

func (r *racing) Apply(ctx context.Context, c dnsupdate.Change) (string, error) {
	if c.Name == r.name {
		r.zone.set(r.name, r.rec)
	}
	return r.zone.Apply(ctx, c)
}

// A new engine from the state directory continues where the old one
// stopped, whatever the step: the key rotation made signs at once, and
// a change made just before a crash is not made twice.
func TestRestart(t *testing.T) {
	for _, stop := range []dnsupdate.Action{dnsupdate.Add, dnsupdate.Revoke, dnsupdate.Delete} {
		t.Run("crash after "+stop.String(), func(t *testing.T) {
			r := newRig(t, "ed25519", 0, nil)
			crashed := false
			r.zone.afterApply = func(c dnsupdate.Change) {
				if c.Action == stop && !crashed {
					crashed = true
					panic("crash")
				}
			}
			func() {
				defer func() { recover() }()
				r.run(30 * time.Second)
			}()
			if !crashed {
				t.Fatalf("no %s", stop)
			}
			r.zone.afterApply = nil
			n := len(r.zone.applied)
			// A new process: a new Rotated, and the engine reads the
			// state back.
			r.rotated = &keystore.Rotated{}
			r.start()
			if stop != dnsupdate.Add {
				if sel, _ := r.signing(); sel == "s0" {
					t.Fatalf("after a restart the configured key signs, not the rotated one")
				}
			}
			r.run(20 * time.Second)
			if st := r.state(); st.Paused != nil || st.Failures > 0 {
				t.Fatalf("the restart left the rotation stuck: %+v\n%s", st, r.log)
			}
			if len(r.zone.applied) > n && r.zone.applied[n].Action == stop && strings.HasPrefix(r.zone.applied[n].Name, strings.SplitN(r.zone.applied[n-1].Name, ".", 2)[0]) {
				t.Errorf("%s made twice: %v", stop, r.zone.applied[n-1:])
			}
		})
	}
}

// The daemon restarted mid-cycle: pending, then retiring.
func TestRestartMidCycle(t *testing.T) {
	r := newRig(t, "ed25519", 1, nil)
	r.zone.lag = true
	r.run(11 * time.Second)
	p := r.state().Pending
	if p == nil {
		t.Fatal("no pending key")
	}
	r.rotated = &keystore.Rotated{}
	r.start()
	if r.rotated.Get("main") == nil || r.rotated.Get("main").Selector != "s0" {
		t.Fatalf("after a restart with a pending key: %+v", r.rotated.Get("main"))
	}
	r.zone.sync()
	r.run(2 * time.Second)
	if sel, _ := r.signing(); sel != p.Selector {
		t.Fatalf("signs %s, want %s", sel, p.Selector)
	}
	if n := len(r.zone.applied); n != 1 {
		t.Fatalf("%d changes, want the one add: %v", n, r.zone.applied)
	}
	r.rotated = &keystore.Rotated{}
	r.start()
	if sel, _ := r.signing(); sel != p.Selector {
		t.Fatalf("after a restart, signs %s, want %s", sel, p.Selector)
	}
}

// With fixed selectors and delegation, records go to the provider's
// zone, the selectors alternate, and the switch waits for the customer's
// CNAME.
func TestDelegatedSelectors(t *testing.T) {
	r := newRig(t, "ed25519", 0, func(c *config.Config) {
		c.Keys["main"].Selectors = []string{"s0", "s1"}
		c.Keys["main"].Delegate = "provider.example"
		c.Keys["main"].Rotate = 5 * time.Second
	})
	r.run(6 * time.Second)
	p := r.state().Pending
	if p == nil || p.Selector != "s1" {
		t.Fatalf("pending %+v, want s1", p)
	}
	if got := r.zone.applied[0].Name; got != "s1.example-test._domainkey.provider.example" {
		t.Errorf("published at %s", got)
	}
	if !strings.Contains(r.log.String(), "CNAME s1.example-test._domainkey.provider.example.") {
		t.Errorf("the missing CNAME is not reported:\n%s", r.log)
	}
	if sel, _ := r.signing(); sel != "s0" {
		t.Fatalf("switched without the customer's CNAME")
	}
	r.zone.cname["s1._domainkey.example.test"] = "s1.example-test._domainkey.provider.example"
	r.run(2 * time.Second)
	if sel, _ := r.signing(); sel != "s1" {
		t.Fatalf("signs %s, want s1", sel)
	}
	// s0 is free again only once deleted: expire 3 + margin 2 + revoked_for 4.
	r.run(5 * time.Second)
	if st := r.state(); st.Pending != nil {
		t.Fatalf("s0 reused before its record was deleted: %+v", st)
	}
	r.run(6 * time.Second)
	if st := r.state(); st.Pending == nil && st.Active.Selector != "s0" {
		t.Fatalf("s0 not reused once free: %+v\n%s", st, r.log)
	}
}

// States that rotation leaves alone, and the configured key signs.
func TestStateLeftAlone(t *testing.T) {
	r := newRig(t, "ed25519", 0, nil)
	r.run(11 * time.Second)
	rotatedSel, _ := r.signing()
	if rotatedSel == "s0" {
		t.Fatal("no rotation")
	}
	t.Run("domain changed", func(t *testing.T) {
		r.cfg.Keys["main"].Domain = "other.test"
		r.rotated = &keystore.Rotated{}
		r.start()
		if r.rotated.Get("main") != nil {
			t.Errorf("a state for another domain put in place")
		}
		if !strings.Contains(r.log.String(), "the key's domain changed") {
			t.Errorf("not logged")
		}
		r.cfg.Keys["main"].Domain = "example.test"
	})
	t.Run("rotate off", func(t *testing.T) {
		r.cfg.Keys["main"].Rotate = 0
		r.rotated = &keystore.Rotated{}
		r.start()
		if k := r.rotated.Get("main"); k == nil || k.Selector != rotatedSel {
			t.Errorf("with rotation off, the rotated key must go on signing: %+v", k)
		}
		n := len(r.zone.applied)
		r.run(30 * time.Second)
		if len(r.zone.applied) != n {
			t.Errorf("changes made with rotation off")
		}
		// The same by a reload.
		r.cfg.Keys["main"].Rotate = 10 * time.Second
		r.start()
		r.run(time.Second)
		n = len(r.zone.applied)
		cfg := *r.cfg
		k := *cfg.Keys["main"]
		k.Rotate = 0
		cfg.Keys = map[string]*config.Key{"main": &k}
		r.e.Reload(&cfg)
		r.run(30 * time.Second)
		if k := r.rotated.Get("main"); k == nil || k.Selector != rotatedSel {
			t.Errorf("after a reload with rotation off, the rotated key must go on signing: %+v", k)
		}
		if len(r.zone.applied) != n {
			t.Errorf("changes made with rotation off by a reload")
		}
		r.cfg.Keys["main"].Rotate = 10 * time.Second
	})
	t.Run("active key file gone", func(t *testing.T) {
		st := r.state()
		os.Rename(st.Active.File, st.Active.File+".away")
		defer os.Rename(st.Active.File+".away", st.Active.File)
		r.rotated = &keystore.Rotated{}
		r.start()
		if r.rotated.Get("main") != nil {
			t.Errorf("an unreadable key put in place")
		}
		if !strings.Contains(r.log.String(), "cannot be read") {
			t.Errorf("not logged")
		}
	})
	t.Run("removed from the configuration", func(t *testing.T) {
		r.rotated = &keystore.Rotated{}
		r.start()
		cfg := *r.cfg
		cfg.Keys = map[string]*config.Key{}
		r.e.Reload(&cfg)
		r.e.Step(context.Background())
		if r.rotated.Get("main") != nil {
			t.Errorf("a key gone from the configuration is still in place")
		}
		if _, err := os.Stat(statePath(r.cfg.Rotation.StateDir, "main")); err != nil {
			t.Errorf("its state was removed: %v", err)
		}
	})
}

// The state file: written atomically with mode 0600, read back the same;
// broken files are reported with what to do.
func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	st := &State{Key: "main", Domain: "example.test", Active: KeyState{Selector: "s1", File: "/x/s1.pem", Made: true, Created: now, Since: now},
		Retiring: []KeyState{{Selector: "s0", File: "/etc/s0.pem", Record: "v=DKIM1; p=A", SwitchedAt: now, RevokeAt: now.Add(time.Hour)}}}
	if err := writeState(dir, st); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(statePath(dir, "main"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	got, err := ReadState(dir, "main")
	if err != nil || got.Retiring[0].RevokeAt != st.Retiring[0].RevokeAt || got.Active.Selector != "s1" {
		t.Fatalf("read back %+v, %v", got, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	if st, err := readState(dir, "none"); st != nil || err != nil {
		t.Errorf("missing state: %v %v", st, err)
	}
	for _, tt := range []struct{ data, want string }{
		{"{", "not a rotation state file"},
		{`{"version": 9, "key": "main"}`, "state format 9"},
		{`{"version": 1, "key": "main"}`, "incomplete rotation state"},
		{`{"version": 1, "key": "other", "active": {"selector": "s", "file": "f"}}`, "incomplete rotation state"},
	} {
		os.WriteFile(statePath(dir, "main"), []byte(tt.data), 0o600)
		if _, err := readState(dir, "main"); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.data, err, tt.want)
		}
	}
	if err := writeState(filepath.Join(dir, "main.json", "sub"), st); err == nil || !strings.Contains(err.Error(), "state_dir") {
		t.Errorf("unwritable state dir: %v", err)
	}
}

// A state directory that cannot be written: the rotation does not
// begin (no key is published, nor switched to, without its state), and
// says so; it begins once the directory is fixed. One that cannot be
// read: the configured key signs, and the error says which file.
func TestStateDirUnwritable(t *testing.T) {
	r := newRig(t, "ed25519", 0, nil)
	dir := r.cfg.Rotation.StateDir
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r.run(15 * time.Second)
	if len(r.zone.applied) != 0 {
		t.Fatalf("published without a state: %v", r.zone.applied)
	}
	if st := r.state(); st.Failures == 0 || !strings.Contains(st.LastError, "state_dir") {
		t.Errorf("%+v", st)
	}
	os.Remove(dir)
	r.run(6 * time.Second)
	if sel, _ := r.signing(); sel == "s0" {
		t.Fatalf("no rotation once the directory was fixed\n%s", r.log)
	}

	r.cfg.Rotation.StateDir = filepath.Join(t.TempDir(), "file", "state")
	os.WriteFile(filepath.Dir(r.cfg.Rotation.StateDir), nil, 0o600)
	r.rotated = &keystore.Rotated{}
	r.start()
	if r.state() != nil || r.rotated.Get("main") != nil || !strings.Contains(r.log.String(), "cannot read the key's state") {
		t.Errorf("unreadable state: %+v\n%s", r.state(), r.log)
	}
}

func TestJudge(t *testing.T) {
	nx := &net.DNSError{Err: "NXDOMAIN", IsNotFound: true}
	to := &net.DNSError{Err: "timeout", IsTimeout: true}
	a := func(err error, recs ...string) Answer { return Answer{Server: "ns", Records: recs, Err: err} }
	tests := []struct {
		name          string
		answers       []Answer
		want          string
		allowed       []string
		all, any, odd bool
		known         int
	}{
		{"all serve it", []Answer{a(nil, "v=DKIM1; p=A"), a(nil, "v=DKIM1;p=A ")}, "v=DKIM1; p=A", nil, true, true, false, 2},
		{"one lags", []Answer{a(nil, "v=DKIM1; p=A"), a(nx)}, "v=DKIM1; p=A", []string{""}, false, true, false, 2},
		{"one not asked", []Answer{a(nil, "v=DKIM1; p=A"), a(to)}, "v=DKIM1; p=A", nil, false, true, false, 1},
		{"changed", []Answer{a(nil, "v=DKIM1; p=B"), a(nx)}, "v=DKIM1; p=A", []string{""}, false, false, true, 2},
		{"two records", []Answer{a(nil, "v=DKIM1; p=A", "v=DKIM1; p=B")}, "v=DKIM1; p=A", nil, false, false, true, 1},
		{"absent wanted", []Answer{a(nx), a(nx)}, "", nil, true, true, false, 2},
		{"none", nil, "x", nil, false, false, false, 0},
	}
	for _, tt := range tests {
		j := judge(tt.answers, tt.want, tt.allowed...)
		if j.all != tt.all || j.any != tt.any || (j.odd != nil) != tt.odd || j.known != tt.known {
			t.Errorf("%s: %+v", tt.name, j)
		}
	}
	if got := RecordName("s1", "customer.example", "provider.example"); got != "s1.customer-example._domainkey.provider.example" {
		t.Errorf("RecordName %s", got)
	}
	if got := recordKeyType("v=DKIM1; k=ed25519; p=x"); got != "ed25519" {
		t.Errorf("%s", got)
	}
	if got := recordKeyType("v=DKIM1; p=x"); got != "rsa" {
		t.Errorf("%s", got)
	}
}

// The Store signs with the key rotation put in place, and with the
// configured one again when it is taken out.
func TestStoreUsesRotated(t *testing.T) {
	r := newRig(t, "ed25519", 0, nil)
	r.cfg.Signing = []*config.SigningRule{{From: "*@example.test", Keys: []string{"main"}}}
	s, _, err := keystore.Load(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.SetRotated(r.rotated)
	r.run(11 * time.Second)
	sel, _ := r.signing()
	got, err := s.Lookup("a@example.test")
	if err != nil || got == nil || got.Keys[0].Selector != sel || sel == "s0" {
		t.Fatalf("Store signs with %+v, rotation switched to %s (%v)", got, sel, err)
	}
}

// Run in real time, as the daemon does: two engines on one state
// directory (an upgrade's old and new process) never rotate at the same
// time; the second takes over when the first stops, from the states on
// disk.
func TestRunLock(t *testing.T) {
	r := newRig(t, "ed25519", 1, func(c *config.Config) {
		c.Keys["main"].Rotate = 400 * time.Millisecond
		c.Publishers["bind"].TTL = 0
		c.Sign.Expire = 0
		c.Rotation.Margin, c.Rotation.RevokedFor, c.Rotation.CheckInterval = 200*time.Millisecond, 200*time.Millisecond, 50*time.Millisecond
	})
	r.real = true
	a := r.e
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan struct{})
	go func() { a.Run(ctxA); close(doneA) }()
	time.Sleep(100 * time.Millisecond)
	logB := &syncBuffer{}
	r.log = logB
	r.start()
	b := r.e
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	doneB := make(chan struct{})
	go func() { b.Run(ctxB); close(doneB) }()
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		r.checkVisible()
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(logB.String(), "rotation: switched") || !strings.Contains(logB.String(), "waiting for the state directory") {
		t.Fatalf("the second engine did not wait:\n%s", logB)
	}
	r.zone.mu.Lock()
	first := len(r.zone.applied)
	r.zone.mu.Unlock()
	if first < 3 {
		t.Fatalf("the first engine made %d changes in 1.5s, want a rotation or more", first)
	}
	stopA()
	<-doneA
	deadline = time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		r.checkVisible()
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logB.String(), "rotation: switched") {
		t.Fatalf("the second engine did not take over:\n%s", logB)
	}
	if st := b.State("main"); st.Paused != nil || st.Failures > 0 {
		t.Errorf("taking over left %+v", st)
	}
	stopB()
	<-doneB
}

// With no rotating key, Run touches nothing: no state directory, no
// lock, no log line; a reload that makes a key rotate starts it.
func TestRunIdle(t *testing.T) {
	r := newRig(t, "ed25519", 0, func(c *config.Config) { c.Keys["main"].Rotate = 0 })
	r.real = true
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.e.Run(ctx); close(done) }()
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(r.cfg.Rotation.StateDir); err == nil {
		t.Errorf("the state directory was made with no rotating key")
	}
	if r.log.String() != "" {
		t.Errorf("log lines with no rotating key:\n%s", r.log)
	}
	cfg := *r.cfg
	k := *cfg.Keys["main"]
	k.Rotate = time.Hour
	cfg.Keys = map[string]*config.Key{"main": &k}
	r.e.Reload(&cfg)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(r.cfg.Rotation.StateDir, "main.json")); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.Rotation.StateDir, ".lock")); err != nil {
		t.Errorf("no lock once a key rotates: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.Rotation.StateDir, "main.json")); err != nil {
		t.Errorf("no state once a key rotates: %v\n%s", err, r.log)
	}
	stop()
	<-done
}

// The primary down when the old record is due to be revoked, then when
// the revoked one is due to be deleted: each step waits and is retried,
// nothing else changes meanwhile, and the key that signs stays.
func TestRevokeDeleteFail(t *testing.T) {
	for _, step := range []string{"revoke", "delete"} {
		t.Run(step, func(t *testing.T) {
			r := newRig(t, "ed25519", 1, nil)
			r.run(11 * time.Second)
			sel, _ := r.signing()
			if sel == "s0" {
				t.Fatal("no switch")
			}
			if step == "delete" {
				r.run(5 * time.Second)
				if len(r.state().Revoked) != 1 {
					t.Fatalf("not revoked: %+v", r.state())
				}
			}
			r.zone.mu.Lock()
			r.zone.failN = 1000
			n := len(r.zone.applied)
			r.zone.mu.Unlock()
			r.run(10 * time.Second)
			st := r.state()
			if len(r.zone.applied) != n || st.Failures == 0 || r.metrics.pubErrors == 0 {
				t.Fatalf("failing %s: %d changes, %+v", step, len(r.zone.applied)-n, st)
			}
			if step == "revoke" && len(st.Retiring) != 1 || step == "delete" && len(st.Revoked) != 1 {
				t.Fatalf("the old key moved on without its change: %+v", st)
			}
			if s, _ := r.signing(); s != sel {
				t.Fatalf("signing key changed from %s to %s", sel, s)
			}
			if step == "delete" {
				if _, err := os.Stat(r.cfg.Keys["main"].File); err != nil {
					t.Fatalf("configured key file gone: %v", err)
				}
			}
			r.zone.mu.Lock()
			r.zone.failN = 0
			r.zone.mu.Unlock()
			r.run(5 * time.Second)
			made := false
			r.zone.mu.Lock()
			for _, c := range r.zone.applied[n:] {
				made = made || c.Action.String() == step && c.Name == "s0._domainkey.example.test"
			}
			r.zone.mu.Unlock()
			if !made {
				t.Fatalf("%s not made once the primary is back\n%s", step, r.log)
			}
		})
	}
}
