package webhook

import (
	"context"
	"fmt"
	"sync"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// FIFO lets at most n deliveries into p at once and queues the others in
// arrival order. With n set to the database pool size, deliveries never wait
// inside database/sql, which hands a freed connection to a random waiter:
// with more concurrent senders than connections that randomness, not the
// work, made the latency tail (p99 at 64 senders was 5× the median). Here
// the wait is first come, first served. A delivery whose context ends while
// it waits fails as unavailable (503, so Svix retries), having changed
// nothing. n <= 0 returns p itself.
func FIFO(p Processor, n int) Processor {
	if n <= 0 {
		return p
	}
	return &fifo{p: p, free: n}
}

type fifo struct {
	p  Processor
	mu sync.Mutex
	// free counts unused slots; waiters holds the channel of each waiting
	// delivery, oldest first. A slot goes to the oldest waiter by closing
	// its channel.
	free    int
	waiters []chan struct{}
}

func (f *fifo) Process(ctx context.Context, d ledger.Delivery) (ledger.Result, error) {
	if err := f.acquire(ctx); err != nil {
		return ledger.Result{SvixID: d.SvixID}, fmt.Errorf("%w: waited for a database connection: %w", ledger.ErrUnavailable, err)
	}
	defer f.release()
	return f.p.Process(ctx, d)
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

// queued returns how many deliveries wait (for tests).
func (f *fifo) queued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}
