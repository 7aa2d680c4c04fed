-- A debit answered in one round trip stores its answer as the entry it made
-- and the balance after it (rendered again, byte for byte, on a replay)
-- instead of the rendered bytes, which only exist after the statement.
ALTER TABLE api_requests
    ALTER COLUMN response DROP NOT NULL,
    ADD COLUMN entry_id bigint REFERENCES credit_transactions (id),
    ADD COLUMN balance_after bigint,
    ADD CONSTRAINT api_requests_answer_check
        CHECK (response IS NOT NULL OR (entry_id IS NOT NULL AND balance_after IS NOT NULL));
