DROP TABLE IF EXISTS reconcile_state;
DROP TABLE IF EXISTS reconcile_runs;
DROP TABLE IF EXISTS clerk_metadata_outbox;
UPDATE webhook_events SET status = 'failed' WHERE status = 'dead';
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_status_check;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_status_check
    CHECK (status IN ('processed', 'ignored', 'rejected', 'failed', 'stale'));
