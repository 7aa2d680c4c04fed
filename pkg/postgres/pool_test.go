package postgres_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

type opName struct{}

// acquireOrder records, per named operation, when it first asked the pool
// for a connection and when it first got one.
type acquireOrder struct {
	mu     sync.Mutex
	asked  []string
	served []string
}

func (a *acquireOrder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (a *acquireOrder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (a *acquireOrder) TraceAcquireStart(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireStartData) context.Context {
	a.note(ctx, &a.asked)
	return ctx
}

func (a *acquireOrder) TraceAcquireEnd(ctx context.Context, _ *pgxpool.Pool, d pgxpool.TraceAcquireEndData) {
	if d.Err == nil {
		a.note(ctx, &a.served)
	}
}

func (a *acquireOrder) note(ctx context.Context, list *[]string) {
	name, ok := ctx.Value(opName{}).(string)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !slices.Contains(*list, name) {
		*list = append(*list, name)
	}
}

// waitQueued waits until n of this test's operations are queued in the
// pool, blocked in its semaphore: asking (the tracer's start) comes a moment
// before queueing, and on a busy machine the next operation could overtake
// in between.
func waitQueued(t *testing.T, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := 0
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "semaphore.(*Weighted).Acquire") && strings.Contains(g, "TestPoolServesWaitersInOrder") {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d operations queued for a connection, want %d", got, n)
		}
		time.Sleep(time.Millisecond) // polling the condition, not a wait for it
	}
}

// TestPoolServesWaitersInOrder: with every connection taken, deliveries,
// the outbox worker's claims, credits API reads and the backlog gauges
// queue in one line and get the connection in the order they asked
// (database/sql alone hands a freed connection to a random waiter).
func TestPoolServesWaitersInOrder(t *testing.T) {
	t.Parallel()
	tr := &acquireOrder{}
	db, _ := pgtest.NewWith(t, postgres.Options{MaxConns: 1, Tracer: tr})
	store := postgres.NewStore(db)
	svc := &ledger.Service{Store: store, Decode: clerk.Decode, SignupCredits: 20, MetadataOutbox: true}
	ctx := context.Background()
	if _, err := svc.Process(ctx, delivery("msg_seed", userCreated("user_seed", "seed@example.com"))); err != nil {
		t.Fatal(err)
	}

	held, err := db.DB.Conn(ctx) // the pool's only connection
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]func(ctx context.Context) error{
		"delivery": func(ctx context.Context) error {
			_, err := svc.Process(ctx, delivery("msg_a", userCreated("user_a", "a@example.com")))
			return err
		},
		"outbox": func(ctx context.Context) error {
			_, _, err := store.ClaimOutbox(ctx, time.Minute)
			return err
		},
		"balance": func(ctx context.Context) error {
			_, err := store.Balance(ctx, "user_seed")
			return err
		},
		"gauges": func(ctx context.Context) error {
			_, err := store.Backlog(ctx)
			return err
		},
	}
	// Ask in this order, each once the one before is queued.
	order := []string{"delivery", "outbox", "balance", "gauges", "delivery 2", "outbox 2"}
	var wg sync.WaitGroup
	for i, name := range order {
		op := ops[name]
		if op == nil {
			op = ops[name[:len(name)-2]]
		}
		opCtx := context.WithValue(ctx, opName{}, name)
		if name == "delivery 2" {
			op = func(ctx context.Context) error {
				_, err := svc.Process(ctx, delivery("msg_b", userCreated("user_b", "b@example.com")))
				return err
			}
		}
		wg.Go(func() {
			if err := op(opCtx); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
		waitQueued(t, i+1)
	}
	if err := held.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if diff := cmp.Diff(order, tr.asked); diff != "" {
		t.Errorf("order in which operations asked for the connection (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(order, tr.served); diff != "" {
		t.Errorf("order in which waiters got the connection (-asked +served):\n%s", diff)
	}
	if n := testutil.CollectAndCount(postgres.NewPoolCollector(db)); n != 12 {
		t.Errorf("pool collector exported %d series, want 12", n)
	}
	if got := fmt.Sprint(postgres.Pool(db).Stat().EmptyAcquireCount() >= int64(len(order))); got != "true" {
		t.Errorf("acquisitions that waited: %d, want at least %d", postgres.Pool(db).Stat().EmptyAcquireCount(), len(order))
	}
}
