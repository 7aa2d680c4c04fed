package webhook

import (
	"context"
	"fmt"
	"sync"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// FIFO lets at most n store operations run at once and queues the others in
// arrival order. With n set to the database pool size, deliveries never wait
// inside database/sql, which hands a freed connection to a random waiter:
// with more concurrent senders than connections that randomness, not the
// work, made the latency tail (p99 at 64 senders was 5× the median). Here
// the wait is first come, first served. It wraps the Store, not the whole
// delivery, so that a delivery waiting for its user's turn (ledger.Service
// lets one delivery per user through at a time) waits without a slot. An
// operation whose context ends while it waits fails as unavailable (503, so
// Svix retries), having changed nothing. n <= 0 returns s itself.
func FIFO(s ledger.Store, n int) ledger.Store {
	if n <= 0 {
		return s
	}
	return &fifoStore{s: s, q: &fifo{free: n}}
}

type fifoStore struct {
	s ledger.Store
	q *fifo
}

func (f *fifoStore) ApplyUserChange(ctx context.Context, c ledger.UserChange) (ledger.Result, error) {
	if err := f.q.acquire(ctx); err != nil {
		return ledger.Result{SvixID: c.Delivery.SvixID}, waitErr(err)
	}
	defer f.q.release()
	return f.s.ApplyUserChange(ctx, c)
}

func (f *fifoStore) RecordOutcome(ctx context.Context, d ledger.Delivery, c ledger.Change, status ledger.EventStatus, reason string) (ledger.Result, error) {
	if err := f.q.acquire(ctx); err != nil {
		return ledger.Result{SvixID: d.SvixID}, waitErr(err)
	}
	defer f.q.release()
	return f.s.RecordOutcome(ctx, d, c, status, reason)
}

func (f *fifoStore) RecordFailure(ctx context.Context, d ledger.Delivery, c ledger.Change, cause error) error {
	if err := f.q.acquire(ctx); err != nil {
		return waitErr(err)
	}
	defer f.q.release()
	return f.s.RecordFailure(ctx, d, c, cause)
}

func waitErr(err error) error {
	return fmt.Errorf("%w: waited for a database connection: %w", ledger.ErrUnavailable, err)
}

// fifo is a counting semaphore whose waiters are served in arrival order.
type fifo struct {
	mu sync.Mutex
	// free counts unused slots; waiters holds the channel of each waiting
	// operation, oldest first. A slot goes to the oldest waiter by closing
	// its channel.
	free    int
	waiters []chan struct{}
}

func (f *fifo) acquire(ctx context.Context) error {
	f.mu.Lock()
	if f.free > 0 && len(f.waiters) == 0 {
		f.free--
		f.mu.Unlock()
		return nil
	}
	ready := make(chan struct{})
	f.waiters = append(f.waiters, ready)
	f.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
	}
	f.mu.Lock()
	for i, w := range f.waiters {
		if w == ready {
			f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
			f.mu.Unlock()
			return ctx.Err()
		}
	}
	f.mu.Unlock()
	// The slot was handed over just as the context ended: pass it on.
	f.release()
	return ctx.Err()
}

func (f *fifo) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.waiters) > 0 {
		close(f.waiters[0])
		f.waiters = f.waiters[1:]
		return
	}
	f.free++
}

// queued returns how many operations wait (for tests).
func (f *fifo) queued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}
