// Package rotation rotates signing keys unattended: per [keys.NAME] with
// rotate set, it makes the next key, publishes its record (through a
// dnsupdate.Publisher), waits until every authoritative server of the
// zone serves it, switches signing to it in one pointer store
// (keystore.Rotated), revokes the old record once mail signed with the old
// key can no longer be verified (sign.expire plus a margin after the
// switch), and deletes it later with the old key file.
//
// The daemon runs it (doc/rotation.md says why): the switch is made in
// the process that signs, so no message is ever signed with a key whose
// record is not visible, and no reload can race with it. Every step is
// written to a state file first (StateDir/NAME.json), so that a restart
// continues where the process stopped. A failed step leaves the current
// key signing and is retried with backoff; a record changed by hand
// pauses the key's rotation until it is put back, and nothing is revoked
// or deleted before its time.
package rotation

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dnsupdate"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// The states of a key, as the metrics and logs name them.
const (
	StatePending  = "pending"  // published, not yet served by every authoritative server; never signs
	StateActive   = "active"   // signs
	StateRetiring = "retiring" // signs no more; its record stays for mail in flight
	StateRevoked  = "revoked"  // its record is revoked (p= empty), to be deleted
)

// Metrics receives the per-key rotation metrics; milter.Metrics
// implements it.
type Metrics interface {
	// RotationKey sets the series of one selector of keys.NAME: its
	// state, its age and the time until its next step.
	RotationKey(key, domain, selector, state string, age, next time.Duration)
	// RotationForget drops the series of keys.NAME's selectors not in
	// keep (all of them for a nil keep).
	RotationForget(key, domain string, keep []string)
	RotationPaused(key, domain string, paused bool)
	RotationPublishError(key, domain string)
}

// Options are what the engine works with; tests replace each part.
type Options struct {
	// Rotated is where a switch puts the new key, for every Runtime's
	// Store.
	Rotated *keystore.Rotated
	// Publisher returns the publisher of the [publish.NAME] table name.
	Publisher func(cfg *config.Config, name string) (dnsupdate.Publisher, error)
	// Checker asks the zone's authoritative servers; nil: a DNSChecker
	// with the configuration's [dns] resolvers and AuthPort.
	Checker Checker
	// AuthPort is the port the zone's authoritative servers are asked
	// on (0: 53); end-to-end tests whose servers listen elsewhere set it.
	AuthPort int
	Metrics  Metrics // nil: none
	Log      *slog.Logger
	Now      func() time.Time // nil: time.Now
}

// Engine runs the rotation of every rotating key of a configuration.
type Engine struct {
	opts   Options
	newCfg atomic.Pointer[config.Config] // from Reload, applied by the next Step
	wake   chan struct{}

	mu   sync.Mutex // serialises Step
	cfg  *config.Config
	keys map[string]*keyRun
	// db is the rotation of keys with a query, per domain, under the
	// database's advisory lock (dbstate.go); dbkeys its domains, by
	// dbID, while this process holds the lock.
	db     *dbRotation
	dbkeys map[string]*keyRun
}

// keyRun is one rotating key.
type keyRun struct {
	name    string
	kc      *config.Key
	st      *State
	ignored string // why the state is left alone ("" if it is not)
	store   stateStore
	// conf is the key a key with a query has in its key table, which
	// signs until the first switch (nil for a key with a file).
	conf *keystore.PrivateKey
	pub  dnsupdate.Publisher
	// checkedAt is when the records of the signing and old keys were
	// last compared with what rotation published.
	checkedAt time.Time
	next      time.Time // when the engine next looks at the key
	said      string    // the last "waiting" line logged, said once
	dirty     bool      // st differs from the file
}

// New reads the state of every rotating key in cfg and puts each key
// that rotation made active in place of the configured one, before any
// message is signed. Problems are logged: rotation never stops the daemon.
func New(cfg *config.Config, opts Options) *Engine {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rotated == nil {
		opts.Rotated = &keystore.Rotated{}
	}
	e := &Engine{opts: opts, wake: make(chan struct{}, 1), keys: map[string]*keyRun{}, dbkeys: map[string]*keyRun{}}
	e.apply(cfg)
	return e
}

// Reload makes the next step use cfg: keys that start rotating, stop, or
// change their settings.
func (e *Engine) Reload(cfg *config.Config) {
	if e == nil {
		return
	}
	e.newCfg.Store(cfg)
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run steps until ctx ends, sleeping until the next step is due or a
// reload. While a key rotates, it holds StateDir/.lock (flock), so that
// two processes never rotate from the same state: the new process of an
// upgrade, or a second daemon, waits until the first one stops, then
// reads the states again. With no rotating key it touches nothing.
func (e *Engine) Run(ctx context.Context) {
	var unlock func()
	defer func() {
		if unlock != nil {
			unlock()
		}
		e.mu.Lock()
		e.closeDB()
		e.mu.Unlock()
	}()
	for {
		e.mu.Lock()
		if cfg := e.newCfg.Swap(nil); cfg != nil {
			e.apply(cfg)
		}
		rotating, dir := len(e.keys) > 0, e.cfg.Rotation.StateDir
		e.mu.Unlock()
		next := e.opts.Now().Add(time.Hour)
		if rotating && unlock == nil {
			if unlock = e.lock(ctx, dir); unlock == nil {
				return
			}
			// Read the states back: another process may have
			// stepped since they were read.
			e.mu.Lock()
			e.keys = map[string]*keyRun{}
			e.apply(e.cfg)
			e.mu.Unlock()
		}
		if unlock != nil || !rotating {
			// The keys with a query need no state directory: they
			// rotate under the database's lock (stepDB).
			next = e.Step(ctx)
		}
		// Bounded, so that a wall clock that jumps is caught up with.
		d := min(max(next.Sub(e.opts.Now()), 10*time.Millisecond), time.Hour)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-e.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// lock takes dir/.lock, waiting while another process holds it; nil
// when ctx ends first.
func (e *Engine) lock(ctx context.Context, dir string) (unlock func()) {
	said := ""
	for {
		unlock, err := lockDir(dir)
		if err == nil {
			return unlock
		}
		if msg := err.Error(); msg != said {
			said = msg
			e.opts.Log.Warn("rotation: waiting for the state directory", "state_dir", dir, "err", err,
				"hint", "another dkimmilter rotates from it (it stops when this one has taken over after an upgrade), or the daemon's user cannot write to [rotation] state_dir")
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Step makes every step that is due and returns when the next one is.
func (e *Engine) Step(ctx context.Context) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cfg := e.newCfg.Swap(nil); cfg != nil {
		e.apply(cfg)
	}
	next := e.stepKeys(ctx, e.keys)
	return minTime(next, e.stepDB(ctx))
}

// stepKeys makes the due steps of keys, in the order of their names.
func (e *Engine) stepKeys(ctx context.Context, keys map[string]*keyRun) time.Time {
	next := e.opts.Now().Add(time.Hour)
	names := make([]string, 0, len(keys))
	for n := range keys {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		kr := keys[n]
		if ctx.Err() != nil {
			break
		}
		if kr.ignored != "" {
			continue
		}
		now := e.opts.Now()
		if !kr.next.After(now) {
			kr.next = e.advance(ctx, kr, now)
		}
		e.report(kr, e.opts.Now())
		next = minTime(next, kr.next)
	}
	return next
}

// State returns a copy of keys.NAME's state, nil when it does not rotate.
func (e *Engine) State(name string) *State {
	e.mu.Lock()
	defer e.mu.Unlock()
	kr := e.keys[name]
	if kr == nil {
		return nil
	}
	st := *kr.st
	st.Retiring = slices.Clone(st.Retiring)
	st.Revoked = slices.Clone(st.Revoked)
	if st.Pending != nil {
		p := *st.Pending
		st.Pending = &p
	}
	if st.Paused != nil {
		p := *st.Paused
		st.Paused = &p
	}
	return &st
}

// apply takes cfg's rotating keys: each with its state read back (or a
// new one from the configured key), its active key put in place.
func (e *Engine) apply(cfg *config.Config) {
	old := e.keys
	oldDir := ""
	if e.cfg != nil {
		oldDir = e.cfg.Rotation.StateDir
	}
	e.cfg = cfg
	e.keys = map[string]*keyRun{}
	log := e.opts.Log
	if cfg.Rotation.StateDir == "" {
		for name := range old {
			e.opts.Rotated.Set(name, nil)
		}
		for _, name := range cfg.KeyNames() {
			if k := cfg.Keys[name]; k.Rotate > 0 && k.Query == "" {
				log.Error("rotation: no [rotation] state_dir: keys do not rotate", "key", name)
			}
		}
		return
	}
	for _, name := range cfg.KeyNames() {
		kc := cfg.Keys[name]
		if strings.Contains(kc.Domain, "%") || strings.Contains(kc.File, "%") || kc.Query != "" || kc.File == "" {
			continue // only keys with a fixed domain and file rotate
		}
		kr := old[name]
		delete(old, name)
		// A state file moved away starts the key over from its
		// configured key at the reload, as the README and the pause's
		// hint say (one never written yet is not gone).
		movedAway := false
		if kr != nil && !kr.dirty && oldDir == cfg.Rotation.StateDir {
			_, err := os.Stat(statePath(cfg.Rotation.StateDir, name))
			movedAway = errors.Is(err, fs.ErrNotExist)
		}
		if kr != nil && kr.ignored == "" && kr.st.Domain == kc.Domain && kc.Rotate > 0 && !movedAway {
			kr.kc = kc
			kr.store = e.fileStore()
			kr.pub = nil // the [publish.NAME] table may have changed
			kr.next = time.Time{}
			e.keys[name] = kr
			delete(old, name)
			continue
		}
		if kr != nil && e.opts.Metrics != nil {
			// Its series as it was: the key is read again below, and
			// one that no longer rotates (rotate removed, its domain
			// changed) is not reported again.
			e.opts.Metrics.RotationForget(name, kr.st.Domain, nil)
		}
		// The key that signs now stays in place while the state is
		// read: it is replaced once, by the state's key or, when there
		// is none to use, by the configured one. Putting the configured
		// key back first would let it sign meanwhile, though its record
		// may have been revoked long ago.
		st, err := readState(cfg.Rotation.StateDir, name)
		if err != nil {
			log.Error("rotation: cannot read the key's state: its configured key signs and it does not rotate", "key", name, "domain", kc.Domain, "err", err)
			e.opts.Rotated.Set(name, nil)
			continue
		}
		if st == nil && kc.Rotate <= 0 {
			e.opts.Rotated.Set(name, nil)
			continue
		}
		kr = &keyRun{name: name, kc: kc, st: st, store: e.fileStore()}
		e.keys[name] = kr
		if st == nil {
			kr.st = e.initial(kc)
			kr.dirty = true
		}
		if kr.st.Domain != kc.Domain {
			kr.ignored = fmt.Sprintf("the state is for domain %s, keys.%s signs for %s", kr.st.Domain, name, kc.Domain)
			log.Error("rotation: state left alone: the key's domain changed", "key", name, "domain", kc.Domain, "state", statePath(cfg.Rotation.StateDir, name),
				"state_domain", kr.st.Domain, "hint", "move the state file away to rotate keys."+name+" from its configured key, or put the domain back")
			e.opts.Rotated.Set(name, nil)
			continue
		}
		pk, err := keystore.ReadPrivateKey(kr.st.Active.File)
		if err != nil {
			kr.ignored = "the active key cannot be read: " + err.Error()
			log.Error("rotation: the key rotation made active cannot be read: the configured key signs instead, and rotation waits", "key", name, "domain", kc.Domain,
				"selector", kr.st.Active.Selector, "file", kr.st.Active.File, "err", err,
				"hint", "restore the file (its record is published), or move "+statePath(cfg.Rotation.StateDir, name)+" away to start over from the configured key")
			e.opts.Rotated.Set(name, nil)
			continue
		}
		e.opts.Rotated.Set(name, &keystore.Key{Name: name, Domain: kc.Domain, Selector: kr.st.Active.Selector, File: kr.st.Active.File, PrivateKey: pk})
		if kc.Rotate <= 0 {
			kr.ignored = "rotate is not set"
			log.Warn("rotation: keys."+name+" no longer rotates; the key rotation made last goes on signing", "key", name, "domain", kc.Domain,
				"selector", kr.st.Active.Selector, "file", kr.st.Active.File,
				"hint", "to sign with the configured key again, make sure its record is published, then move "+statePath(cfg.Rotation.StateDir, name)+" away and reload")
		} else if kr.st.Active.Selector != kc.Selector && !kr.st.Active.Made {
			log.Warn("rotation: the state's key is not the configured one; the state's goes on", "key", name, "domain", kc.Domain, "selector", kr.st.Active.Selector, "configured", kc.Selector)
		}
	}
	for name, kr := range old {
		// Gone from the configuration, or its domain changed: its
		// state stays on disk, untouched.
		e.opts.Rotated.Set(name, nil)
		if m := e.opts.Metrics; m != nil {
			m.RotationForget(name, kr.st.Domain, nil)
		}
		log.Warn("rotation: keys."+name+" is no longer a rotating key of the configuration: its state is left as it is", "key", name, "domain", kr.st.Domain,
			"state", statePath(cfg.Rotation.StateDir, name))
	}
}

// fileStore keeps the states of keys with a file.
func (e *Engine) fileStore() *fileStore {
	return &fileStore{dir: e.cfg.Rotation.StateDir, rotated: e.opts.Rotated}
}

// initial is the state of a key that has not rotated yet: its configured
// key signs since its file was made.
func (e *Engine) initial(kc *config.Key) *State {
	made := e.opts.Now()
	if fi, err := os.Stat(kc.File); err == nil && fi.ModTime().Before(made) {
		made = fi.ModTime()
	}
	return &State{Key: kc.Name, Domain: kc.Domain, Active: KeyState{Selector: kc.Selector, File: kc.File, Created: made, Since: made}}
}

// removeFile removes an old key's file; tests make it crash.
var removeFile = os.Remove

// errPaused: the step stopped on a record changed by hand (State.Paused).
var errPaused = errors.New("rotation paused")

// publishError is a failed Apply, or no publisher: counted apart.
type publishError struct{ err error }

func (p *publishError) Error() string { return p.err.Error() }
func (p *publishError) Unwrap() error { return p.err }

// advance makes kr's due steps and returns when it is due next.
func (e *Engine) advance(ctx context.Context, kr *keyRun, now time.Time) time.Time {
	st := kr.st
	ci := e.cfg.Rotation.CheckInterval
	if ci <= 0 {
		ci = time.Minute
	}
	if kr.dirty {
		if err := e.save(kr); err != nil {
			return e.fail(kr, now, err)
		}
	}
	if !st.RetryAt.IsZero() && now.Before(st.RetryAt) {
		return st.RetryAt
	}
	if st.Paused != nil && !e.resume(ctx, kr, now) {
		return now.Add(ci)
	}
	next, err := e.work(ctx, kr, now, ci)
	switch {
	case errors.Is(err, errPaused):
		return now.Add(ci)
	case err != nil && ctx.Err() != nil:
		// Cut short by the daemon stopping (or handing over to the
		// new process of an upgrade): not a failure, and no backoff
		// for whoever takes the step up again.
		return now
	case err != nil:
		return e.fail(kr, now, err)
	}
	if st.Failures > 0 {
		e.opts.Log.Info("rotation: working again after failures", "key", kr.name, "domain", st.Domain, "failures", st.Failures, "next", next.UTC().Format(time.RFC3339))
		st.Failures, st.RetryAt, st.LastError = 0, time.Time{}, ""
		if err := e.save(kr); err != nil {
			return e.fail(kr, now, err)
		}
	}
	return next
}

// fail records a failed step: the current key goes on signing, and the
// step is tried again after Retry, doubled per failure up to RetryMax.
func (e *Engine) fail(kr *keyRun, now time.Time, err error) time.Time {
	st := kr.st
	st.Failures++
	r, rmax := e.cfg.Rotation.Retry, e.cfg.Rotation.RetryMax
	if r <= 0 {
		r = time.Minute
	}
	if rmax < r {
		rmax = r
	}
	wait := r
	for i := 1; i < st.Failures && wait < rmax; i++ {
		wait *= 2
	}
	wait = min(wait, rmax)
	st.RetryAt, st.LastError = now.Add(wait), err.Error()
	var pe *publishError
	if errors.As(err, &pe) && e.opts.Metrics != nil {
		e.opts.Metrics.RotationPublishError(kr.name, st.Domain)
	}
	if serr := e.save(kr); serr != nil && !errors.Is(serr, err) {
		e.opts.Log.Error("rotation: cannot write the state", "key", kr.name, "domain", st.Domain, "err", serr)
	}
	e.opts.Log.Warn("rotation: step failed; the current key goes on signing, and the step is tried again", "key", kr.name, "domain", st.Domain,
		"selector", st.Active.Selector, "err", err, "failures", st.Failures, "next", st.RetryAt.UTC().Format(time.RFC3339))
	return st.RetryAt
}

// save writes kr's state.
func (e *Engine) save(kr *keyRun) error {
	if err := kr.store.save(kr.st); err != nil {
		kr.dirty = true
		return err
	}
	kr.dirty = false
	return nil
}

// work makes the due steps, oldest keys first: delete, revoke, check,
// publish the next key, switch.
func (e *Engine) work(ctx context.Context, kr *keyRun, now time.Time, ci time.Duration) (time.Time, error) {
	st, kc := kr.st, kr.kc
	next := now.Add(time.Hour)
	// (4) Delete the revoked records whose time has come, and the key
	// files rotation made.
	for i := 0; i < len(st.Revoked); {
		r := st.Revoked[i]
		if now.Before(r.DeleteAt) {
			next = minTime(next, r.DeleteAt)
			i++
			continue
		}
		if err := e.change(ctx, kr, now, dnsupdate.Delete, r.Selector, "", r.RevokedRecord, r.Record); err != nil {
			return next, err
		}
		// The key file goes before the state forgets it: after a crash
		// in between, the state still lists the key and the deletion
		// is made again (the record is found gone), where the other
		// order would leave the old private key behind for good, to be
		// taken up again as the next key when its selector comes round.
		removed := kr.store.removeKey(r)
		if strings.HasPrefix(removed, "could not") {
			e.opts.Log.Warn("rotation: cannot remove the old key file", "key", kr.name, "domain", st.Domain, "file", r.File, "err", removed)
		}
		st.Revoked = slices.Delete(st.Revoked, i, i+1)
		if err := e.save(kr); err != nil {
			return next, err
		}
		e.step(kr, "rotation: old key's revoked record deleted", r.Selector, e.nextDate(kr, now), "file", r.File, "key_file", removed)
	}
	// (3) Revoke the retiring records whose time has come.
	for i := 0; i < len(st.Retiring); {
		r := st.Retiring[i]
		if now.Before(r.RevokeAt) {
			next = minTime(next, r.RevokeAt)
			i++
			continue
		}
		revoked := keystore.RevokedRecord(recordKeyType(r.Record))
		if err := e.change(ctx, kr, now, dnsupdate.Revoke, r.Selector, revoked, r.Record); err != nil {
			return next, err
		}
		r.RevokedRecord, r.RevokedAt, r.DeleteAt = revoked, now, now.Add(e.cfg.Rotation.RevokedFor)
		st.Retiring = slices.Delete(st.Retiring, i, i+1)
		st.Revoked = append(st.Revoked, r)
		if err := e.save(kr); err != nil {
			return next, err
		}
		next = minTime(next, r.DeleteAt)
		e.step(kr, "rotation: old key revoked (p= empty)", r.Selector, r.DeleteAt, "step", "delete the revoked record")
	}
	// The records of the signing and old keys are still what rotation
	// published: a record changed by hand pauses the rotation.
	if !now.Before(kr.checkedAt.Add(ci)) {
		if err := e.checkRecords(ctx, kr, now); err != nil {
			return next, err
		}
		kr.checkedAt = now
	}
	if len(st.Retiring)+len(st.Revoked) > 0 || st.Active.Made {
		next = minTime(next, kr.checkedAt.Add(ci))
	}
	// (1) The next key, when the active one has signed long enough.
	if st.Pending == nil && kc.Rotate > 0 {
		due := st.Active.Since.Add(kc.Rotate)
		if now.Before(due) {
			return minTime(next, due), nil
		}
		wait, err := e.makePending(ctx, kr, now)
		if err != nil || st.Pending == nil {
			return minTime(next, wait), err
		}
	}
	if st.Pending == nil {
		return next, nil
	}
	// (2) Publish it, wait until every authoritative server serves it,
	// switch.
	if st.Pending.PublishedAt.IsZero() {
		if err := e.change(ctx, kr, now, dnsupdate.Add, st.Pending.Selector, st.Pending.Record, "", st.Pending.Record); err != nil {
			return next, err
		}
		// When the update was made: the ttl wait before the switch
		// counts from it, not from the step's start.
		st.Pending.PublishedAt = e.opts.Now()
		if err := e.save(kr); err != nil {
			return next, err
		}
		e.step(kr, "rotation: new key's record published; waiting until every authoritative server serves it", st.Pending.Selector, now.Add(ci),
			"name", RecordName(st.Pending.Selector, st.Domain, kc.Delegate), "step", "check")
	}
	switched, err := e.trySwitch(ctx, kr, now)
	if err != nil {
		return next, err
	}
	if !switched {
		return minTime(next, now.Add(ci)), nil
	}
	// From now on the new key's record, and the old one, are checked
	// every check_interval as well.
	return minTime(next, minTime(kr.checkedAt.Add(ci), e.nextDate(kr, now))), nil
}

// nextDate is when kr's next step is due, for the log.
func (e *Engine) nextDate(kr *keyRun, now time.Time) time.Time {
	st := kr.st
	var next time.Time
	if kr.kc.Rotate > 0 {
		next = st.Active.Since.Add(kr.kc.Rotate)
	}
	for _, r := range st.Retiring {
		next = minTime(next, r.RevokeAt)
	}
	for _, r := range st.Revoked {
		next = minTime(next, r.DeleteAt)
	}
	if st.Pending != nil || next.IsZero() {
		return now
	}
	return next
}

// step logs one step of the rotation, at INFO, with the date of the next.
func (e *Engine) step(kr *keyRun, msg, selector string, next time.Time, attrs ...any) {
	kr.said = ""
	e.opts.Log.Info(msg, append([]any{"key", kr.name, "domain", kr.st.Domain, "selector", selector,
		"active", kr.st.Active.Selector, "next", next.UTC().Format(time.RFC3339)}, attrs...)...)
}

// once logs a waiting line, once until the key's next step.
func (e *Engine) once(kr *keyRun, level slog.Level, msg string, attrs ...any) {
	line := msg + fmt.Sprint(attrs...)
	if kr.said == line {
		return
	}
	kr.said = line
	e.opts.Log.Log(context.Background(), level, msg, append([]any{"key", kr.name, "domain", kr.st.Domain}, attrs...)...)
}

// RecordName is where the record of selector lives for a key of domain:
// SELECTOR._domainkey.DOMAIN, or, delegated to a provider's zone,
// SELECTOR.DOMAIN-WITH-DASHES._domainkey.DELEGATE, which the customer's
// SELECTOR._domainkey.DOMAIN is a CNAME to.
func RecordName(selector, domain, delegate string) string {
	sel, dom := lookupTarget(selector, domain, delegate)
	return dkim.DNSName(sel, dom)
}

// lookupTarget is RecordName as the selector and domain a Checker asks
// (a selector may hold dots, RFC 6376 §3.1).
func lookupTarget(selector, domain, delegate string) (string, string) {
	if delegate == "" {
		return selector, domain
	}
	return selector + "." + strings.ReplaceAll(strings.TrimSuffix(domain, "."), ".", "-"), delegate
}

// lookup asks the servers of the zone that holds selector's record.
func (e *Engine) lookup(ctx context.Context, kr *keyRun, selector string) ([]Answer, error) {
	sel, dom := lookupTarget(selector, kr.st.Domain, kr.kc.Delegate)
	answers, err := e.checker().Lookup(ctx, sel, dom)
	if err != nil {
		return nil, fmt.Errorf("asking the authoritative servers of %s: %w", dkim.DNSName(sel, dom), err)
	}
	return answers, nil
}

// change applies one record change, after checking that the zone's
// servers serve what rotation expects there (before), or already what the
// change makes (after: an earlier run made it and stopped before writing
// its state). lag lists a value a server that lags may still serve.
// Anything else pauses the rotation: a record changed by hand is never
// overwritten, not even by a command that ignores Expect.
func (e *Engine) change(ctx context.Context, kr *keyRun, now time.Time, action dnsupdate.Action, selector, value, expect string, lag ...string) error {
	name := RecordName(selector, kr.st.Domain, kr.kc.Delegate)
	before, after := expect, value // absentValue for Add's before, Delete's after
	answers, err := e.lookup(ctx, kr, selector)
	if err != nil {
		return err
	}
	allowed := append([]string{after}, lag...)
	j := judge(answers, before, allowed...)
	if j.odd != nil {
		return e.pause(kr, now, name, selector, action.String(), append([]string{before}, allowed...), j.odd)
	}
	if j.known == 0 {
		return fmt.Errorf("%s: no authoritative server answered: %s", name, strings.Join(j.unknown, "; "))
	}
	if done := judge(answers, after); done.all {
		return nil
	}
	pub, err := e.publisher(kr)
	if err != nil {
		return &publishError{err}
	}
	c := dnsupdate.Change{Action: action, Name: name, Value: value, Expect: expect}
	out, err := pub.Apply(ctx, c)
	if errors.Is(err, dnsupdate.ErrChanged) {
		// Made by an earlier run, or changed by hand since the look.
		if answers, lerr := e.lookup(ctx, kr, selector); lerr == nil {
			j := judge(answers, after, append([]string{before}, lag...)...)
			if j.odd != nil {
				return e.pause(kr, now, name, selector, action.String(), append([]string{before}, allowed...), j.odd)
			}
			if j.any {
				return nil
			}
		}
	}
	if err != nil {
		// The next try makes the publisher again: the fix the error
		// asks for (a TSIG key file with the right secret, say) is read
		// then, with no reload.
		kr.pub = nil
		return &publishError{fmt.Errorf("%s %s with [publish.%s]: %w", action, name, kr.kc.Publish, err)}
	}
	if out != "" {
		e.opts.Log.Debug("rotation: publisher output", "key", kr.name, "action", action.String(), "name", name, "output", out)
	}
	return nil
}

// checker is the Checker of Options, or the DNS.
func (e *Engine) checker() Checker {
	if e.opts.Checker != nil {
		return e.opts.Checker
	}
	return &DNSChecker{Nameservers: e.cfg.DNS.Nameservers, Timeout: e.cfg.DNS.Timeout, Port: e.opts.AuthPort}
}

// publisher returns kr's publisher, made once per configuration, and
// again after a failed change.
func (e *Engine) publisher(kr *keyRun) (dnsupdate.Publisher, error) {
	if kr.pub != nil {
		return kr.pub, nil
	}
	if e.opts.Publisher == nil {
		return nil, errors.New("no publisher")
	}
	pub, err := e.opts.Publisher(e.cfg, kr.kc.Publish)
	if err != nil {
		return nil, fmt.Errorf("keys.%s: publish = %q: %w", kr.name, kr.kc.Publish, err)
	}
	kr.pub = pub
	return pub, nil
}

// pause stops kr's rotation on a record that is not what rotation
// expects; resume starts it again once it is.
func (e *Engine) pause(kr *keyRun, now time.Time, name, selector, step string, expected []string, odd *Answer) error {
	found := display(odd)
	kr.st.Paused = &Paused{Name: name, Selector: selector, Step: step, Expected: expected, Found: found, Server: odd.Server, Since: now}
	if err := e.save(kr); err != nil {
		e.opts.Log.Error("rotation: cannot write the state", "key", kr.name, "err", err)
	}
	var want []string
	for _, v := range expected {
		if v == absentValue {
			v = "no TXT record"
		}
		want = append(want, v)
	}
	hint := "put the record back as rotation expects it, and rotation resumes by itself; or, to start over from the configured key, " + kr.store.startOver(kr.st)
	if selector == kr.st.Active.Selector {
		hint = "mail signed now needs this record: put it back (" + name + ". TXT \"" + expected[0] + "\", in strings of at most 255 bytes), and rotation resumes by itself"
	}
	e.opts.Log.Error("rotation paused: a record is not what rotation published, and rotation does not overwrite it", "key", kr.name, "domain", kr.st.Domain,
		"name", name, "selector", selector, "step", step, "expected", strings.Join(want, " or "), "found", found, "server", odd.Server, "hint", hint)
	return errPaused
}

// resume looks at the paused record again: true when it is what rotation
// expects, and the rotation goes on.
func (e *Engine) resume(ctx context.Context, kr *keyRun, now time.Time) bool {
	p := kr.st.Paused
	answers, err := e.lookup(ctx, kr, p.Selector)
	if err != nil {
		return false
	}
	j := judge(answers, p.Expected[0], p.Expected[1:]...)
	if j.odd != nil || j.known == 0 {
		return false
	}
	kr.st.Paused = nil
	if err := e.save(kr); err != nil {
		kr.st.Paused = p
		return false
	}
	e.opts.Log.Info("rotation resumed: the record is what rotation expects again", "key", kr.name, "domain", kr.st.Domain, "name", p.Name, "paused_for", now.Sub(p.Since).Round(time.Second).String())
	return true
}

// checkRecords compares the records of the signing key (when rotation
// published it) and of the old keys with what rotation published.
func (e *Engine) checkRecords(ctx context.Context, kr *keyRun, now time.Time) error {
	st := kr.st
	type expect struct {
		sel, want string
		lag       []string
	}
	var list []expect
	if st.Active.Made {
		list = append(list, expect{st.Active.Selector, st.Active.Record, nil})
	}
	for _, r := range st.Retiring {
		list = append(list, expect{r.Selector, r.Record, nil})
	}
	for _, r := range st.Revoked {
		list = append(list, expect{r.Selector, r.RevokedRecord, []string{r.Record}})
	}
	for _, x := range list {
		answers, err := e.lookup(ctx, kr, x.sel)
		if err != nil {
			return err
		}
		if j := judge(answers, x.want, x.lag...); j.odd != nil {
			return e.pause(kr, now, RecordName(x.sel, st.Domain, kr.kc.Delegate), x.sel, "check", append([]string{x.want}, x.lag...), j.odd)
		}
	}
	return nil
}

// makePending makes the next key and writes it into the state as
// pending (not published yet). With fixed selectors all in use, it
// returns when one is free again.
func (e *Engine) makePending(ctx context.Context, kr *keyRun, now time.Time) (time.Time, error) {
	st := kr.st
	active, err := readKey(st.Active, kr.conf)
	if err != nil {
		return now, fmt.Errorf("reading the active key, to make the next one of the same type: %w", err)
	}
	kind, bits := active.KeyType, active.Bits
	if kind == "rsa" {
		// RFC 8301 §3.2: signers should use 2048 bits.
		bits = max(bits, dkim.RecommendedRSABits)
	}
	sel, wait := e.chooseSelector(ctx, kr, now, kr.store.keyDir(st.Domain), kind)
	if sel == "" {
		e.once(kr, slog.LevelInfo, "rotation: due, but every selector is in use: waiting until an old key's record is deleted",
			"selectors", strings.Join(kr.kc.Selectors, ","), "next", wait.UTC().Format(time.RFC3339))
		return wait, nil
	}
	pk, err := keystore.Generate(kind, bits)
	if err != nil {
		return now, err
	}
	pending, pk, err := kr.store.newKey(st, sel, pk)
	if err != nil {
		return now, err
	}
	path := pending.File
	pending.Record, pending.Created = keystore.Record(pk), now
	st.Pending = &pending
	if err := e.save(kr); err != nil {
		st.Pending = nil
		return now, err
	}
	e.step(kr, "rotation: due; new key made", sel, now, "file", path, "type", kind, "bits", pk.Bits, "step", "publish")
	return now, nil
}

// chooseSelector picks the next selector: the next free one of Selectors
// (free: no key of the rotation, nor any other key of the domain, uses
// it), or a date-based one with no record yet (keystore.SelectorFor). ""
// when none is free, with when to look again.
func (e *Engine) chooseSelector(ctx context.Context, kr *keyRun, now time.Time, dir, kind string) (string, time.Time) {
	st := kr.st
	used := []string{st.Active.Selector}
	for _, r := range append(slices.Clone(st.Retiring), st.Revoked...) {
		used = append(used, r.Selector)
	}
	for _, name := range e.cfg.KeyNames() {
		if k := e.cfg.Keys[name]; name != kr.name && k.Domain == st.Domain && k.Selector != "" {
			used = append(used, k.Selector)
		}
	}
	if sels := kr.kc.Selectors; len(sels) > 0 {
		start := slices.Index(sels, st.Active.Selector) + 1
		for i := range sels {
			s := sels[(start+i)%len(sels)]
			if !slices.ContainsFunc(used, func(u string) bool { return strings.EqualFold(u, s) }) {
				return s, now
			}
		}
		wait := now.Add(time.Hour)
		for _, r := range st.Revoked {
			wait = minTime(wait, r.DeleteAt)
		}
		for _, r := range st.Retiring {
			wait = minTime(wait, r.RevokeAt.Add(e.cfg.Rotation.RevokedFor))
		}
		return "", wait
	}
	inDNS := func(sel string) bool {
		answers, err := e.lookup(ctx, kr, sel)
		if err != nil {
			return false // the publish step looks again
		}
		// A record at a server that answers. A server that cannot be
		// asked says nothing: counted as "in DNS", it made every name
		// taken, and SelectorFor looked for a free one for ever.
		return judge(answers, absentValue).odd != nil
	}
	return keystore.SelectorFor(now, dir, kind, used, inDNS), now
}

// trySwitch switches signing to the pending key once every authoritative
// server serves its record and it matches the key's file.
func (e *Engine) trySwitch(ctx context.Context, kr *keyRun, now time.Time) (bool, error) {
	st := kr.st
	p := st.Pending
	name := RecordName(p.Selector, st.Domain, kr.kc.Delegate)
	answers, err := e.lookup(ctx, kr, p.Selector)
	if err != nil {
		return false, err
	}
	j := judge(answers, p.Record, absentValue)
	if j.odd != nil {
		return false, e.pause(kr, now, name, p.Selector, "check", []string{p.Record, absentValue}, j.odd)
	}
	if !j.any && j.known > 0 && !p.FirstSeenAt.IsZero() {
		// Served once, now by no server that answers: removed by hand,
		// or by a tool that rewrites the zone from its own copy. Not
		// published again over it, and not waited for as a lagging
		// secondary would be.
		for i := range answers {
			if _, ok := answers[i].value(); ok {
				return false, e.pause(kr, now, name, p.Selector, "check", []string{p.Record}, &answers[i])
			}
		}
	}
	if j.any && p.FirstSeenAt.IsZero() {
		p.FirstSeenAt = now
		if err := e.save(kr); err != nil {
			return false, err
		}
	}
	if !j.all {
		var lag []string
		for _, a := range answers {
			if v, ok := a.value(); !ok || v != normalize(p.Record) {
				lag = append(lag, a.Server)
			}
		}
		e.once(kr, slog.LevelInfo, "rotation: waiting until every authoritative server serves the new key's record", "selector", p.Selector, "name", name,
			"not_yet", strings.Join(lag, ", "))
		return false, nil
	}
	// A resolver that cached what was at the name before (a reused
	// selector's revoked record) keeps it for up to the TTL, and one that
	// cached its absence (the name asked before the record was added, or
	// after a reused selector's record was deleted) keeps that for the
	// zone's negative TTL (RFC 2308 §5): either would answer a verifier
	// "no key" for mail the new key signs. It signs once both have run out.
	// https://www.rfc-editor.org/rfc/rfc2308#section-5
	var wait time.Duration
	if pc := e.cfg.Publishers[kr.kc.Publish]; pc != nil {
		wait = pc.TTL
	}
	if nc, ok := e.checker().(negativeTTLer); ok {
		neg, err := nc.NegativeTTL(ctx, name)
		if err != nil {
			return false, fmt.Errorf("finding the negative TTL of the zone of %s (its SOA): %w", name, err)
		}
		wait = max(wait, neg)
	}
	if now.Before(p.PublishedAt.Add(wait)) {
		e.once(kr, slog.LevelDebug, "rotation: the new key's record is served everywhere; waiting for what resolvers may have cached to expire", "selector", p.Selector,
			"wait", wait.String(), "until", p.PublishedAt.Add(wait).UTC().Format(time.RFC3339))
		return false, nil
	}
	if kr.kc.Delegate != "" {
		// The customer's name must lead there too: a CNAME published
		// once (SELECTOR._domainkey.DOMAIN → the provider's name).
		cust, err := e.checker().Lookup(ctx, p.Selector, st.Domain)
		if err != nil {
			return false, fmt.Errorf("asking the authoritative servers of %s: %w", dkim.DNSName(p.Selector, st.Domain), err)
		}
		if !judge(cust, p.Record).all {
			e.once(kr, slog.LevelWarn, "rotation: the customer's name does not lead to the new key's record yet: is its CNAME published?", "selector", p.Selector,
				"name", dkim.DNSName(p.Selector, st.Domain), "cname_to", name+".",
				"hint", "the customer publishes once: "+dkim.DNSName(p.Selector, st.Domain)+". CNAME "+name+".")
			return false, nil
		}
	}
	pk, err := readKey(*p, nil)
	if err != nil {
		return false, fmt.Errorf("reading the new key: %w", err)
	}
	if !matches(p.Record, pk) {
		return false, fmt.Errorf("%s: the published record is not the public key of the new key (selector %s, %s): to start over, %s",
			name, p.Selector, keyWhere(*p), kr.store.startOver(st))
	}
	// The old record as the servers serve it: what its revocation
	// expects to replace.
	old := st.Active
	if old.Record == "" || !old.Made {
		if ans, err := e.lookup(ctx, kr, old.Selector); err == nil {
			if rec := servedRecord(ans); rec != "" {
				old.Record = rec
			}
		}
		if old.Record == "" {
			if opk, err := readKey(old, kr.conf); err == nil {
				old.Record = keystore.Record(opk)
			}
		}
	}
	// The lookups above take time: the old key signed until now, and
	// its record must stay sign.expire + margin from now on.
	now = e.opts.Now()
	old.SwitchedAt = now
	// Mail signed until now carries x= up to sign.expire later, and may
	// wait in queues as long: its key stays until then, plus the margin.
	// Signers that cache the key (those of a key with a query, on every
	// host) may go on with the old one for the store's spread after
	// the switch.
	old.RevokeAt = now.Add(e.cfg.Sign.Expire + e.cfg.Rotation.Margin + kr.store.spread())
	prev := *st
	next := *p
	next.Since = now
	st.Active, st.Pending = next, nil
	st.Retiring = append(slices.Clone(st.Retiring), old)
	// The state first: after a crash, the new key is the one that signs.
	if err := e.save(kr); err != nil {
		*st = prev
		return false, err
	}
	kr.store.switched(kr.name, &keystore.Key{Name: kr.name, Domain: st.Domain, Selector: next.Selector, File: next.File, PrivateKey: pk})
	// The old key signed until the switch took effect, after the state
	// was written (an fsync, or a database round trip): its record's
	// time counts from then. Saved again; if that fails, the revocation
	// is early by the write's duration only.
	if done := e.opts.Now(); done.After(now) {
		r := &st.Retiring[len(st.Retiring)-1]
		r.SwitchedAt, r.RevokeAt = done, r.RevokeAt.Add(done.Sub(now))
		if err := e.save(kr); err != nil {
			e.opts.Log.Warn("rotation: the switch's time could not be written again", "key", kr.name, "domain", st.Domain, "err", err)
		}
		old = *r
	}
	e.step(kr, "rotation: switched: the new key signs", next.Selector, old.RevokeAt, "old", old.Selector, "step", "revoke "+old.Selector)
	return true, nil
}

// matches reports whether rec holds pk's public key.
func matches(rec string, pk *keystore.PrivateKey) bool {
	kr, err := dkim.ParseKeyRecord(rec)
	if err != nil || kr.Key == nil {
		return false
	}
	pub, ok := pk.Signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(kr.Key)
}

// recordKeyType is a record's k=, "rsa" when it has none.
func recordKeyType(rec string) string {
	if kr, err := dkim.ParseKeyRecord(rec); kr != nil && kr.KeyType != "" && err == nil {
		return kr.KeyType
	}
	for _, t := range strings.Split(rec, ";") {
		if k, v, ok := strings.Cut(t, "="); ok && strings.TrimSpace(k) == "k" && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return "rsa"
}

// report sets kr's metrics.
func (e *Engine) report(kr *keyRun, now time.Time) {
	m := e.opts.Metrics
	if m == nil {
		return
	}
	st := kr.st
	var keep []string
	set := func(k KeyState, state string, next time.Time) {
		keep = append(keep, k.Selector)
		d := time.Duration(0)
		if !next.IsZero() {
			d = max(next.Sub(now), 0)
		}
		m.RotationKey(kr.name, st.Domain, k.Selector, state, now.Sub(k.Created), d)
	}
	var activeNext time.Time
	if kr.kc.Rotate > 0 && st.Pending == nil {
		activeNext = st.Active.Since.Add(kr.kc.Rotate)
	}
	set(st.Active, StateActive, activeNext)
	if st.Pending != nil {
		set(*st.Pending, StatePending, kr.next)
	}
	for _, r := range st.Retiring {
		set(r, StateRetiring, r.RevokeAt)
	}
	for _, r := range st.Revoked {
		set(r, StateRevoked, r.DeleteAt)
	}
	m.RotationForget(kr.name, st.Domain, keep)
	m.RotationPaused(kr.name, st.Domain, st.Paused != nil)
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// keyWhere says where a key is kept, for messages.
func keyWhere(k KeyState) string {
	if k.File != "" {
		return "file " + k.File
	}
	return "kept in the rotation state"
}
