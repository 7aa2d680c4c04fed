package ledger

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestKeyedMutexOneHolderPerKey: holders of one key take turns, other keys
// are never held up, a waiter whose context ends leaves, and a key nobody
// holds or waits for takes no memory.
func TestKeyedMutexOneHolderPerKey(t *testing.T) {
	t.Parallel()
	var k keyedMutex
	ctx := context.Background()

	release, err := k.lock(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	// Another key is free at once.
	other, err := k.lock(ctx, "user_b")
	if err != nil {
		t.Fatal(err)
	}
	other()

	// A second holder of user_a waits until the first releases.
	got := make(chan struct{})
	go func() {
		r, err := k.lock(ctx, "user_a")
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		close(got)
		r()
	}()
	// A waiter that gives up leaves without the key.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := k.lock(short, "user_a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock while held = %v, want the context's deadline", err)
	}
	select {
	case <-got:
		t.Fatal("second holder got user_a while the first held it")
	default:
	}
	release()
	<-got

	// Many holders, one at a time: no two inside at once.
	var inside, most int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			r, err := k.lock(ctx, "user_c")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside++
			most = max(most, inside)
			mu.Unlock()
			time.Sleep(100 * time.Microsecond)
			mu.Lock()
			inside--
			mu.Unlock()
			r()
		})
	}
	wg.Wait()
	if most != 1 {
		t.Errorf("%d holders of one key at once, want 1", most)
	}
	if n := k.size(); n != 0 {
		t.Errorf("%d keys kept after every holder left, want 0", n)
	}
}
