package reconcile

import (
	"context"
	"time"
)

// Worker runs in the webhook Deployment and delivers outbox messages as soon
// as they are committed (Wake), and otherwise polls; the reconciler retries
// whatever it leaves.
type Worker struct {
	Deliverer *Deliverer
	// Poll is the longest wait between looks at the outbox; 0 means 5s.
	Poll time.Duration
	wake chan struct{}
}

// NewWorker returns a Worker over d.
func NewWorker(d *Deliverer, poll time.Duration) *Worker {
	if poll <= 0 {
		poll = 5 * time.Second
	}
	return &Worker{Deliverer: d, Poll: poll, wake: make(chan struct{}, 1)}
}

// Wake asks the worker to look at the outbox now; it never blocks.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends.
func (w *Worker) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-t.C:
		}
		for ctx.Err() == nil {
			res, err := w.Deliverer.DeliverOne(ctx)
			if err != nil {
				if ctx.Err() == nil {
					w.Deliverer.Log.WarnContext(ctx, "outbox worker", "error", err)
				}
				break
			}
			if !res.Found {
				break
			}
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(w.Poll)
	}
}
