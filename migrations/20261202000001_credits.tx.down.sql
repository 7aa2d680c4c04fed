DROP TRIGGER credit_transactions_legacy_lots ON credit_transactions;
DROP FUNCTION credit_transactions_legacy_lots();
DROP TABLE api_requests;
DROP TABLE credit_holds;
DROP TABLE credit_lots;
ALTER TABLE users DROP COLUMN version, DROP COLUMN spent_credits;
DROP INDEX credit_transactions_refund_of_idx;
ALTER TABLE credit_transactions
    DROP COLUMN expires_at, DROP COLUMN hold_id, DROP COLUMN refund_of, DROP COLUMN actor,
    DROP COLUMN metadata, DROP COLUMN reference, DROP COLUMN kind;
