-- The credits API: the application reads balances and spends, holds, refunds
-- and grants credits through creditgate.
--
-- Money rules, kept by the statements that move credits (and checked after
-- every test, pkg/pgtest):
--   users.available_credits = Σ credit entries − Σ debit entries
--                           = Σ credit_lots.remaining + Σ amount of active holds
--   users.used_credits      = Σ debit entries (spends, captures, expiries, forfeits)
--   users.spent_credits     = Σ debits and captures − Σ refunds
--   nothing negative; a lot never holds more than it was granted; the refunds of
--   a debit never exceed it; every entry has one cause (its idempotency key).

-- What an entry is. credit_transactions stays append-only: rows written before
-- this migration keep kind NULL and read as signup or forfeit by their reason.
ALTER TABLE credit_transactions
    ADD COLUMN kind       text CHECK (kind IN ('signup', 'grant', 'debit', 'capture', 'refund', 'expiry', 'forfeit')),
    ADD COLUMN reference  text,
    ADD COLUMN metadata   jsonb,
    -- who asked: an API key's name or namespace/serviceaccount; NULL for creditgate's own
    ADD COLUMN actor      text,
    -- a refund's debit
    ADD COLUMN refund_of  bigint REFERENCES credit_transactions (id),
    -- a capture's hold
    ADD COLUMN hold_id    bigint,
    -- a grant's expiry; for a debit or capture, the latest expiry among the
    -- credits it took (NULL: some never expire), which its refunds inherit
    ADD COLUMN expires_at timestamptz;

CREATE INDEX credit_transactions_refund_of_idx ON credit_transactions (refund_of) WHERE refund_of IS NOT NULL;

ALTER TABLE users
    ADD COLUMN spent_credits bigint NOT NULL DEFAULT 0 CHECK (spent_credits >= 0),
    -- grows with every change to the account's credits
    ADD COLUMN version bigint NOT NULL DEFAULT 0 CHECK (version >= 0);

-- Lots: what each credit entry added, and what of it is left to spend. Debits
-- and holds take from the lots that expire soonest first, then from those that
-- never expire, oldest first. An expired lot is spendable no more; the
-- reconciler books what was left in it as an expiry debit, exactly once
-- (expired counts what was booked, which makes each booking's key).
CREATE TABLE credit_lots (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id),
    entry_id   bigint      NOT NULL REFERENCES credit_transactions (id),
    amount     bigint      NOT NULL CHECK (amount > 0),
    remaining  bigint      NOT NULL CHECK (remaining >= 0),
    expired    bigint      NOT NULL DEFAULT 0 CHECK (expired >= 0),
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (remaining + expired <= amount)
);

-- A user's spendable lots in spending order.
CREATE INDEX credit_lots_spend_idx ON credit_lots (user_id, expires_at NULLS LAST, id) WHERE remaining > 0;
-- The reconciler's queue of lots to expire.
CREATE INDEX credit_lots_expiry_idx ON credit_lots (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;

-- The credits users held before lots existed: one lot each, never expiring.
INSERT INTO credit_lots (user_id, entry_id, amount, remaining)
SELECT u.id, (SELECT max(t.id) FROM credit_transactions t WHERE t.user_id = u.id AND t.type = 'credit'),
       u.available_credits, u.available_credits
FROM users u WHERE u.available_credits > 0;

-- During a rolling upgrade the previous release's pods keep running on this
-- schema: they write signup credits and forfeits without kind and know
-- nothing of lots. This keeps their entries in step with the lots (a credit
-- gets its lot; a forfeit, which takes everything, empties them), so the
-- money rules hold while old and new pods serve side by side.
CREATE FUNCTION credit_transactions_legacy_lots() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.type = 'credit' THEN
        INSERT INTO credit_lots (user_id, entry_id, amount, remaining) VALUES (NEW.user_id, NEW.id, NEW.amount, NEW.amount);
    ELSE
        UPDATE credit_lots SET remaining = 0 WHERE user_id = NEW.user_id AND remaining > 0;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER credit_transactions_legacy_lots
    AFTER INSERT ON credit_transactions
    FOR EACH ROW WHEN (NEW.kind IS NULL)
    EXECUTE FUNCTION credit_transactions_legacy_lots();

-- Holds: credits reserved for a job. A hold takes its credits from lots when
-- it is made (allocations: [[lot_id, amount], …]), so that it can always be
-- captured up to its amount until it expires, even if those lots expire
-- meanwhile; whatever is not captured goes back to the lots it came from.
CREATE TABLE credit_holds (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id          bigint      NOT NULL REFERENCES users (id),
    clerk_id         text        NOT NULL,
    amount           bigint      NOT NULL CHECK (amount > 0),
    captured         bigint      NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= amount),
    status           text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'captured', 'voided', 'expired')),
    allocations      jsonb       NOT NULL,
    reason           text        NOT NULL CHECK (reason <> ''),
    reference        text,
    actor            text,
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    capture_entry_id bigint REFERENCES credit_transactions (id),
    CHECK ((status = 'active') = (finished_at IS NULL))
);

CREATE INDEX credit_holds_user_active_idx ON credit_holds (user_id) WHERE status = 'active';
-- The reconciler's queue of holds to expire.
CREATE INDEX credit_holds_expiry_idx ON credit_holds (expires_at) WHERE status = 'active';

-- Idempotent API requests: the client's key, unique per account and kept
-- forever, with a fingerprint of the request and the answer it got, written
-- in the transaction of the effect.
CREATE TABLE api_requests (
    user_id         bigint      NOT NULL REFERENCES users (id),
    idempotency_key text        NOT NULL CHECK (idempotency_key <> ''),
    fingerprint     bytea       NOT NULL,
    status          integer     NOT NULL,
    -- the answer as sent, byte for byte (a replay must be identical)
    response        bytea       NOT NULL,
    actor           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idempotency_key)
);
