-- Secret rotation: the previous secret keeps signing (beside the new one) until it expires.
ALTER TABLE hookd_endpoints ADD COLUMN previous_secret TEXT;
ALTER TABLE hookd_endpoints ADD COLUMN previous_secret_expires_at BIGINT;
-- Ordered endpoints deliver strictly in insertion order, one at a time.
ALTER TABLE hookd_endpoints ADD COLUMN ordered BOOLEAN NOT NULL DEFAULT FALSE;
-- Endpoint health: failing without a single success for too long disables the endpoint.
ALTER TABLE hookd_endpoints ADD COLUMN last_success_at BIGINT;
ALTER TABLE hookd_endpoints ADD COLUMN failing_since BIGINT;

-- A delivery of an ordered endpoint waiting for the one before it (pending, no due time).
ALTER TABLE hookd_deliveries ADD COLUMN held BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX hookd_deliveries_held ON hookd_deliveries (endpoint_id, id) WHERE held;

-- Bulk resends, worked through in batches; the cursor moves in the same transaction as
-- the resends, so a restart continues where it stopped and nothing is resent twice.
CREATE TABLE hookd_resend_jobs (
    id          TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('running', 'done')),
    -- The filter, as given.
    f_state       TEXT,
    f_endpoint_id TEXT,
    f_event_id    TEXT,
    f_event_type  TEXT,
    f_since       BIGINT,
    f_until       BIGINT,
    -- Deliveries with an id at or below the cursor are still to do (newest first).
    cursor      BIGINT NOT NULL,
    matched     BIGINT NOT NULL,
    resent      BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX hookd_resend_jobs_running ON hookd_resend_jobs (created_at) WHERE state = 'running';
