-- The reconciler: dead events, the Clerk metadata outbox, run records and the
-- backfill watermark.

-- 'dead': an event the reconciler gave up on after its attempts; an operator
-- looks at last_error and may set it back to 'failed' to try again.
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_status_check;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_status_check
    CHECK (status IN ('processed', 'ignored', 'rejected', 'failed', 'stale', 'dead'));

-- Clerk public-metadata writes owed to Clerk, written in the same transaction
-- as the credit that causes them, delivered by the webhook's worker and
-- retried by the reconciler. One row per cause (idempotency_key), so there is
-- exactly one successful write per grant.
CREATE TABLE clerk_metadata_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users (id),
    clerk_id        text        NOT NULL,
    idempotency_key text        NOT NULL UNIQUE,
    public_metadata jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);

CREATE INDEX clerk_metadata_outbox_due_idx ON clerk_metadata_outbox (next_attempt_at) WHERE status = 'pending';

-- One row per reconciler run.
CREATE TABLE reconcile_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome     text        NOT NULL DEFAULT 'running'
        CHECK (outcome IN ('running', 'success', 'partial', 'failed', 'skipped')),
    summary     jsonb,
    error       text
);

CREATE INDEX reconcile_runs_success_idx ON reconcile_runs (finished_at) WHERE outcome = 'success';

-- Small named values the reconciler keeps between runs (the backfill watermark).
CREATE TABLE reconcile_state (
    name       text PRIMARY KEY,
    value      text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
