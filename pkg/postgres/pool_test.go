package postgres_test

import (
	"context"
	"fmt"
	"slices"
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
	mu      sync.Mutex
	asked   []string
	served  []string
	changed chan struct{}
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
		select {
		case a.changed <- struct{}{}:
		default:
		}
	}
}

// waitAsked waits until n operations have asked for a connection.
func (a *acquireOrder) waitAsked(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		a.mu.Lock()
		got := len(a.asked)
		a.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-a.changed:
		case <-deadline:
			t.Fatalf("%d operations asked the pool for a connection, want %d", got, n)
		}
	}
}

// TestPoolServesWaitersInOrder: with every connection taken, deliveries,
// the outbox worker's claims, credits API reads and the backlog gauges
// queue in one line and get the connection in the order they asked
// (database/sql alone hands a freed connection to a random waiter).
func TestPoolServesWaitersInOrder(t *testing.T) {
	t.Parallel()
	tr := &acquireOrder{changed: make(chan struct{}, 1)}
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
	// Ask in this order, each once the one before is waiting.
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
		tr.waitAsked(t, i+1)
	}
	if err := held.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
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
