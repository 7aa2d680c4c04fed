-- Clerk metadata writes are claimed with a lease and delivered with no
-- transaction open (a slow Clerk must not hold pool connections): a claim
-- moves next_attempt_at past the call's deadline and bumps claim, so a
-- message whose worker died is due again when its lease runs out, and a
-- result is recorded only by the claim that is still current.
ALTER TABLE clerk_metadata_outbox ADD COLUMN claim bigint NOT NULL DEFAULT 0;

-- 'skipped': Clerk answered in a way no retry can change (404: the user is
-- gone; 400, 410, 422: the write itself is refused). Final, with the reason
-- in last_error; counted, not paged.
ALTER TABLE clerk_metadata_outbox DROP CONSTRAINT clerk_metadata_outbox_status_check;
ALTER TABLE clerk_metadata_outbox ADD CONSTRAINT clerk_metadata_outbox_status_check
    CHECK (status IN ('pending', 'delivered', 'dead', 'skipped'));
