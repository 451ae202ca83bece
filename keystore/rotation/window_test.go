package rotation

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
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
