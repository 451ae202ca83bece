package keystore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestCache(t *testing.T) {
	now := time.Unix(1e9, 0)
	c := newCache[string](2, func() time.Time { return now })
	loads := 0
	load := func(v string, ttl time.Duration, err error) func(context.Context) (string, time.Duration, error) {
		return func(context.Context) (string, time.Duration, error) {
			loads++
			return v, ttl, err
		}
	}
	ctx := context.Background()
	steps := []struct {
		key, val string
		ttl      time.Duration
		err      error
		advance  time.Duration
		wantVal  string
		wantHit  bool
		wantErr  bool
		loads    int
	}{
		{key: "a", val: "A", ttl: time.Minute, wantVal: "A", loads: 1},
		{key: "a", val: "X", ttl: time.Minute, wantVal: "A", wantHit: true, loads: 1},
		{key: "a", val: "A2", ttl: time.Minute, advance: time.Minute, wantVal: "A2", loads: 2}, // expired
		{key: "b", val: "B", ttl: 0, wantVal: "B", loads: 3},                                   // ttl 0: not kept
		{key: "b", val: "B", ttl: time.Minute, wantVal: "B", loads: 4},
		{key: "e", err: errors.New("down"), ttl: time.Minute, wantErr: true, loads: 5}, // errors are not kept
		{key: "e", val: "E", ttl: time.Minute, wantVal: "E", loads: 6},                 // evicts a, the least recently used
		{key: "b", val: "X", ttl: time.Minute, wantVal: "B", wantHit: true, loads: 6},
		{key: "a", val: "A3", ttl: time.Minute, wantVal: "A3", loads: 7},
	}
	for i, st := range steps {
		now = now.Add(st.advance)
		v, hit, err := c.get(ctx, st.key, load(st.val, st.ttl, st.err))
		if v != st.wantVal || hit != st.wantHit || (err != nil) != st.wantErr || loads != st.loads {
			t.Errorf("step %d: %q hit %v err %v loads %d; want %q %v %v %d", i, v, hit, err, loads, st.wantVal, st.wantHit, st.wantErr, st.loads)
		}
		if n := c.len(); n > 2 {
			t.Errorf("step %d: %d entries kept, max 2", i, n)
		}
	}
}

// Callers that come while a load runs share it; one whose own deadline
// passes first stops waiting; a load that panics still frees them.
func TestCacheSingleFlight(t *testing.T) {
	c := newCache[int](10, nil)
	release := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	var leaderVal int
	wg.Go(func() {
		leaderVal, _, _ = c.get(context.Background(), "k", func(context.Context) (int, time.Duration, error) {
			close(started)
			<-release
			return 7, time.Minute, nil
		})
	})
	<-started
	results := make(chan int, 10)
	for range 10 {
		wg.Go(func() {
			v, _, err := c.get(context.Background(), "k", func(context.Context) (int, time.Duration, error) {
				t.Error("a second load ran")
				return 0, 0, nil
			})
			if err != nil {
				t.Error(err)
			}
			results <- v
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := c.get(ctx, "k", nil); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Errorf("an impatient waiter: %v after %v", err, time.Since(start))
	}
	close(release)
	wg.Wait()
	close(results)
	for v := range results {
		if v != 7 {
			t.Errorf("a waiter got %d", v)
		}
	}
	if leaderVal != 7 {
		t.Errorf("leader got %d", leaderVal)
	}

	func() {
		defer func() { recover() }()
		c.get(context.Background(), "p", func(context.Context) (int, time.Duration, error) { panic("bug") })
	}()
	if _, _, err := c.get(context.Background(), "p", func(context.Context) (int, time.Duration, error) { return 1, 0, nil }); err != nil {
		t.Errorf("after a panicking load: %v", err)
	}
}

// A load that does not return (it ignores its ctx: a key file on a hung
// mount) holds its key only for flightTTL: then the next caller starts a
// new load, and the hung one's late answer does not replace the newer.
func TestCacheHungFlight(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	c := newCache[int](10, clock)
	c.flightTTL = time.Second
	hang, started := make(chan struct{}), make(chan struct{})
	leaderDone := make(chan int)
	go func() {
		v, _, _ := c.get(context.Background(), "k", func(context.Context) (int, time.Duration, error) {
			close(started)
			<-hang
			return 1, time.Hour, nil
		})
		leaderDone <- v
	}()
	<-started
	for _, st := range []struct {
		advance time.Duration
		val     int // what the caller's load would answer
		want    int // 0: gives up waiting (its ctx)
		wantHit bool
	}{
		{advance: 500 * time.Millisecond, val: 2, want: 0}, // the flight is young: waited for
		{advance: 600 * time.Millisecond, val: 3, want: 3}, // 1.1s: replaced
		{val: 4, want: 3, wantHit: true},                   // the new answer is kept
	} {
		advance(st.advance)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		v, hit, err := c.get(ctx, "k", func(context.Context) (int, time.Duration, error) { return st.val, time.Hour, nil })
		cancel()
		if v != st.want || hit != st.wantHit || (err != nil) != (st.want == 0) {
			t.Errorf("after %v: %d hit %v err %v; want %d hit %v", st.advance, v, hit, err, st.want, st.wantHit)
		}
	}
	close(hang)
	if v := <-leaderDone; v != 1 {
		t.Errorf("the hung leader got %d", v)
	}
	if v, hit, _ := c.get(context.Background(), "k", nil); v != 3 || !hit {
		t.Errorf("after the hung load returned: %d hit %v; want the newer 3 from the cache", v, hit)
	}
}
