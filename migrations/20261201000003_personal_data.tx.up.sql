-- Personal data in stored webhook bodies: Clerk's user events carry email
-- addresses, names, phone numbers, images and, for sessions, IP addresses and
-- user agents. creditgate keeps a body only as long as it is needed: after
-- user.deleted the user's stored bodies are scrubbed at once, and the
-- reconciler scrubs every finished event after a retention period. A scrubbed
-- body keeps what audit needs: the event's type, object, timestamp and
-- instance, and of its data only ids, object, deleted and the times.

-- When the body was reduced to scrubbed_payload's fields (NULL: as received).
ALTER TABLE webhook_events ADD COLUMN scrubbed_at timestamptz;

-- The retention pass's queue: bodies not yet scrubbed, oldest first.
CREATE INDEX webhook_events_unscrubbed_idx ON webhook_events (received_at) WHERE scrubbed_at IS NULL;

CREATE FUNCTION creditgate_scrubbed_payload(payload jsonb, event_type text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'type', event_type,
        'object', payload -> 'object',
        'timestamp', payload -> 'timestamp',
        'instance_id', payload -> 'instance_id',
        'data', jsonb_strip_nulls(jsonb_build_object(
            'id', payload -> 'data' -> 'id',
            'object', payload -> 'data' -> 'object',
            'user_id', payload -> 'data' -> 'user_id',
            'deleted', payload -> 'data' -> 'deleted',
            'created_at', payload -> 'data' -> 'created_at',
            'updated_at', payload -> 'data' -> 'updated_at'))))
$$;
