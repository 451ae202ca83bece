package keystore

import (
	"sync"
	"sync/atomic"
)

// Rotated holds the keys that rotation has put in place of the
// configuration's: for a [keys.NAME] that rotates, the selector and
// private key that sign now. It outlives reloads (the daemon keeps one),
// and a switch is one pointer store: a message is signed with the old key
// or the new one, never half of each, and a new key is set only once its
// record is visible (keystore/rotation).
type Rotated struct {
	mu sync.Mutex // serialises Set
	m  atomic.Pointer[map[string]*Key]
}

// Set makes k sign in place of keys.NAME's configured key; nil puts the
// configured key back.
func (r *Rotated) Set(name string, k *Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := map[string]*Key{}
	if cur := r.m.Load(); cur != nil {
		for n, v := range *cur {
			next[n] = v
		}
	}
	if k == nil {
		delete(next, name)
	} else {
		next[name] = k
	}
	r.m.Store(&next)
}

// Get returns the key that signs for keys.NAME in its place, or nil.
func (r *Rotated) Get(name string) *Key {
	if r == nil {
		return nil
	}
	if cur := r.m.Load(); cur != nil {
		return (*cur)[name]
	}
	return nil
}

// SetRotated makes s sign with r's keys in place of the configuration's.
// Only keys with a fixed domain and file rotate.
func (s *Store) SetRotated(r *Rotated) { s.rot = r }
