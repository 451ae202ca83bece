package rotation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnsupdate"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// Once rotation has switched, the configured key's record is revoked and
// deleted: it must never sign again, not even for the moment the engine
// takes the state directory's lock and reads the states back (each start
// of Run: every daemon start, every upgrade), nor when a reload makes it
// read a key's state again.
func TestRotatedKeyNeverDropsOut(t *testing.T) {
	r := newRig(t, "rsa", 0, nil)
	r.run(11 * time.Second)
	sel, _ := r.signing()
	if sel == "s0" {
		t.Fatalf("no switch:\n%s", r.log)
	}
	var gaps atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if k := r.rotated.Get("main"); k == nil || k.Selector != sel {
				gaps.Add(1)
			}
		}
	}()
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan struct{})
		go func() { r.e.Run(ctx); close(ran) }()
		time.Sleep(20 * time.Millisecond)
		cancel()
		<-ran
	}
	if n := gaps.Load(); n > 0 {
		t.Errorf("Run: %d gaps", n)
	}
	// A reload that stops the key's rotation: its rotated key goes on
	// signing (doc/rotation.md), without a moment of the configured one.
	cfg := *r.cfg
	k := *cfg.Keys["main"]
	k.Rotate = 0
	cfg.Keys = map[string]*config.Key{"main": &k}
	for i := range 20 {
		if i%2 == 0 {
			r.e.Reload(&cfg)
		} else {
			r.e.Reload(r.cfg)
		}
		r.e.Step(context.Background())
	}
	close(stop)
	<-done
	if n := gaps.Load(); n > 0 {
		t.Fatalf("the configured key (record revoked) was put back to sign %d times while the engine read the states again", n)
	}
}

// slowChecker is the rig's zone whose lookups take a second each, on
// the rig's clock: a step that asks several names ends well after it
// began.
type slowChecker struct{ r *rig }

func (c slowChecker) Lookup(ctx context.Context, selector, domain string) ([]Answer, error) {
	c.r.now = c.r.now.Add(time.Second)
	return c.r.zone.Lookup(ctx, selector, domain)
}

// The old record stays sign.expire + margin after the moment the new key
// takes over, and the new key takes over no sooner than the publisher's
// ttl after its record was sent: both counted from when it happened, not
// from when the step that did it began (lookups, updates and a key's
// generation come in between).
func TestTimesCountFromTheChange(t *testing.T) {
	r := newRig(t, "ed25519", 1, func(c *config.Config) { c.Publishers["bind"].TTL = 10 * time.Second })
	r.e.opts.Checker = slowChecker{r}
	var addedAt time.Time
	r.zone.afterApply = func(c dnsupdate.Change) {
		if c.Action == dnsupdate.Add {
			// A provider's API that takes 5s to answer: the
			// record is in place when it returns.
			r.now = r.now.Add(5 * time.Second)
			addedAt = r.now
		}
	}
	var switchedAt time.Time
	for i := 0; i < 400 && switchedAt.IsZero(); i++ {
		r.e.Step(context.Background())
		if sel, _ := r.signing(); sel != "s0" {
			switchedAt = r.now // the switch was made by now
		}
		r.now = r.now.Add(250 * time.Millisecond)
	}
	if switchedAt.IsZero() {
		t.Fatalf("no switch:\n%s", r.log)
	}
	if d := switchedAt.Sub(addedAt); d < 10*time.Second {
		t.Errorf("the new key signs %v after its record was published, before the publisher's ttl of 10s", d)
	}
	st := r.state()
	if len(st.Retiring) != 1 {
		t.Fatalf("no retiring key: %+v", st)
	}
	if d := st.Retiring[0].RevokeAt.Sub(switchedAt); d < 5*time.Second {
		t.Errorf("the old record is revoked %v after the switch, before sign.expire 3s + margin 2s", d)
	}
}

// A crash while an old key's revoked record is deleted, just before its
// key file is removed, must not leave that key behind: with fixed
// selectors the file's name comes round again, and the old private key
// would then be published and sign once more as the "new" one.
func TestCrashBeforeKeyFileRemoved(t *testing.T) {
	r := newRig(t, "ed25519", 0, func(c *config.Config) { c.Keys["main"].Selectors = []string{"s0", "s1"} })
	var s1Record string
	for i := 0; i < 200 && s1Record == ""; i++ {
		r.run(250 * time.Millisecond)
		if st := r.state(); st.Active.Selector == "s1" {
			s1Record = st.Active.Record
		}
	}
	if s1Record == "" {
		t.Fatalf("s1 never signed:\n%s", r.log)
	}
	crashed := false
	removeFile = func(name string) error {
		crashed = true
		panic("crash")
	}
	defer func() { removeFile = os.Remove }()
	func() {
		defer func() { recover() }()
		r.run(40 * time.Second)
	}()
	removeFile = os.Remove
	if !crashed {
		t.Fatalf("s1's key file was never removed:\n%s", r.log)
	}
	r.rotated = &keystore.Rotated{}
	r.start()
	for i := 0; i < 200; i++ {
		r.run(250 * time.Millisecond)
		st := r.state()
		if p := st.Pending; p != nil && p.Selector == "s1" {
			if p.Record == s1Record {
				t.Fatalf("the retired s1 key is the next key again: its file %s was left behind by the crash", p.File)
			}
			return
		}
	}
	t.Fatalf("s1 never came round again:\n%s", r.log)
}

// A key that stops rotating (rotate removed, or its domain changed under
// its state) has no rotation series left: its last ones, such as a
// "pending" key, would otherwise stay on /metrics for good, frozen, and
// keep the README's alerts firing for a rotation that no longer runs.
func TestMetricsOfAKeyThatStopsRotating(t *testing.T) {
	for _, change := range []string{"rotate removed", "domain changed"} {
		t.Run(change, func(t *testing.T) {
			r := newRig(t, "ed25519", 1, nil)
			r.zone.lag = true
			r.run(11 * time.Second)
			p := r.state().Pending
			if p == nil {
				t.Fatalf("no pending key: %+v", r.state())
			}
			cfg := *r.cfg
			k := *cfg.Keys["main"]
			if change == "rotate removed" {
				k.Rotate = 0
			} else {
				k.Domain = "example.org"
			}
			cfg.Keys = map[string]*config.Key{"main": &k}
			r.e.Reload(&cfg)
			r.run(time.Second)
			r.metrics.mu.Lock()
			defer r.metrics.mu.Unlock()
			if len(r.metrics.states) != 0 {
				t.Errorf("series left for a key that no longer rotates: %v", r.metrics.states)
			}
		})
	}
}

// The records of the signing and old keys are compared with what rotation
// published every check_interval, from the switch on: the new key's record
// deleted by hand right after the switch makes every message fail, and the
// pause (its ERROR line, dkimmilter_rotation_paused) must say so then, not
// at the next step due (the revocation, sign.expire + margin later: days).
func TestRecordsCheckedAfterTheSwitch(t *testing.T) {
	r := newRig(t, "ed25519", 0, nil)
	for i := 0; i < 100; i++ {
		r.e.Step(context.Background())
		if sel, _ := r.signing(); sel != "s0" {
			break
		}
		r.now = r.now.Add(250 * time.Millisecond)
	}
	sel, _ := r.signing()
	if sel == "s0" {
		t.Fatalf("no switch:\n%s", r.log)
	}
	r.zone.set(RecordName(sel, "example.test", ""), "")
	for end := r.now.Add(3 * time.Second); r.now.Before(end); r.now = r.now.Add(250 * time.Millisecond) {
		r.e.Step(context.Background())
	}
	if st := r.state(); st.Paused == nil || st.Paused.Selector != sel {
		t.Fatalf("the signing key's record is gone for 3s (check_interval 1s), and rotation has not noticed: %+v", st)
	}
}

// The new key's record, once served, removed by hand (or by a tool that
// rewrites the zone from its own copy) before the switch: rotation must
// say so and pause, not wait for ever for the secondaries to serve a
// record that is gone, with a log line that blames them.
func TestPendingRecordRemovedByHand(t *testing.T) {
	r := newRig(t, "ed25519", 1, nil)
	r.zone.lag = true
	r.run(11 * time.Second)
	p := r.state().Pending
	if p == nil || p.FirstSeenAt.IsZero() {
		t.Fatalf("want a pending key seen by the primary: %+v", r.state())
	}
	name := RecordName(p.Selector, "example.test", "")
	r.zone.set(name, "")
	r.run(3 * time.Second)
	st := r.state()
	if st.Paused == nil || st.Paused.Name != name {
		t.Fatalf("the pending key's record is gone from every server, and rotation waits on: %+v\n%s", st, r.log)
	}
	if sel, _ := r.signing(); sel != "s0" {
		t.Fatalf("switched to %s", sel)
	}
	// Put back, the rotation resumes and switches.
	r.zone.set(name, p.Record)
	r.run(3 * time.Second)
	if sel, _ := r.signing(); sel != p.Selector {
		t.Fatalf("signs with %s once the record is back, want %s\n%s", sel, p.Selector, r.log)
	}
}

// The daemon stopping (SIGTERM, or the old process of an upgrade) in the
// middle of an update is not a failed step: no failure in the state (the
// next process would wait retry before going on), and no publishing
// error counted (the alert on dkimmilter_rotation_publish_errors_total
// would fire after every unlucky upgrade).
func TestStopMidStepIsNoFailure(t *testing.T) {
	r := newRig(t, "ed25519", 0, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.e.opts.Publisher = func(cfg *config.Config, name string) (dnsupdate.Publisher, error) {
		return stopping{r.zone, cancel}, nil
	}
	for end := r.now.Add(11 * time.Second); r.now.Before(end) && ctx.Err() == nil; r.now = r.now.Add(250 * time.Millisecond) {
		r.e.Step(ctx)
	}
	if ctx.Err() == nil {
		t.Fatal("no update was made")
	}
	st := r.state()
	if st.Failures != 0 || r.metrics.pubErrors != 0 {
		t.Fatalf("the stop counted as a failure: %d failures, %d publishing errors, %q\n%s", st.Failures, r.metrics.pubErrors, st.LastError, r.log)
	}
}

// stopping is a publisher whose update is cut short by the daemon
// stopping: ctx is cancelled while it runs, and it fails with ctx's
// error, as dnsupdate's publishers do.
type stopping struct {
	*zone
	stop func()
}

func (s stopping) Apply(ctx context.Context, c dnsupdate.Change) (string, error) {
	s.stop()
	<-ctx.Done()
	return "", fmt.Errorf("[publish.bind] %s %s: %w", c.Action, c.Name, ctx.Err())
}

// oneUnknown is the rig's zone with one more name server that cannot be
// asked (it times out).
type oneUnknown struct{ *zone }

func (c oneUnknown) Lookup(ctx context.Context, selector, domain string) ([]Answer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	answers, err := c.zone.Lookup(ctx, selector, domain)
	return append(answers, Answer{Server: "ns9.example.test (192.0.2.9)", Err: errors.New("i/o timeout")}), err
}

// A name server that cannot be asked while the next selector is chosen
// says nothing about the names it holds: a date-based selector must still
// be found, and the step return (the publish step, and its prerequisite,
// look at the name again).
func TestChooseSelectorWithAServerDown(t *testing.T) {
	r := newRig(t, "ed25519", 1, nil)
	r.e.opts.Checker = oneUnknown{r.zone}
	r.now = r.now.Add(11 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { r.e.Step(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		cancel()
		<-done
		t.Fatalf("the step did not return in 2s: every selector was taken for one in DNS, as one server could not be asked")
	}
	if p := r.state().Pending; p == nil || p.Selector != "s"+r.now.Format("200601") {
		t.Fatalf("pending %+v, want the month's selector\n%s", r.state().Pending, r.log)
	}
}
