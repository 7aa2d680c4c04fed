// The Go benchmarks behind docs/benchmarks.md: what one
// database round trip costs the service's CPU through its driver stack (bun,
// database/sql, pgx in simple-protocol mode, as pkg/postgres.Open sets it up),
// and what decoding a Clerk body costs. They report "cpu-µs/op", the process's
// user+system CPU per operation, because wall time per operation is mostly
// waiting for PostgreSQL.
//
//	go test ./hack/bench -run '^$' -bench . -benchtime 3000x

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
	"github.com/creditgate/creditgate/pkg/pglocal"
	"github.com/creditgate/creditgate/pkg/postgres"
)

// body is a user.created delivery as Clerk sends it (pkg/clerk/clerkevent,
// ~1.8 KB).
var body = string(clerkevent.Event{Type: clerkevent.UserCreated, UserID: "user_bench", Email: "bench@example.com"}.MustBody())

var (
	once   sync.Once
	server *pglocal.Server
	db     *bun.DB
	dbErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if db != nil {
		db.Close()
	}
	if server != nil {
		_ = server.Close()
	}
	os.Exit(code)
}

// database starts one local PostgreSQL (fsync on, as in the benchmark) for
// the whole run, or uses BENCH_DATABASE_URL.
func database(b *testing.B) *bun.DB {
	b.Helper()
	once.Do(func() {
		url := os.Getenv("BENCH_DATABASE_URL")
		if url == "" {
			server, dbErr = pglocal.Start(context.Background(), pglocal.Options{Fsync: true})
			if dbErr != nil {
				return
			}
			url = server.URL("postgres")
		}
		db, dbErr = postgres.Open(url, postgres.Options{MaxConns: 4})
	})
	if dbErr != nil {
		b.Skipf("no PostgreSQL: %v", dbErr)
	}
	return db
}

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureCPU runs op b.N times and reports its CPU per operation.
func measureCPU(b *testing.B, op func(ctx context.Context) error) {
	b.Helper()
	ctx := context.Background()
	if err := op(ctx); err != nil { // warm the pool
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if err := op(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

// BenchmarkRoundTrips isolates the client-side cost of a round trip: the same
// two trivial statements as one transaction (BEGIN, 2 statements, COMMIT: the
// shape of the signup path), without one, and a single statement. The slope
// is what each round trip costs the service, whatever the SQL.
func BenchmarkRoundTrips(b *testing.B) {
	db := database(b)
	var one int
	stmt := func(ctx context.Context, q bun.IDB) error {
		return q.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	}
	b.Run("4_tx_begin_2_statements_commit", func(b *testing.B) {
		measureCPU(b, func(ctx context.Context) error {
			return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				if err := stmt(ctx, tx); err != nil {
					return err
				}
				return stmt(ctx, tx)
			})
		})
	})
	b.Run("2_statements", func(b *testing.B) {
		measureCPU(b, func(ctx context.Context) error {
			if err := stmt(ctx, db); err != nil {
				return err
			}
			return stmt(ctx, db)
		})
	})
	b.Run("1_statement", func(b *testing.B) {
		measureCPU(b, func(ctx context.Context) error { return stmt(ctx, db) })
	})
	// The payload as a bun argument: bun escapes it into the SQL text and
	// pgx scans that text again before sending it.
	b.Run("1_statement_with_1.8KB_payload_argument", func(b *testing.B) {
		var n int
		measureCPU(b, func(ctx context.Context) error {
			return db.QueryRowContext(ctx, "SELECT length(?::jsonb::text)", body).Scan(&n)
		})
	})
}

// BenchmarkDecode compares the receiver's decoding of a user.created body
// (clerk.Decode) with one json.Valid scan and with one json.Unmarshal of the
// fields it reads.
func BenchmarkDecode(b *testing.B) {
	in := []byte(body)
	b.Run("clerk.Decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := clerk.Decode(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !json.Valid(in) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("one_json.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var ev struct {
				Type string `json:"type"`
				Data struct {
					ID                    string  `json:"id"`
					Deleted               bool    `json:"deleted"`
					PrimaryEmailAddressID *string `json:"primary_email_address_id"`
					EmailAddresses        []struct {
						ID           string `json:"id"`
						EmailAddress string `json:"email_address"`
					} `json:"email_addresses"`
					CreatedAt int64 `json:"created_at"`
					UpdatedAt int64 `json:"updated_at"`
				} `json:"data"`
			}
			if err := json.Unmarshal(in, &ev); err != nil || ev.Data.ID == "" {
				b.Fatal(fmt.Errorf("decode: %v", err))
			}
		}
	})
}
