-- The whole Clerk user lifecycle: newest-wins updates and deletion tombstones.

-- Clerk's data.updated_at of the newest user.created/user.updated applied:
-- an event not newer than this changes nothing (it is stale).
ALTER TABLE users ADD COLUMN clerk_updated_at timestamptz;

-- Set by user.deleted. The row stays as a tombstone: a late or replayed
-- user.created/user.updated never revives the user or credits it again.
ALTER TABLE users ADD COLUMN deleted_at timestamptz;

ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_status_check;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_status_check
    CHECK (status IN ('processed', 'ignored', 'rejected', 'failed', 'stale'));

CREATE INDEX webhook_events_clerk_user_id_idx ON webhook_events (clerk_user_id);
