-- creditgate schema v1: users, the append-only credit ledger and the webhook event log.
-- Operators query these tables directly; column names and meanings are a public contract.

CREATE TABLE users (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clerk_id          text        NOT NULL UNIQUE CHECK (clerk_id <> ''),
    email             text,
    available_credits bigint      NOT NULL DEFAULT 0 CHECK (available_credits >= 0),
    used_credits      bigint      NOT NULL DEFAULT 0 CHECK (used_credits >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- lets credit_transactions prove that its clerk_id is its user's clerk_id
    UNIQUE (id, clerk_id)
);

-- Email is deliberately not unique: Clerk lets an address move between accounts.
CREATE INDEX users_email_idx ON users (email) WHERE email IS NOT NULL;

CREATE TABLE webhook_events (
    svix_id       text        PRIMARY KEY CHECK (svix_id <> ''),
    event_type    text        NOT NULL DEFAULT '',
    clerk_user_id text,
    -- the verified body; NULL only when it is not storable as jsonb, then raw_body holds it
    payload       jsonb,
    raw_body      bytea,
    status        text        NOT NULL CHECK (status IN ('processed', 'ignored', 'rejected', 'failed')),
    attempts      integer     NOT NULL DEFAULT 1 CHECK (attempts >= 0),
    last_error    text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    CHECK (payload IS NOT NULL OR raw_body IS NOT NULL)
);

-- The reconciler's work queue: only unfinished events, oldest first.
CREATE INDEX webhook_events_unfinished_idx ON webhook_events (received_at)
    WHERE status = 'failed';

CREATE TABLE credit_transactions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id          bigint      NOT NULL,
    clerk_id         text        NOT NULL,
    amount           bigint      NOT NULL CHECK (amount > 0),
    type             text        NOT NULL CHECK (type IN ('credit', 'debit')),
    reason           text        NOT NULL CHECK (reason <> ''),
    status           text        NOT NULL DEFAULT 'completed' CHECK (status IN ('completed')),
    -- the one cause of this entry, e.g. signup:<clerk_id>
    idempotency_key  text        NOT NULL UNIQUE CHECK (idempotency_key <> ''),
    webhook_event_id text        REFERENCES webhook_events (svix_id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (user_id, clerk_id) REFERENCES users (id, clerk_id)
);

CREATE INDEX credit_transactions_user_id_idx ON credit_transactions (user_id);

-- The ledger is append-only: corrections are new entries, never edits.
CREATE FUNCTION credit_transactions_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_transactions is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER credit_transactions_no_update_delete
    BEFORE UPDATE OR DELETE ON credit_transactions
    FOR EACH ROW EXECUTE FUNCTION credit_transactions_append_only();

CREATE TRIGGER credit_transactions_no_truncate
    BEFORE TRUNCATE ON credit_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION credit_transactions_append_only();
