package webhook

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// gatedStore blocks every ApplyUserChange until released and records the
// order in which they got in.
type gatedStore struct {
	mu      sync.Mutex
	order   []string
	entered chan string
	release chan struct{}
}

var _ ledger.Store = (*gatedStore)(nil)

func (g *gatedStore) ApplyUserChange(ctx context.Context, c ledger.UserChange) (ledger.Result, error) {
	g.mu.Lock()
	g.order = append(g.order, c.Delivery.SvixID)
	g.mu.Unlock()
	g.entered <- c.Delivery.SvixID
	<-g.release
	return ledger.Result{SvixID: c.Delivery.SvixID, Status: ledger.OutcomeProcessed}, nil
}

func (g *gatedStore) RecordOutcome(context.Context, ledger.Delivery, ledger.Change, ledger.EventStatus, string) (ledger.Result, error) {
	return ledger.Result{}, errors.New("not used")
}

func (g *gatedStore) RecordFailure(context.Context, ledger.Delivery, ledger.Change, error) error {
	return errors.New("not used")
}

// apply runs one ApplyUserChange for svixID through s.
func apply(ctx context.Context, s ledger.Store, svixID string) (ledger.Result, error) {
	return s.ApplyUserChange(ctx, ledger.UserChange{Delivery: ledger.Delivery{SvixID: svixID}})
}

func TestFIFOAdmitsInArrivalOrder(t *testing.T) {
	t.Parallel()
	g := &gatedStore{entered: make(chan string, 100), release: make(chan struct{})}
	f := FIFO(g, 2).(*fifoStore)
	var wg sync.WaitGroup
	start := func(id string) {
		wg.Go(func() {
			if _, err := apply(context.Background(), f, id); err != nil {
				t.Errorf("%s: %v", id, err)
			}
		})
	}
	start("msg_0")
	start("msg_1")
	<-g.entered
	<-g.entered
	// Ten more queue, each one only after the one before is waiting, so the
	// arrival order is known.
	const queued = 10
	for i := 2; i < 2+queued; i++ {
		start(fmt.Sprintf("msg_%d", i))
		waitForWaiters(t, f, i-1)
	}
	for i := 2; i < 2+queued; i++ {
		g.release <- struct{}{}
		if got, want := <-g.entered, fmt.Sprintf("msg_%d", i); got != want {
			t.Fatalf("admitted %s, want %s (first come, first served)", got, want)
		}
	}
	g.release <- struct{}{}
	g.release <- struct{}{}
	wg.Wait()
	if f.q.free != 2 || f.q.queued() != 0 {
		t.Errorf("after all: %d free slots, %d queued; want 2 and 0", f.q.free, f.q.queued())
	}
}

// waitForWaiters waits until n deliveries queue in f.
func waitForWaiters(t *testing.T, f *fifoStore, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.q.queued() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries queued, want %d", f.q.queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFIFOGivesUpWithTheContext(t *testing.T) {
	t.Parallel()
	g := &gatedStore{entered: make(chan string, 1), release: make(chan struct{})}
	f := FIFO(g, 1)
	go func() { _, _ = apply(context.Background(), f, "msg_busy") }()
	<-g.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	res, err := apply(ctx, f, "msg_late")
	if !errors.Is(err, ledger.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || res.SvixID != "msg_late" {
		t.Fatalf("Process while full = %+v, %v; want ErrUnavailable wrapping the deadline", res, err)
	}
	if errorStatus(err) != 503 {
		t.Errorf("status = %d, want 503", errorStatus(err))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.order) != 1 {
		t.Errorf("processor saw %v, want only msg_busy", g.order)
	}
	close(g.release)
}

// TestFIFOCancelledWaiterLeavesTheQueue: a waiter whose context ends leaves
// the queue, and the next slot goes to the one behind it.
func TestFIFOCancelledWaiterLeavesTheQueue(t *testing.T) {
	t.Parallel()
	g := &gatedStore{entered: make(chan string, 10), release: make(chan struct{})}
	f := FIFO(g, 1).(*fifoStore)
	done := make(chan error, 3)
	go func() { _, err := apply(context.Background(), f, "msg_busy"); done <- err }()
	<-g.entered
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, err := apply(ctx, f, "msg_gone"); done <- err }()
	waitForWaiters(t, f, 1)
	go func() { _, err := apply(context.Background(), f, "msg_next"); done <- err }()
	waitForWaiters(t, f, 2)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v, want context.Canceled", err)
	}
	waitForWaiters(t, f, 1)
	g.release <- struct{}{} // msg_busy finishes; its slot goes to msg_next
	if got := <-g.entered; got != "msg_next" {
		t.Fatalf("admitted %s, want msg_next", got)
	}
	g.release <- struct{}{}
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if f.q.free != 1 || f.q.queued() != 0 {
		t.Errorf("after all: %d free, %d queued; want 1 and 0", f.q.free, f.q.queued())
	}
}
