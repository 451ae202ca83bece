package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/dkimmilter/dkimmilter/internal/bindtest"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// Keys that rotate themselves, end to end: the daemon as a process, a
// real BIND primary and secondary (internal/bindtest), and messages
// signed through the milter every 300 ms, each verified at once against
// each authoritative server on its own. Days are compressed into
// seconds: a switch waits for the publisher's ttl (1s), a retired key's
// record is revoked sign.expire (3s) + margin (2s) after the switch and
// deleted revoked_for (4s) after that.
//
// Each subtest has its own named pair and daemon, and they run in
// parallel: the whole takes about as long as the longest one.
func TestRotationEndToEnd(t *testing.T) {
	bindtest.Missing(t)
	for _, tc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"full cycle twice", testRotationTwice},
		{"secondary lags", testRotationLag},
		{"wrong TSIG key", testRotationWrongKey},
		{"primary down", testRotationPrimaryDown},
		{"restart while pending", testRotationRestart},
		{"retiring record changed by hand", testRotationHandChange},
		{"pending record changed by hand", testRotationHandChangePending},
		{"CNAME delegation", testRotationDelegated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t)
		})
	}
}

const (
	rotExpire     = 3 * time.Second // [sign] expire
	rotMargin     = 2 * time.Second // [rotation] margin
	rotRevokedFor = 4 * time.Second // [rotation] revoked_for
	rotDomain     = "example.com"
)

// rotName is the DNS name of a selector's record.
func rotName(sel string) string { return sel + "._domainkey." + rotDomain }

// rotRig is one daemon rotating keys.main of example.com (selectors s1,
// s2, s3, starting from the configured s1) against its own BIND pair.
type rotRig struct {
	t       *testing.T
	bind    *bindtest.Servers
	dir     string
	cfg     string
	keyFile string // the configured key, s1
	s1      string // its record
	tsig    string // the key file [publish.bind] names
	metrics string // metrics_listen, "" for none
	p       *proc

	// primaryDown: the messages are not verified against the primary
	// (stopped by the test).
	primaryDown atomic.Bool
	watch       *recordWatch

	delegate string // the provider's zone the records live in, "" for none
}

// name is the DNS name of a selector's record: the provider's name for a
// delegated key.
func (r *rotRig) name(sel string) string {
	if r.delegate != "" {
		return sel + "." + strings.ReplaceAll(rotDomain, ".", "-") + "._domainkey." + r.delegate
	}
	return rotName(sel)
}

type rotOpts struct {
	due     time.Duration // the configured key is due this long after the rig is made
	rotate  time.Duration
	metrics bool
	wrong   bool // [publish.bind] names a key file with the wrong secret
	hold    bool // the secondary is held from the start (after it has s1)
	// delegate: the records live in this provider's zone, served by the
	// same servers, and example.com's names are CNAMEs to them (those of
	// cnames: the customer published them once).
	delegate string
	cnames   []string
}

func newRotRig(t *testing.T, o rotOpts) *rotRig {
	t.Helper()
	zones := []string{rotDomain}
	if o.delegate != "" {
		zones = append(zones, o.delegate)
	}
	b := bindtest.New(t, zones...)
	// Unix socket paths are limited to ~100 bytes: keep the dir short.
	dir, err := os.MkdirTemp("", "dkr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &rotRig{t: t, bind: b, dir: dir, cfg: filepath.Join(dir, "dkimmilter.toml"), tsig: filepath.Join(dir, "tsig.key"), delegate: o.delegate}
	key := testkit.RSAKey(2048)
	r.keyFile = testkit.WriteKey(dir, "keys/s1.pem", key, true)
	r.s1 = testkit.KeyRecord(key, "")
	// A configured key's age counts from its file's modification time.
	made := time.Now().Add(o.due - o.rotate)
	if err := os.Chtimes(r.keyFile, made, made); err != nil {
		t.Fatal(err)
	}
	b.SetTXT(t, r.name("s1"), r.s1)
	for _, sel := range o.cnames {
		b.SetCNAME(t, rotName(sel), r.name(sel))
	}
	b.Sync(t)
	if o.hold {
		b.Hold()
	}
	src := b.KeyFile()
	if o.wrong {
		src = b.WrongKeyFile()
	}
	copyKeyFile(t, src, r.tsig)
	metrics := ""
	if o.metrics {
		r.metrics = freePort(t)
		metrics = fmt.Sprintf("metrics_listen = %q\n", r.metrics)
	}
	delegateLine, zone := "", rotDomain
	if o.delegate != "" {
		delegateLine, zone = fmt.Sprintf("delegate = %q\n", o.delegate), o.delegate
	}
	cfg := fmt.Sprintf(`listen = "unix:%[1]s/milter.sock"
%[2]sauthserv_id = "mx.example.com"
[dns]
nameservers = [%[3]q, %[4]q]
timeout = "2s"
[sign]
expire = "3s"
[keys.main]
domain = %[5]q
selector = "s1"
file = "keys/s1.pem"
rotate = %[6]q
publish = "bind"
selectors = ["s1", "s2", "s3"]
%[8]s[[signing]]
from = "*@example.com"
keys = ["main"]
[publish.bind]
method = "rfc2136"
server = %[3]q
zone = %[9]q
tsig_key = %[7]q
ttl = "1s"
timeout = "2s"
[rotation]
state_dir = "%[1]s/state"
margin = "2s"
revoked_for = "4s"
check_interval = "1s"
retry = "1s"
retry_max = "4s"
`, dir, metrics, b.Primary(), b.Secondary(), rotDomain, o.rotate.String(), r.tsig, delegateLine, zone)
	if err := os.WriteFile(r.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r.watch = newRecordWatch(r)
	t.Cleanup(r.watch.stop)
	return r
}

func copyKeyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs the daemon; the zones' servers are asked on bindtest's port.
func (r *rotRig) start() *proc {
	r.t.Helper()
	r.p = startProcEnv(r.t, []string{"DKIMMILTER_TEST_AUTH_PORT=" + strconv.Itoa(r.bind.Port())}, "serve", "-config", r.cfg)
	return r.p
}

// stop sends SIGTERM and waits for a clean exit.
func (r *rotRig) stop() {
	r.t.Helper()
	r.p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.p.done:
		if err != nil {
			r.t.Fatalf("exit after SIGTERM: %v\n%s", err, r.p.stderr.String())
		}
	case <-time.After(15 * time.Second):
		r.t.Fatalf("no exit 15s after SIGTERM:\n%s", r.p.stderr.String())
	}
}

// log is the running daemon's log so far.
func (r *rotRig) log() string { return r.p.stderr.String() }

// rotationLog is the log without the one line per message, for a
// failing test's output.
func (r *rotRig) rotationLog() string {
	var out []string
	for _, l := range strings.Split(r.log(), "\n") {
		if !strings.Contains(l, "msg=message ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitFor polls cond every 50ms until it holds, failing the test after
// limit with what.
func (r *rotRig) waitFor(limit time.Duration, what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("after %s: %s\ndaemon log:\n%s", limit, what, r.rotationLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLog waits until the log has s n times.
func (r *rotRig) waitLog(limit time.Duration, s string, n int) {
	r.t.Helper()
	r.waitFor(limit, fmt.Sprintf("the log says %q fewer than %d times", s, n), func() bool { return strings.Count(r.log(), s) >= n })
}

// logLines returns the lines of the log that have every one of subs.
func (r *rotRig) logLines(subs ...string) []string {
	var out []string
	for _, l := range strings.Split(r.log(), "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// signOne sends one message through the milter, on a connection of its
// own, and returns the selector of its signature and the message as
// Postfix would deliver it.
func (r *rotRig) signOne() (string, []byte, error) { return signVia(r.dir, "a@example.com") }

// verifyAt verifies msg with keys from server alone: nil for a pass.
func verifyAt(server string, msg []byte) error {
	c, err := dns.NewClient([]string{server}, 2*time.Second)
	if err != nil {
		return err
	}
	res := chasing{c, server}
	h, body := testkit.Split(msg)
	m := verifier.New(verifier.Options{Resolver: res}).Begin(context.Background(), h)
	m.Write(body)
	vs := m.Finish()
	if len(vs) != 1 {
		return fmt.Errorf("%d verifications, want 1", len(vs))
	}
	if v := vs[0]; v.Result != verifier.Pass {
		return fmt.Errorf("at %s: %s s=%s: %v", server, v.Result, v.Selector, v.Err)
	}
	return nil
}

// chasing asks one authoritative server and follows a CNAME to another
// of its zones, as a recursive resolver would: named does not, with
// recursion off (a delegated key's customer name is such a CNAME).
type chasing struct {
	*dns.Client
	server string
}

func (r chasing) LookupTXT(ctx context.Context, name string) (*dns.TXTResult, error) {
	res, err := r.Client.LookupTXT(ctx, name)
	if err == nil {
		return res, nil
	}
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), mdns.TypeTXT)
	if resp, xerr := mdns.ExchangeContext(ctx, m, r.server); xerr == nil {
		for _, rr := range resp.Answer {
			if c, ok := rr.(*mdns.CNAME); ok && strings.EqualFold(c.Hdr.Name, mdns.Fqdn(name)) {
				return r.Client.LookupTXT(ctx, c.Target)
			}
		}
	}
	return nil, err
}

// signed is one message of a signer.
type signed struct {
	at       time.Time
	selector string
}

// signer sends a message every 300 ms and verifies it at once against
// each of the servers asked for, each on its own; every failure is kept.
type signer struct {
	label  string // says whose messages in failures: "" or "a.example via A"
	mu     sync.Mutex
	msgs   []signed
	fails  []string
	quit   chan struct{}
	closed chan struct{}
}

// startSigner runs sign every 300 ms, and verifies each message it
// returns at each of servers() at that moment.
func startSigner(label string, sign func() (string, []byte, error), servers func() []string) *signer {
	s := &signer{label: label, quit: make(chan struct{}), closed: make(chan struct{})}
	go func() {
		defer close(s.closed)
		t := time.NewTicker(300 * time.Millisecond)
		defer t.Stop()
		for {
			at := time.Now()
			sel, msg, err := sign()
			var errs []string
			if err != nil {
				errs = append(errs, "signing: "+err.Error())
			} else {
				for _, srv := range servers() {
					if err := verifyAt(srv, msg); err != nil {
						errs = append(errs, err.Error())
					}
				}
			}
			prefix := at.Format("15:04:05.000") + " "
			if label != "" {
				prefix += label + ": "
			}
			s.mu.Lock()
			if err == nil {
				s.msgs = append(s.msgs, signed{at, sel})
			}
			for _, e := range errs {
				s.fails = append(s.fails, prefix+e)
			}
			s.mu.Unlock()
			select {
			case <-s.quit:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// sign signs through the rig's daemon, verifying at the secondary and at
// the primary (unless the test stopped it).
func (r *rotRig) sign() *signer {
	return startSigner("", r.signOne, func() []string {
		servers := []string{r.bind.Secondary()}
		if !r.primaryDown.Load() {
			servers = append(servers, r.bind.Primary())
		}
		return servers
	})
}

// end stops the signer and fails the test for each message that was not
// signed, or did not verify at a server.
func (s *signer) end(t *testing.T) []signed {
	t.Helper()
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	<-s.closed
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.fails {
		t.Errorf("message: %s", f)
	}
	if len(s.msgs) == 0 {
		what := "no message was signed"
		if s.label != "" {
			what += " (" + s.label + ")"
		}
		t.Error(what)
	}
	return slices.Clone(s.msgs)
}

// last is the selector of the latest message, "" before the first.
func (s *signer) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.msgs) == 0 {
		return ""
	}
	return s.msgs[len(s.msgs)-1].selector
}

// selectors is the selectors of msgs in order, repeats dropped.
func selectors(msgs []signed) []string {
	var out []string
	for _, m := range msgs {
		if len(out) == 0 || out[len(out)-1] != m.selector {
			out = append(out, m.selector)
		}
	}
	return out
}

// lastSigned is when the last message with selector sel was signed.
func lastSigned(msgs []signed, sel string) time.Time {
	var at time.Time
	for _, m := range msgs {
		if m.selector == sel {
			at = m.at
		}
	}
	return at
}

// recordWatch asks the primary for the records of s1, s2 and s3 every
// 100 ms, and keeps each change with when it was first seen.
type recordWatch struct {
	mu      sync.Mutex
	changes map[string][]change // by selector
	quit    chan struct{}
	closed  chan struct{}
}

type change struct {
	at    time.Time
	value string // "" for no record
}

func newRecordWatch(r *rotRig) *recordWatch {
	w := &recordWatch{changes: map[string][]change{}, quit: make(chan struct{}), closed: make(chan struct{})}
	go func() {
		defer close(w.closed)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for _, sel := range []string{"s1", "s2", "s3"} {
				if r.primaryDown.Load() {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				recs, err := bindtest.LookupTXT(ctx, r.bind.Primary(), r.name(sel))
				cancel()
				if err != nil {
					continue
				}
				v := strings.Join(recs, " | ")
				w.mu.Lock()
				if c := w.changes[sel]; len(c) == 0 || c[len(c)-1].value != v {
					w.changes[sel] = append(c, change{time.Now(), v})
				}
				w.mu.Unlock()
			}
			select {
			case <-w.quit:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *recordWatch) stop() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.closed
}

// of is the changes of sel's record seen at the primary.
func (w *recordWatch) of(sel string) []change {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.changes[sel])
}

// kinds names each value of changes: "none", "revoked", or "key".
func kinds(changes []change) []string {
	var out []string
	for _, c := range changes {
		switch {
		case c.value == "":
			out = append(out, "none")
		case regexp.MustCompile(`(^|;)\s*p=\s*(;|$)`).MatchString(c.value):
			out = append(out, "revoked")
		default:
			out = append(out, "key")
		}
	}
	return out
}

// at is when the first change of kind was seen.
func at(changes []change, kind string) time.Time {
	for i, k := range kinds(changes) {
		if k == kind {
			return changes[i].at
		}
	}
	return time.Time{}
}

// checkRetired: sel's record was the key, then revoked no sooner than
// sign.expire + margin after the last message it signed, then deleted no
// sooner than revoked_for after that (the watch looks every 100 ms). first is the kind the watch saw first ("key", or "none" for
// a key rotation published).
func checkRetired(t *testing.T, w *recordWatch, msgs []signed, sel, first string) {
	t.Helper()
	ch := w.of(sel)
	want := []string{"key", "revoked", "none"}
	if first == "none" {
		want = append([]string{"none"}, want...)
	}
	if got := kinds(ch); !slices.Equal(got, want) {
		t.Errorf("%s at the primary went %v, want %v", rotName(sel), got, want)
		return
	}
	last, revoked, deleted := lastSigned(msgs, sel), at(ch, "revoked"), at(ch[1:], "none")
	if d := revoked.Sub(last); d < rotExpire+rotMargin {
		t.Errorf("%s revoked %s after the last message it signed, want at least sign.expire + margin (%s)", sel, d, rotExpire+rotMargin)
	}
	// The watch may see the revocation late on a busy machine: 500 ms
	// of slack, far less than a deletion made early by a mistake.
	if d := deleted.Sub(revoked); d < rotRevokedFor-500*time.Millisecond {
		t.Errorf("%s deleted %s after its revocation, want revoked_for (%s)", sel, d, rotRevokedFor)
	}
}

// waitRecord waits until the watch has seen sel's record become kind
// ("none", "revoked", "key").
func (r *rotRig) waitRecord(sel, kind string) {
	r.t.Helper()
	r.waitFor(5*time.Second, "the primary serves "+kind+" at "+r.name(sel), func() bool {
		k := kinds(r.watch.of(sel))
		return len(k) > 0 && k[len(k)-1] == kind
	})
}

// metric is the value of a series on /metrics, -1 when it is not there.
func (r *rotRig) metric(series string) float64 {
	resp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// stateKeys lists the key files rotation made that are still there.
func (r *rotRig) stateKeys() []string {
	ents, _ := os.ReadDir(filepath.Join(r.dir, "state", "keys", rotDomain))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

const (
	logMade     = "rotation: due; new key made"
	logSwitched = "rotation: switched: the new key signs"
	logRevoked  = "rotation: old key revoked (p= empty)"
	logDeleted  = "rotation: old key's revoked record deleted"
	logFailed   = "rotation: step failed; the current key goes on signing"
	logWaiting  = "rotation: waiting until every authoritative server serves the new key's record"
)

// Two unattended rotations in a row, s1 → s2 → s3, with no message
// failing at either server at any moment: each switch waits until both
// serve the new record, and each old record stays, then is revoked, then
// deleted, in that order and no sooner than its time. The configured key
// file stays; the file rotation made for s2 goes with its record.
func testRotationTwice(t *testing.T) {
	r := newRotRig(t, rotOpts{due: time.Second, rotate: 12 * time.Second})
	r.start()
	s := r.sign()
	r.waitLog(40*time.Second, logDeleted, 2)
	r.waitRecord("s2", "none")
	msgs := s.end(t)
	r.watch.stop()

	if got := selectors(msgs); !slices.Equal(got, []string{"s1", "s2", "s3"}) {
		t.Errorf("messages signed with %v in turn, want s1, s2, s3", got)
	}
	checkRetired(t, r.watch, msgs, "s1", "key")
	checkRetired(t, r.watch, msgs, "s2", "none")
	if got := kinds(r.watch.of("s3")); !slices.Equal(got, []string{"none", "key"}) {
		t.Errorf("%s at the primary went %v, want none, key", rotName("s3"), got)
	}
	if n := strings.Count(r.log(), logMade); n != 2 {
		t.Errorf("%d new keys made, want 2", n)
	}
	if _, err := os.Stat(r.keyFile); err != nil {
		t.Errorf("the configured key file: %v", err)
	}
	if got := r.stateKeys(); !slices.Equal(got, []string{"s3.pem"}) {
		t.Errorf("rotation's key files left: %v, want s3.pem (s2.pem removed with its record)", got)
	}
	for _, sel := range []string{"s1", "s2"} {
		if l := r.logLines(logDeleted, "selector="+sel); len(l) != 1 {
			t.Errorf("%s: deletion logged %d times", sel, len(l))
		} else if want := map[string]string{"s1": "key_file=\"kept (not made by rotation)\"", "s2": "key_file=removed"}[sel]; !strings.Contains(l[0], want) {
			t.Errorf("%s: the deletion's log line lacks %s: %s", sel, want, l[0])
		}
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", r.rotationLog())
	}
}

// A secondary that has not transferred the new record holds the switch:
// the configured key signs well past the time it would have switched, the
// log says it waits, naming the secondary, and /metrics shows the key
// pending; once the secondary has the record, the new key signs.
func testRotationLag(t *testing.T) {
	r := newRotRig(t, rotOpts{due: time.Second, rotate: time.Hour, hold: true, metrics: true})
	r.start()
	s := r.sign()
	r.waitLog(10*time.Second, logWaiting, 1)
	// What the README's alert on a rotation stuck in pending watches.
	state := func(sel, st string) string {
		return `dkimmilter_rotation_state{key="main",domain="example.com",selector="` + sel + `",state="` + st + `"}`
	}
	r.waitFor(5*time.Second, state("s2", "pending")+" 1", func() bool { return r.metric(state("s2", "pending")) == 1 })
	w := r.logLines(logWaiting)[0]
	if want := fmt.Sprintf(`not_yet="ns2.example.com (::1 port %d)"`, r.bind.Port()); !strings.Contains(w, want) {
		t.Errorf("the waiting line does not name the secondary alone (%s): %s", want, w)
	}
	// Without the lag it would have switched within ttl (1s) and a
	// check_interval (1s).
	time.Sleep(4 * time.Second)
	if got := s.last(); got != "s1" {
		t.Errorf("signing with %s while the secondary lags", got)
	}
	if recs := r.bind.TXT(t, r.bind.Primary(), rotName("s2")); len(recs) != 1 {
		t.Errorf("the primary serves %v at s2", recs)
	}
	if strings.Contains(r.log(), logSwitched) {
		t.Errorf("switched while the secondary lags")
	}
	released := time.Now()
	r.bind.Release(t)
	r.waitLog(10*time.Second, logSwitched, 1)
	r.waitFor(5*time.Second, "signing with s2", func() bool { return s.last() == "s2" })
	r.waitFor(5*time.Second, state("s2", "active")+" 1 and "+state("s1", "retiring")+" 1", func() bool {
		return r.metric(state("s2", "active")) == 1 && r.metric(state("s1", "retiring")) == 1 && r.metric(state("s2", "pending")) == -1
	})
	msgs := s.end(t)
	if got := selectors(msgs); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Errorf("messages signed with %v in turn, want s1, s2", got)
	}
	if lastSigned(msgs, "s1").Before(released.Add(-time.Second)) {
		t.Errorf("s1 signed until %v, released at %v", lastSigned(msgs, "s1"), released)
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", r.rotationLog())
	}
}

// A TSIG key the primary does not know: the log says which key and what
// to check, the configured key goes on signing, publishing errors are
// counted on /metrics; the right secret written into the key file, and
// the next try publishes, with no reload.
func testRotationWrongKey(t *testing.T) {
	r := newRotRig(t, rotOpts{due: time.Second, rotate: time.Hour, metrics: true, wrong: true})
	r.start()
	s := r.sign()
	r.waitLog(10*time.Second, logFailed, 2)
	want := "the server refused TSIG key " + bindtest.KeyName + ": check its name, algorithm (hmac-sha256) and secret in " + r.tsig
	if l := r.logLines(logFailed, want); len(l) == 0 {
		t.Errorf("no failure line says %q", want)
	} else if !strings.Contains(l[0], "level=WARN") || !strings.Contains(l[0], "selector=s1") || !strings.Contains(l[0], rotName("s2")) {
		t.Errorf("the failure line does not name the signing selector and the record's name: %s", l[0])
	}
	series := `dkimmilter_rotation_publish_errors_total{key="main",domain="example.com"}`
	r.waitFor(5*time.Second, series+" > 0", func() bool { return r.metric(series) > 0 })
	if got := s.last(); got != "s1" {
		t.Errorf("signing with %s while publishing fails", got)
	}
	if recs := r.bind.TXT(t, r.bind.Primary(), rotName("s2")); len(recs) != 0 {
		t.Errorf("the primary serves %v at s2", recs)
	}

	// The operator does what the line says: the right secret in the
	// file. The next try reads it, with no reload.
	copyKeyFile(t, r.bind.KeyFile(), r.tsig)
	r.waitLog(10*time.Second, logSwitched, 1)
	r.waitFor(5*time.Second, "signing with s2", func() bool { return s.last() == "s2" })
	if got := selectors(s.end(t)); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Errorf("messages signed with %v in turn, want s1, s2", got)
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", r.rotationLog())
	}
}

// The primary down when the new record is to be published, and again
// when the old one is to be revoked: each step fails and is retried with
// backoff, the current key goes on signing, nothing is revoked or
// deleted early, and each step is made once the primary is back.
func testRotationPrimaryDown(t *testing.T) {
	r := newRotRig(t, rotOpts{due: 3 * time.Second, rotate: time.Hour})
	r.start()
	r.primaryDown.Store(true)
	r.bind.Stop(t)
	s := r.sign()
	r.waitLog(20*time.Second, "failures=4", 1)
	fails := r.logLines(logFailed)
	if len(fails) < 4 {
		t.Fatalf("%d failures logged", len(fails))
	}
	// Backoff: retry (1s), doubled per failure up to retry_max (4s): 1s,
	// 2s, 4s. Each wait counts from the start of the failed step, and
	// the first one made the key before it failed (RSA: some 100 ms, more
	// on a busy machine): the second and third waits are measured.
	var when []time.Time
	for _, l := range fails[1:4] {
		m := regexp.MustCompile(`time=(\S+)`).FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("no time in %s", l)
		}
		tm, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatal(err)
		}
		when = append(when, tm)
	}
	if d1, d2 := when[1].Sub(when[0]), when[2].Sub(when[1]); d1 < 1900*time.Millisecond || d2 < 3900*time.Millisecond || d2 > 6*time.Second {
		t.Errorf("retried after %s then %s, want 2s then 4s (retry_max)", d1, d2)
	}
	if !strings.Contains(fails[0], "add "+rotName("s2")) {
		t.Errorf("the failure does not say what failed: %s", fails[0])
	}
	if got := s.last(); got != "s1" {
		t.Errorf("signing with %s while the primary is down", got)
	}
	r.bind.Start(t)
	r.primaryDown.Store(false)
	r.waitLog(15*time.Second, logSwitched, 1)
	r.waitLog(5*time.Second, "rotation: working again after failures", 1)
	r.waitFor(5*time.Second, "signing with s2", func() bool { return s.last() == "s2" })

	// Down again before s1's revocation (sign.expire + margin after the
	// switch).
	r.primaryDown.Store(true)
	r.bind.Stop(t)
	n := len(r.logLines(logFailed))
	r.waitLog(20*time.Second, logFailed, n+2)
	if l := r.logLines(logFailed)[n]; !strings.Contains(l, "revoke "+rotName("s1")) {
		t.Errorf("the failure does not say what failed: %s", l)
	}
	if recs := r.bind.TXT(t, r.bind.Secondary(), rotName("s1")); len(recs) != 1 || recs[0] != r.s1 {
		t.Errorf("the secondary serves %v at s1, want its record", recs)
	}
	r.bind.Start(t)
	r.primaryDown.Store(false)
	r.waitLog(15*time.Second, logDeleted, 1)
	r.waitRecord("s1", "none")
	msgs := s.end(t)
	r.watch.stop()
	if got := selectors(msgs); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Errorf("messages signed with %v in turn, want s1, s2", got)
	}
	checkRetired(t, r.watch, msgs, "s1", "key")
	if t.Failed() {
		t.Logf("daemon log:\n%s", r.rotationLog())
	}
}

// The daemon stopped and started again while a new key is pending: the
// same key goes on (no second one is made), it switches after the
// restart, and after another restart the rotated key signs from the first
// message on.
func testRotationRestart(t *testing.T) {
	r := newRotRig(t, rotOpts{due: time.Second, rotate: time.Hour, hold: true})
	r.start()
	s := r.sign()
	r.waitLog(10*time.Second, logWaiting, 1)
	if l := r.logLines(logMade); len(l) != 1 || !strings.Contains(l[0], "selector=s2") {
		t.Fatalf("new key lines: %q", l)
	}
	s.end(t)
	r.stop()
	if got := r.stateKeys(); !slices.Equal(got, []string{"s2.pem"}) {
		t.Fatalf("key files after the stop: %v", got)
	}
	pem, err := os.ReadFile(filepath.Join(r.dir, "state", "keys", rotDomain, "s2.pem"))
	if err != nil {
		t.Fatal(err)
	}

	r.start()
	s = r.sign()
	r.waitLog(10*time.Second, logWaiting, 1)
	if got := s.last(); got != "s1" {
		t.Errorf("after the restart, signing with %s while s2 is pending", got)
	}
	r.bind.Release(t)
	r.waitLog(10*time.Second, logSwitched, 1)
	r.waitFor(5*time.Second, "signing with s2", func() bool { return s.last() == "s2" })
	s.end(t)
	if strings.Contains(r.log(), logMade) {
		t.Errorf("a new key was made after the restart")
	}
	if l := r.logLines(logSwitched); len(l) != 1 || !strings.Contains(l[0], "selector=s2") {
		t.Errorf("switch lines: %q", l)
	}
	if b, err := os.ReadFile(filepath.Join(r.dir, "state", "keys", rotDomain, "s2.pem")); err != nil || string(b) != string(pem) {
		t.Errorf("s2.pem changed after the restart (%v)", err)
	}
	if got := r.stateKeys(); !slices.Equal(got, []string{"s2.pem"}) {
		t.Errorf("key files: %v", got)
	}
	r.stop()

	r.start()
	sel, msg, err := r.signOne()
	if err != nil {
		t.Fatal(err)
	}
	if sel != "s2" {
		t.Errorf("the first message after the restart is signed with %s, want s2", sel)
	}
	for _, srv := range []string{r.bind.Primary(), r.bind.Secondary()} {
		if err := verifyAt(srv, msg); err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", r.rotationLog())
	}
}

// An old key's record changed by hand while it waits for its revocation:
// the rotation pauses with an ERROR line and dkimmilter_rotation_paused 1,
// and overwrites nothing, not even when the revocation is due; put back,
// the rotation resumes and revokes it.
func testRotationHandChange(t *testing.T) {
	r := newRotRig(t, rotOpts{due: time.Second, rotate: time.Hour, metrics: true})
	r.start()
	s := r.sign()
	r.waitLog(10*time.Second, logSwitched, 1)
	switched := time.Now()
	// The same key in test mode (RFC 6376 §3.6.1 t=y): another record.
	other := strings.Replace(r.s1, "k=rsa;", "k=rsa; t=y;", 1)
	if other == r.s1 {
		t.Fatalf("no k=rsa in %q", r.s1)
	}
	r.bind.SetTXT(t, rotName("s1"), other)
	r.waitLog(5*time.Second, "rotation paused: a record is not what rotation published", 1)
	l := r.logLines("rotation paused: a record is not what rotation published")[0]
	for _, want := range []string{"level=ERROR", "name=" + rotName("s1"), "selector=s1", "hint="} {
		if !strings.Contains(l, want) {
			t.Errorf("the pause line lacks %q: %s", want, l)
		}
	}
	paused := `dkimmilter_rotation_paused{key="main",domain="example.com"}`
	r.waitFor(5*time.Second, paused+" 1", func() bool { return r.metric(paused) == 1 })
	// Well past the revocation's time: nothing overwritten.
	if d := time.Until(switched.Add(rotExpire + rotMargin + 2*time.Second)); d > 0 {
		time.Sleep(d)
	}
	if recs := r.bind.TXT(t, r.bind.Primary(), rotName("s1")); len(recs) != 1 || recs[0] != other {
		t.Errorf("the primary serves %v at s1, want the record set by hand", recs)
	}
	if strings.Contains(r.log(), logRevoked) {
		t.Errorf("revoked while paused")
	}
	if got := r.metric(paused); got != 1 {
		t.Errorf("%s = %v while paused", paused, got)
	}

	r.bind.SetTXT(t, rotName("s1"), r.s1)
	r.waitLog(5*time.Second, "rotation resumed", 1)
	r.waitLog(5*time.Second, logRevoked, 1)
	r.waitFor(5*time.Second, paused+" 0", func() bool { return r.metric(paused) == 0 })
	if recs := r.bind.TXT(t, r.bind.Primary(), rotName("s1")); len(recs) != 1 || !strings.Contains(recs[0], "p=") || strings.Contains(recs[0], "p=M") {
		t.Errorf("the primary serves %v at s1, want the revoked record", recs)
	}
	if got := selectors(s.end(t)); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Errorf("messages signed with %v in turn, want s1, s2", got)
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", r.rotationLog())
	}
}

// The new key's record changed by hand while the switch waits for the
// secondary: the rotation pauses instead of switching to a key whose
// record is not what it published, even once every server serves the
// same (hand-made) record; put back, it resumes and switches.
func testRotationHandChangePending(t *testing.T) {
	r := newRotRig(t, rotOpts{due: time.Second, rotate: time.Hour, metrics: true, hold: true})
	r.start()
	s := r.sign()
	r.waitLog(10*time.Second, logWaiting, 1)
	recs := r.bind.TXT(t, r.bind.Primary(), rotName("s2"))
	if len(recs) != 1 {
		t.Fatalf("the primary serves %v at s2", recs)
	}
	published := recs[0]
	other := strings.Replace(published, "k=rsa;", "k=rsa; t=y;", 1)
	r.bind.SetTXT(t, rotName("s2"), other)
	const pause = "rotation paused: a record is not what rotation published"
	r.waitLog(5*time.Second, pause, 1)
	if l := r.logLines(pause)[0]; !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "name="+rotName("s2")) || !strings.Contains(l, "t=y") {
		t.Errorf("the pause line does not name the record and what is there: %s", l)
	}
	paused := `dkimmilter_rotation_paused{key="main",domain="example.com"}`
	r.waitFor(5*time.Second, paused+" 1", func() bool { return r.metric(paused) == 1 })
	// Every server serves the hand-made record now: still no switch.
	r.bind.Release(t)
	time.Sleep(3 * time.Second)
	if got := s.last(); got != "s1" {
		t.Errorf("signing with %s, whose record was changed by hand", got)
	}
	if recs := r.bind.TXT(t, r.bind.Primary(), rotName("s2")); len(recs) != 1 || recs[0] != other {
		t.Errorf("the primary serves %v at s2, want the record set by hand", recs)
	}
	r.bind.SetTXT(t, rotName("s2"), published)
	r.waitLog(5*time.Second, "rotation resumed", 1)
	r.waitLog(5*time.Second, logSwitched, 1)
	r.waitFor(5*time.Second, paused+" 0", func() bool { return r.metric(paused) == 0 })
	r.waitFor(5*time.Second, "signing with s2", func() bool { return s.last() == "s2" })
	if got := selectors(s.end(t)); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Errorf("messages signed with %v in turn, want s1, s2", got)
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", r.rotationLog())
	}
}

// CNAME delegation, as a provider runs it: the customer example.com has
// published s1 and s2 once, as CNAMEs to the provider's names, and
// rotation publishes and revokes in the provider's zone only. s1 → s2
// needs nothing from the customer; s2 → s3 waits until the customer
// publishes s3's CNAME, with a warning in the log and a failing keys
// check that names the line to publish, and s2 signs meanwhile.
func testRotationDelegated(t *testing.T) {
	r := newRotRig(t, rotOpts{due: time.Second, rotate: 8 * time.Second, delegate: "provider.test", cnames: []string{"s1", "s2"}})
	r.start()
	s := r.sign()
	r.waitLog(15*time.Second, logSwitched, 1)
	const logNoCNAME = "rotation: the customer's name does not lead to the new key's record yet"
	r.waitLog(20*time.Second, logNoCNAME, 1)
	if recs := r.bind.TXT(t, r.bind.Primary(), r.name("s3")); len(recs) != 1 {
		t.Errorf("%s at the primary: %q, want s3's record", r.name("s3"), recs)
	}
	cname := "s3._domainkey.example.com. CNAME s3.example-com._domainkey.provider.test."
	if l := r.logLines(logNoCNAME)[0]; !strings.Contains(l, cname) {
		t.Errorf("the warning does not give the CNAME to publish (%s): %s", cname, l)
	}
	// Without the missing CNAME it would have switched within ttl (1s)
	// and a check_interval (1s).
	time.Sleep(3 * time.Second)
	if got := s.last(); got != "s2" {
		t.Errorf("signing with %s while the customer's CNAME for s3 is missing", got)
	}
	code, out, errOut := runCmd("keys", "check", "-config", r.cfg)
	if want := "s3._domainkey.example.com. IN CNAME s3.example-com._domainkey.provider.test."; code == exitOK || !strings.Contains(out, want) {
		t.Errorf("keys check: exit %d, want a failure naming %q:\n%s%s", code, want, out, errOut)
	}
	r.bind.SetCNAME(t, rotName("s3"), r.name("s3"))
	r.waitFor(10*time.Second, "s3 signs once the customer published its CNAME", func() bool { return s.last() == "s3" })
	r.waitRecord("s1", "none")
	msgs := s.end(t)
	if got := selectors(msgs); !slices.Equal(got, []string{"s1", "s2", "s3"}) {
		t.Errorf("messages signed with %v in turn, want s1, s2, s3", got)
	}
	checkRetired(t, r.watch, msgs, "s1", "key")
	if t.Failed() {
		t.Logf("daemon log:\n%s", r.rotationLog())
	}
}
