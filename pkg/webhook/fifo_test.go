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

// gatedProcessor blocks every delivery until released and records the order
// in which deliveries got in.
type gatedProcessor struct {
	mu      sync.Mutex
	order   []string
	entered chan string
	release chan struct{}
}

func (g *gatedProcessor) Process(ctx context.Context, d ledger.Delivery) (ledger.Result, error) {
	g.mu.Lock()
	g.order = append(g.order, d.SvixID)
	g.mu.Unlock()
	g.entered <- d.SvixID
	<-g.release
	return ledger.Result{SvixID: d.SvixID, Status: ledger.OutcomeProcessed}, nil
}

func TestFIFOAdmitsInArrivalOrder(t *testing.T) {
	t.Parallel()
	g := &gatedProcessor{entered: make(chan string, 100), release: make(chan struct{})}
	f := FIFO(g, 2).(*fifo)
	var wg sync.WaitGroup
	start := func(id string) {
		wg.Go(func() {
			if _, err := f.Process(context.Background(), ledger.Delivery{SvixID: id}); err != nil {
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
	if f.free != 2 || f.queued() != 0 {
		t.Errorf("after all: %d free slots, %d queued; want 2 and 0", f.free, f.queued())
	}
}

// waitForWaiters waits until n deliveries queue in f.
func waitForWaiters(t *testing.T, f *fifo, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.queued() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries queued, want %d", f.queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFIFOGivesUpWithTheContext(t *testing.T) {
	t.Parallel()
	g := &gatedProcessor{entered: make(chan string, 1), release: make(chan struct{})}
	f := FIFO(g, 1)
	go func() { _, _ = f.Process(context.Background(), ledger.Delivery{SvixID: "msg_busy"}) }()
	<-g.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	res, err := f.Process(ctx, ledger.Delivery{SvixID: "msg_late"})
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
	g := &gatedProcessor{entered: make(chan string, 10), release: make(chan struct{})}
	f := FIFO(g, 1).(*fifo)
	done := make(chan error, 3)
	go func() { _, err := f.Process(context.Background(), ledger.Delivery{SvixID: "msg_busy"}); done <- err }()
	<-g.entered
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, err := f.Process(ctx, ledger.Delivery{SvixID: "msg_gone"}); done <- err }()
	waitForWaiters(t, f, 1)
	go func() { _, err := f.Process(context.Background(), ledger.Delivery{SvixID: "msg_next"}); done <- err }()
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
	if f.free != 1 || f.queued() != 0 {
		t.Errorf("after all: %d free, %d queued; want 1 and 0", f.free, f.queued())
	}
}
