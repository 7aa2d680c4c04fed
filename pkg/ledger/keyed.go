package ledger

import (
	"context"
	"sync"
)

// keyedMutex is a mutex per key, such as a Clerk user id, whose waiters give
// up when their context ends. Keys nobody holds or waits for take no memory.
// The zero value is ready to use.
type keyedMutex struct {
	mu   sync.Mutex
	keys map[string]*keyedEntry
}

type keyedEntry struct {
	// turn holds one token while the key is free.
	turn chan struct{}
	// refs counts holders and waiters; the entry goes when it drops to 0.
	refs int
}

// lock waits for key to be free, then holds it until release is called.
func (k *keyedMutex) lock(ctx context.Context, key string) (release func(), err error) {
	k.mu.Lock()
	if k.keys == nil {
		k.keys = make(map[string]*keyedEntry)
	}
	e := k.keys[key]
	if e == nil {
		e = &keyedEntry{turn: make(chan struct{}, 1)}
		e.turn <- struct{}{}
		k.keys[key] = e
	}
	e.refs++
	k.mu.Unlock()

	select {
	case <-e.turn:
		return func() {
			e.turn <- struct{}{}
			k.unref(key, e)
		}, nil
	case <-ctx.Done():
		k.unref(key, e)
		return nil, ctx.Err()
	}
}

func (k *keyedMutex) unref(key string, e *keyedEntry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e.refs--; e.refs == 0 {
		delete(k.keys, key)
	}
}

// size returns how many keys are held or waited for (for tests).
func (k *keyedMutex) size() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.keys)
}
