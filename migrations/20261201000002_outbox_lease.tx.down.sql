-- A skipped message becomes dead, the closest state the old CHECK allows.
UPDATE clerk_metadata_outbox SET status = 'dead' WHERE status = 'skipped';
ALTER TABLE clerk_metadata_outbox DROP CONSTRAINT clerk_metadata_outbox_status_check;
ALTER TABLE clerk_metadata_outbox ADD CONSTRAINT clerk_metadata_outbox_status_check
    CHECK (status IN ('pending', 'delivered', 'dead'));
ALTER TABLE clerk_metadata_outbox DROP COLUMN claim;
