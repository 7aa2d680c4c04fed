-- Scrubbed bodies stay scrubbed: what was erased cannot come back.
DROP FUNCTION creditgate_scrubbed_payload(jsonb, text);
DROP INDEX webhook_events_unscrubbed_idx;
ALTER TABLE webhook_events DROP COLUMN scrubbed_at;
