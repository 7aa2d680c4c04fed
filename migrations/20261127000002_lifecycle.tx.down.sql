DROP INDEX IF EXISTS webhook_events_clerk_user_id_idx;
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_status_check;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_status_check
    CHECK (status IN ('processed', 'ignored', 'rejected', 'failed'));
ALTER TABLE users DROP COLUMN deleted_at;
ALTER TABLE users DROP COLUMN clerk_updated_at;
