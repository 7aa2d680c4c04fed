DROP TABLE IF EXISTS credit_transactions;
DROP FUNCTION IF EXISTS credit_transactions_append_only();
DROP TABLE IF EXISTS webhook_events;
DROP TABLE IF EXISTS users;
