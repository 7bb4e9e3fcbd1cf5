-- hookd schema for PostgreSQL. All times are BIGINT milliseconds since the Unix epoch (UTC),
-- taken from the database's clock (hookd_now_ms) so that every hookd instance agrees on "now".

-- STABLE (not VOLATILE) so that it can bound an index scan.
CREATE FUNCTION hookd_now_ms() RETURNS BIGINT
    LANGUAGE sql STABLE
    AS $$ SELECT (extract(epoch FROM now()) * 1000)::BIGINT $$;

-- The producer-facing outbox: producers INSERT here inside their own transaction.
-- hookd moves each row into hookd_events + hookd_deliveries and deletes it, atomically.
CREATE TABLE hookd_outbox (
    seq         BIGSERIAL PRIMARY KEY,
    event_id    TEXT,
    event_type  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    endpoint_id TEXT,
    created_at  BIGINT NOT NULL DEFAULT hookd_now_ms()
);

-- Wake every hookd instance as soon as a producer's transaction commits.
CREATE FUNCTION hookd_outbox_notify() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN PERFORM pg_notify('hookd', 'outbox'); RETURN NULL; END $$;
CREATE TRIGGER hookd_outbox_notify AFTER INSERT ON hookd_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION hookd_outbox_notify();

CREATE TABLE hookd_endpoints (
    id               TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    description      TEXT,
    event_types      TEXT NOT NULL,
    bearer_token     TEXT,
    signature_scheme TEXT NOT NULL,
    secret           TEXT NOT NULL,
    retry_schedule   TEXT,
    timeout_ms       BIGINT,
    headers          TEXT NOT NULL DEFAULT '{}',
    enabled          BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason  TEXT,
    disabled_at      BIGINT,
    deleted_at       BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE TABLE hookd_events (
    event_id      TEXT PRIMARY KEY,
    event_type    TEXT NOT NULL,
    payload       TEXT NOT NULL,
    endpoint_id   TEXT,
    payload_error TEXT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE hookd_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES hookd_events(event_id),
    endpoint_id      TEXT NOT NULL REFERENCES hookd_endpoints(id),
    event_type       TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    auto_attempts    INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    next_trigger     TEXT NOT NULL DEFAULT 'auto',
    manual_only      BOOLEAN NOT NULL DEFAULT FALSE,
    resend_requested BOOLEAN NOT NULL DEFAULT FALSE,
    lease_token      TEXT,
    lease_expires_at BIGINT,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT
);

CREATE INDEX hookd_deliveries_due ON hookd_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX hookd_deliveries_leased ON hookd_deliveries (lease_expires_at) WHERE state = 'in_flight';
CREATE INDEX hookd_deliveries_lease_token ON hookd_deliveries (lease_token) WHERE lease_token IS NOT NULL;
CREATE INDEX hookd_deliveries_event ON hookd_deliveries (event_id);
CREATE INDEX hookd_deliveries_endpoint ON hookd_deliveries (endpoint_id, id);
CREATE INDEX hookd_deliveries_state ON hookd_deliveries (state, id);

CREATE TABLE hookd_attempts (
    id            BIGSERIAL PRIMARY KEY,
    delivery_id   BIGINT NOT NULL REFERENCES hookd_deliveries(id),
    attempt       INTEGER NOT NULL,
    trigger       TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    duration_ms   BIGINT NOT NULL,
    status_code   INTEGER,
    outcome       TEXT NOT NULL,
    error         TEXT,
    response_body TEXT
);
CREATE INDEX hookd_attempts_delivery ON hookd_attempts (delivery_id, attempt);
