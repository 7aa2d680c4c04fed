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
	"github.com/creditgate/creditgate/pkg/pglocal"
	"github.com/creditgate/creditgate/pkg/postgres"
)

// body is a user.created delivery as cmd/svixsend makes it (1,796 bytes),
// shaped like Clerk's.
const body = `{"data":{"backup_code_enabled":false,"banned":false,"create_organization_enabled":true,"created_at":1795818160931,"delete_self_enabled":true,"email_addresses":[{"created_at":1795818160931,"email_address":"load+user_06c855847ae29bb8b36952b65083@example.com","id":"idn_2dce0eec3370db9ade26a8513400","linked_to":[],"object":"email_address","reserved":false,"updated_at":1795818160931,"verification":{"attempts":null,"expire_at":null,"status":"verified","strategy":"email_code"}}],"enterprise_accounts":[],"external_accounts":[],"external_id":null,"first_name":"Radia","has_image":false,"id":"user_06c855847ae29bb8b36952b65083","image_url":"https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCIsImlpZCI6Imluc18yOWNyZWRpdGdhdGVzdml4c2VuZCIsInJpZCI6InVzZXJfMjl3ODNzeG1ETkd3T3VFdGhjZTVnZzU2RmNDIiwiaW5pdGlhbHMiOiJBTCJ9","last_active_at":1795818160931,"last_name":"Perlman","last_sign_in_at":null,"legal_accepted_at":null,"locked":false,"lockout_expires_in_seconds":null,"mfa_disabled_at":null,"mfa_enabled_at":null,"object":"user","passkeys":[],"password_enabled":true,"phone_numbers":[],"primary_email_address_id":"idn_2dce0eec3370db9ade26a8513400","primary_phone_number_id":null,"primary_web3_wallet_id":null,"private_metadata":{},"profile_image_url":"https://www.gravatar.com/avatar?d=mp","public_metadata":{},"saml_accounts":[],"totp_enabled":false,"two_factor_enabled":false,"unsafe_metadata":{},"updated_at":1795818160931,"username":null,"verification_attempts_remaining":100,"web3_wallets":[]},"event_attributes":{"http_request":{"client_ip":"192.0.2.10","user_agent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"}},"instance_id":"ins_f10751a0ffb13951d60817670403","object":"event","timestamp":1795818160931,"type":"user.created"}`

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
