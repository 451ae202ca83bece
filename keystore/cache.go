package keystore

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// cache keeps answers of a slow source (a database query) for a while,
// at most max of them, the least recently used going first, and asks the
// source once for a key however many callers want it at the same time:
// a hundred messages for one new domain make one query, not a hundred.
// It is generic so that a second query (another table, another kind of
// answer) gets the same bounds and single flight by a second cache.
type cache[V any] struct {
	max int
	now func() time.Time
	// flightTTL: a load running longer is given up by the next caller,
	// which starts a new one (0: never). A load may ignore its ctx (a
	// key file on a hung NFS mount), and its flight must not keep every
	// later message of the domain waiting until a reload.
	flightTTL time.Duration

	mu      sync.Mutex
	items   map[string]*list.Element // of *cacheEntry[V]
	lru     list.List                // front: most recently used
	flights map[string]*flight[V]
}

type cacheEntry[V any] struct {
	key     string
	val     V
	expires time.Time
}

// flight is a load in progress; done is closed when val and err are set.
type flight[V any] struct {
	done    chan struct{}
	started time.Time
	val     V
	err     error
}

func newCache[V any](max int, now func() time.Time) *cache[V] {
	if now == nil {
		now = time.Now
	}
	return &cache[V]{max: max, now: now, items: map[string]*list.Element{}, flights: map[string]*flight[V]{}}
}

// get returns the answer for key: from the cache (hit true) while it has
// not expired, else from load, which says how long to keep its answer (0
// or less: not kept). An error is never kept: the next caller asks again.
// Callers that come while a load runs wait for it, each no longer than
// its own ctx allows; load runs with the ctx of the caller that started it.
// A caller that finds a load running for flightTTL or longer starts a new
// one instead.
func (c *cache[V]) get(ctx context.Context, key string, load func(context.Context) (V, time.Duration, error)) (v V, hit bool, err error) {
	c.mu.Lock()
	if e, ok := c.items[key]; ok {
		ent := e.Value.(*cacheEntry[V])
		if c.now().Before(ent.expires) {
			c.lru.MoveToFront(e)
			c.mu.Unlock()
			return ent.val, true, nil
		}
		c.lru.Remove(e)
		delete(c.items, key)
	}
	if f, ok := c.flights[key]; ok && (c.flightTTL <= 0 || c.now().Sub(f.started) < c.flightTTL) {
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.val, false, f.err
		case <-ctx.Done():
			return v, false, ctx.Err()
		}
	}
	// A flight older than flightTTL, if any, is replaced: its waiters
	// keep waiting for it, within their own deadlines.
	f := &flight[V]{done: make(chan struct{}), started: c.now()}
	c.flights[key] = f
	c.mu.Unlock()

	var ttl time.Duration
	func() {
		// A panic in load must not leave the waiters waiting forever.
		defer func() {
			if p := recover(); p != nil {
				f.err = errLoadPanicked
				c.finish(key, f, 0)
				panic(p)
			}
		}()
		f.val, ttl, f.err = load(ctx)
	}()
	c.finish(key, f, ttl)
	return f.val, false, f.err
}

type cacheError string

func (e cacheError) Error() string { return string(e) }

const errLoadPanicked = cacheError("the lookup failed on a bug (see the log)")

// finish publishes a flight's answer and keeps it for ttl, unless a newer
// flight replaced it: the answer of a load given up on must not take the
// place of a newer one.
func (c *cache[V]) finish(key string, f *flight[V], ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	current := c.flights[key] == f
	if current {
		delete(c.flights, key)
	}
	close(f.done)
	if !current || f.err != nil || ttl <= 0 || c.max <= 0 {
		return
	}
	if e, ok := c.items[key]; ok {
		c.lru.Remove(e)
	}
	for c.lru.Len() >= c.max {
		last := c.lru.Back()
		c.lru.Remove(last)
		delete(c.items, last.Value.(*cacheEntry[V]).key)
	}
	c.items[key] = c.lru.PushFront(&cacheEntry[V]{key: key, val: f.val, expires: c.now().Add(ttl)})
}

// len returns the number of answers kept, expired ones included until
// they are asked for or pushed out.
func (c *cache[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
