package postgres

import (
	"context"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"
)

// roleName is what GrantRuntime accepts as a role: a plain identifier, so
// that no quoting question arises (PostgreSQL folds it to lower case).
var roleName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// runtimeGrants is everything the webhook and the reconciler do, and nothing
// more: no DDL (they never migrate), no DELETE or TRUNCATE anywhere, and on
// the ledger only INSERT and SELECT (append-only by privilege as well as by
// its trigger). %[1]s is the role, %[2]s the schema.
var runtimeGrants = []string{
	`GRANT USAGE ON SCHEMA %[2]s TO %[1]s`,
	`GRANT SELECT, INSERT, UPDATE ON %[2]s.users, %[2]s.webhook_events, %[2]s.clerk_metadata_outbox,
		%[2]s.reconcile_runs, %[2]s.reconcile_state, %[2]s.credit_lots, %[2]s.credit_holds TO %[1]s`,
	`GRANT SELECT, INSERT ON %[2]s.api_requests TO %[1]s`,
	`GRANT SELECT, INSERT ON %[2]s.credit_transactions TO %[1]s`,
	`REVOKE UPDATE, DELETE, TRUNCATE ON %[2]s.credit_transactions FROM %[1]s`,
	`GRANT SELECT ON %[2]s.bun_migrations TO %[1]s`,
	`GRANT USAGE ON ALL SEQUENCES IN SCHEMA %[2]s TO %[1]s`,
	`GRANT EXECUTE ON FUNCTION %[2]s.creditgate_scrubbed_payload(jsonb, text) TO %[1]s`,
}

// GrantRuntime gives role exactly the privileges the running service needs
// on the schema db's migrations created (see runtimeGrants). Run it as the
// role that migrated (the tables' owner) after Migrate; running it again is
// a no-op. The role must exist.
func GrantRuntime(ctx context.Context, db *bun.DB, role string) error {
	if !roleName.MatchString(role) {
		return fmt.Errorf("runtime role %q: must be a plain identifier (letters, digits, _)", role)
	}
	var schema string
	if err := db.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return fmt.Errorf("grant to %s: %w", role, mapError(err))
	}
	ident := pgx.Identifier{role}.Sanitize()
	sch := pgx.Identifier{schema}.Sanitize()
	return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for _, g := range runtimeGrants {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(g, ident, sch)); err != nil {
				return fmt.Errorf("grant to %s: %w", role, mapError(err))
			}
		}
		return nil
	})
}
