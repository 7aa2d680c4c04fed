package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

// TestRuntimeRoleLeastPrivilege: the role the service runs as, granted by
// `webhook migrate` (GrantRuntime), serves deliveries and reconciles, but
// cannot change the schema, and cannot update, delete or truncate ledger
// entries even without the append-only trigger.
func TestRuntimeRoleLeastPrivilege(t *testing.T) {
	t.Parallel()
	owner, ownerURL := pgtest.New(t)
	ctx := context.Background()
	role := fmt.Sprintf("creditgate_rt_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
	if _, err := owner.ExecContext(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'rt-secret'", role)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Roles are the server's, not the test database's.
		_, _ = owner.ExecContext(context.Background(), fmt.Sprintf("DROP OWNED BY %s", role))
		if _, err := owner.ExecContext(context.Background(), fmt.Sprintf("DROP ROLE %s", role)); err != nil {
			t.Errorf("drop role: %v", err)
		}
	})
	for range 2 { // twice: a second grant is a no-op
		if err := postgres.GrantRuntime(ctx, owner, role); err != nil {
			t.Fatal(err)
		}
	}
	if err := postgres.GrantRuntime(ctx, owner, "x; DROP TABLE users"); err == nil {
		t.Error("GrantRuntime took a role name that is not a plain identifier")
	}

	u, _ := url.Parse(ownerURL)
	u.User = url.UserPassword(role, "rt-secret")
	rt, err := postgres.Open(u.String(), postgres.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if err := postgres.Ready(ctx, rt); err != nil {
		t.Fatalf("readiness as the runtime role: %v", err)
	}
	store := postgres.NewStore(rt)
	svc := &ledger.Service{Store: store, Decode: clerk.Decode, SignupCredits: 20, ForfeitOnDelete: true, MetadataOutbox: true}
	for _, d := range []ledger.Delivery{
		delivery("msg_1", userCreated("user_rt", "rt@example.com")),
		delivery("msg_2", []byte(`{"type":"session.created","data":{"id":"sess_1","user_id":"user_rt"}}`)),
		delivery("msg_3", []byte(`{"type":"user.deleted","data":{"id":"user_rt","deleted":true}}`)),
	} {
		if _, err := svc.Process(ctx, d); err != nil {
			t.Fatalf("%s as the runtime role: %v", d.SvixID, err)
		}
	}
	if _, err := store.ScrubExpiredPayloads(ctx, time.Now(), 10); err != nil {
		t.Errorf("retention as the runtime role: %v", err)
	}
	if _, err := store.StartRun(ctx); err != nil {
		t.Errorf("record a run as the runtime role: %v", err)
	}
	if _, _, err := store.ClaimOutbox(ctx, time.Minute); err != nil {
		t.Errorf("claim outbox as the runtime role: %v", err)
	}

	for _, stmt := range []string{
		"CREATE TABLE evil (id int)",
		"ALTER TABLE users DROP CONSTRAINT users_available_credits_check",
		"DROP TABLE webhook_events",
		"UPDATE credit_transactions SET amount = 1000",
		"DELETE FROM credit_transactions",
		"TRUNCATE credit_transactions",
		"DELETE FROM users",
		"ALTER TABLE credit_transactions DISABLE TRIGGER credit_transactions_no_update_delete",
	} {
		_, err := rt.ExecContext(ctx, stmt)
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); !ok || (pgErr.Code != "42501" && pgErr.Code != "42P01") {
			t.Errorf("%s as the runtime role: %v, want a permission error (42501)", stmt, err)
		}
	}
	pgtest.CheckInvariants(t, owner)
}
