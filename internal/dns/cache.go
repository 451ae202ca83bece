// A TTL-honouring cache of key lookups in front of a Resolver.
//
// Every signed message from a domain asks for the same key, so answers are
// kept for their TTL. NXDOMAIN and NODATA are kept briefly too (a missing key
// stays missing for the next message of a burst), but temporary failures
// never are: one SERVFAIL must not turn into minutes of temperrors.
// Concurrent lookups of one name share a single upstream query.
//
// Serve-stale (RFC 8767): with MaxStale set, a key record is kept past its
// TTL for up to MaxStale, and used, marked Stale, when the refresh fails for
// a reason a retry could fix (timeout, SERVFAIL, REFUSED, the resolver not
// reachable). Any answer from DNS replaces it: a new record, a revocation
// (an empty p= is a record like any other), NXDOMAIN or NODATA, or a TTL 0
// answer (which drops it). Only positive answers are served stale; a name
// that did not exist is asked again once its negative TTL is over. After a
// failed refresh the stale record is served without asking again for
// staleRetry (RFC 8767 §5's failure recheck timer), so an outage does not
// cost every message the whole lookup timeout.
// https://www.rfc-editor.org/rfc/rfc8767#section-5
//
// Memory stays bounded by MaxEntries: stale records count against it, an
// entry is dropped for good once its TTL plus MaxStale has passed (the
// sweep of a full cache starts with those), and beyond that the oldest
// inserted goes first. A domain whose mail stops coming is gone within
// TTL+MaxStale.

package dns

import (
	"container/list"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// CacheOptions tunes a Cache. Zero values select the defaults.
type CacheOptions struct {
	MaxEntries  int              // 0 ⇒ 10000
	MaxTTL      time.Duration    // 0 ⇒ 1h; TTLs are clamped to this
	NegativeTTL time.Duration    // how long NXDOMAIN/NODATA (IsNotFound) is cached; 0 ⇒ 60s
	MaxStale    time.Duration    // how long past its TTL a record may be served stale; 0 ⇒ never
	Now         func() time.Time // nil ⇒ time.Now (the clock seam for tests)
}

// CacheStats is a snapshot of cache counters. A lookup that joins another
// caller's in-flight query counts as a miss.
type CacheStats struct {
	Hits    uint64
	Misses  uint64
	Entries int
}

// staleRetry is how long a stale record is served after a failed refresh
// before the resolver is asked again; RFC 8767 §5 suggests 30 seconds.
const staleRetry = 30 * time.Second

// flightBackstop bounds a shared upstream lookup, whose context is detached
// from its callers. Client has its own, shorter bound; this only stops
// an upstream without one from pinning a name forever.
const flightBackstop = time.Minute

// Cache is a Resolver that caches another one. It is safe for
// concurrent use.
type Cache struct {
	next        Resolver
	maxEntries  int
	maxTTL      time.Duration
	negativeTTL time.Duration
	maxStale    time.Duration
	now         func() time.Time

	// mu guards everything below. It is never held across an upstream query.
	mu       sync.Mutex
	entries  map[string]*cacheEntry
	order    *list.List // keys, oldest insertion first
	inflight map[string]*cacheFlight
	// minDead is a lower bound on the dead time of every entry (zero:
	// unknown), so a full cache only sweeps when something can actually
	// have died.
	minDead      time.Time
	hits, misses uint64
}

// cacheEntry is immutable once stored, but for retry; callers get copies.
type cacheEntry struct {
	res     *TXTResult    // positive answer, or
	err     *net.DNSError // an IsNotFound error
	expires time.Time     // end of the TTL
	dead    time.Time     // no use after this: expires, plus MaxStale for a positive answer
	retry   time.Time     // a refresh failed: serve stale without asking until then
	elem    *list.Element
}

// canServeStale reports whether e holds a record that may be served
// stale at now.
func (e *cacheEntry) canServeStale(now time.Time) bool {
	return e != nil && e.res != nil && now.Before(e.dead)
}

// staleAt returns a stale copy of e's record if e may be served at now.
func (e *cacheEntry) staleAt(now time.Time) *TXTResult {
	if !e.canServeStale(now) {
		return nil
	}
	res := copyTXTResult(e.res)
	res.TTL = 0
	res.Stale = true
	res.StaleFor = now.Sub(e.expires)
	return res
}

// serveStale reports whether err is a failure that a stale record may
// paper over: one a retry could fix (RFC 8767 §4), never an answer.
func serveStale(err error) bool {
	var de *net.DNSError
	if !errors.As(err, &de) {
		return false
	}
	return !de.IsNotFound && (de.IsTimeout || de.IsTemporary) && !errors.Is(err, context.Canceled)
}

// cacheFlight is one upstream lookup shared by every caller asking for the
// same name meanwhile. res and err are written before done is closed.
type cacheFlight struct {
	done chan struct{}
	res  *TXTResult
	err  error
}

// NewCache returns a cache in front of next.
func NewCache(next Resolver, opts CacheOptions) *Cache {
	c := &Cache{
		next:        next,
		maxEntries:  opts.MaxEntries,
		maxTTL:      opts.MaxTTL,
		negativeTTL: opts.NegativeTTL,
		maxStale:    max(opts.MaxStale, 0),
		now:         opts.Now,
		entries:     make(map[string]*cacheEntry),
		order:       list.New(),
		inflight:    make(map[string]*cacheFlight),
	}
	if c.maxEntries <= 0 {
		c.maxEntries = 10000
	}
	if c.maxTTL <= 0 {
		c.maxTTL = time.Hour
	}
	if c.negativeTTL <= 0 {
		c.negativeTTL = time.Minute
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// LookupTXT answers from the cache or asks the next resolver. A cached
// positive answer carries the TTL it has left. If ctx ends first, the caller
// gets a timeout (or cancellation) *net.DNSError while the shared query goes
// on and fills the cache for later callers. When the lookup fails, or the
// caller's deadline ends, and the cache holds the name's record within
// MaxStale past its TTL, that record is the answer, with Stale set.
func (c *Cache) LookupTXT(ctx context.Context, name string) (*TXTResult, error) {
	key := strings.ToLower(mdns.Fqdn(name))

	c.mu.Lock()
	now := c.now()
	var stale *cacheEntry // an expired record that may still be served
	if e, ok := c.entries[key]; ok {
		switch {
		case now.Before(e.expires):
			c.hits++
			c.mu.Unlock()
			if e.err != nil {
				return nil, copyDNSError(e.err)
			}
			res := copyTXTResult(e.res)
			res.TTL = e.expires.Sub(now)
			return res, nil
		case !e.canServeStale(now):
			c.remove(key, e)
		case now.Before(e.retry):
			// A refresh failed moments ago: do not wait for another.
			c.hits++
			c.mu.Unlock()
			return e.staleAt(now), nil
		default:
			stale = e
		}
	}
	c.misses++
	f, ok := c.inflight[key]
	if !ok {
		f = &cacheFlight{done: make(chan struct{})}
		c.inflight[key] = f
		// Detached from ctx: other callers may join, and the first one
		// giving up must not fail them or waste the answer.
		go c.fill(context.WithoutCancel(ctx), key, name, f)
	}
	c.mu.Unlock()

	select {
	case <-f.done:
		if f.err != nil && serveStale(f.err) {
			if res := stale.staleAt(c.now()); res != nil {
				return res, nil
			}
		}
		if dnsErr, ok := f.err.(*net.DNSError); ok {
			return nil, copyDNSError(dnsErr) // callers may mutate their error
		}
		if f.err != nil {
			return nil, f.err
		}
		return copyTXTResult(f.res), nil
	case <-ctx.Done():
		// The caller cannot wait longer (RFC 8767 §5's client response
		// timer): a stale record beats a temperror. An answer arriving
		// later still replaces it in the cache.
		if ctx.Err() == context.DeadlineExceeded {
			if res := stale.staleAt(c.now()); res != nil {
				return res, nil
			}
		}
		return nil, contextError(ctx, strings.TrimSuffix(mdns.Fqdn(name), "."), "", 0)
	}
}

// fill runs the shared upstream lookup for key and stores what is cacheable.
func (c *Cache) fill(ctx context.Context, key, name string, f *cacheFlight) {
	ctx, cancel := context.WithTimeout(ctx, flightBackstop)
	defer cancel()
	res, err := c.next.LookupTXT(ctx, name)
	if err == nil && res == nil {
		res = &TXTResult{}
	}
	if err == nil {
		res = copyTXTResult(res) // the upstream keeps no handle on what we hand out
	}
	f.res, f.err = res, err

	c.mu.Lock()
	delete(c.inflight, key)
	if serveStale(err) {
		// Keep a stale record, and let it answer alone for a while.
		if e, ok := c.entries[key]; ok && e.res != nil {
			e.retry = c.now().Add(staleRetry)
		}
	} else {
		c.store(key, res, err)
	}
	c.mu.Unlock()
	close(f.done)
}

// store caches a lookup outcome if it may be cached. Whatever DNS
// answered replaces what the cache held, stale or not: a stale record
// never outlives an answer. Callers hold c.mu.
func (c *Cache) store(key string, res *TXTResult, err error) {
	now := c.now()
	if old, ok := c.entries[key]; ok {
		c.remove(key, old)
	}
	var e *cacheEntry
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		ttl := min(res.TTL, c.maxTTL)
		if ttl <= 0 {
			return // TTL 0: the publisher asked not to be cached
		}
		e = &cacheEntry{res: copyTXTResult(res), expires: now.Add(ttl)}
		e.dead = e.expires.Add(c.maxStale)
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound && !dnsErr.Temporary():
		e = &cacheEntry{err: copyDNSError(dnsErr), expires: now.Add(c.negativeTTL)}
		e.dead = e.expires
	default:
		return // temporary failures and timeouts are never cached
	}
	c.makeRoom(now)
	e.elem = c.order.PushBack(key)
	c.entries[key] = e
	if c.minDead.IsZero() || e.dead.Before(c.minDead) {
		c.minDead = e.dead
	}
}

// makeRoom frees a slot when the cache is full: dead entries first (past
// their TTL, and past MaxStale for a record), then the oldest inserted.
// A record refreshed is inserted anew, so the oldest are mostly stale
// ones of domains no longer heard from. Callers hold c.mu.
func (c *Cache) makeRoom(now time.Time) {
	if len(c.entries) < c.maxEntries {
		return
	}
	if !now.Before(c.minDead) {
		c.minDead = time.Time{}
		for k, e := range c.entries {
			if !now.Before(e.dead) {
				c.remove(k, e)
			} else if c.minDead.IsZero() || e.dead.Before(c.minDead) {
				c.minDead = e.dead
			}
		}
	}
	for len(c.entries) >= c.maxEntries {
		k := c.order.Front().Value.(string)
		c.remove(k, c.entries[k])
	}
}

// remove drops one entry. Callers hold c.mu.
func (c *Cache) remove(key string, e *cacheEntry) {
	c.order.Remove(e.elem)
	delete(c.entries, key)
}

// Adopt copies old's entries into c, as far as c has room, so that a
// new cache (a configuration reload builds one) keeps what the old one
// knew: above all the records it may serve stale during an outage. Each
// entry keeps its expiry; its dead time follows c's MaxStale. The
// counters start afresh. Call it before c is in use.
func (c *Cache) Adopt(old *Cache) {
	if old == nil || old == c {
		return
	}
	type kept struct {
		key string
		e   cacheEntry
	}
	var all []kept
	old.mu.Lock()
	for el := old.order.Front(); el != nil; el = el.Next() {
		k := el.Value.(string)
		all = append(all, kept{k, *old.entries[k]})
	}
	old.mu.Unlock()

	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	// The newest last, as they were: the oldest go first when c is smaller.
	for _, k := range all[max(0, len(all)-c.maxEntries):] {
		e := k.e
		if e.res != nil {
			e.dead = e.expires.Add(c.maxStale)
		}
		if !now.Before(e.dead) {
			continue
		}
		if prev, ok := c.entries[k.key]; ok {
			c.remove(k.key, prev)
		}
		c.makeRoom(now)
		e.elem = c.order.PushBack(k.key)
		c.entries[k.key] = &e
		if c.minDead.IsZero() || e.dead.Before(c.minDead) {
			c.minDead = e.dead
		}
	}
}

// Stats returns the current counters.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Hits: c.hits, Misses: c.misses, Entries: len(c.entries)}
}

func copyTXTResult(r *TXTResult) *TXTResult {
	cp := *r
	cp.Records = append([]string(nil), r.Records...)
	return &cp
}

func copyDNSError(e *net.DNSError) *net.DNSError {
	cp := *e
	return &cp
}
