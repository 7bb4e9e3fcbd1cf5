-- hookd schema for SQLite. All times are integer milliseconds since the Unix epoch (UTC),
-- taken from the database's clock so that every hookd process agrees on "now".

-- The producer-facing outbox: producers INSERT here inside their own transaction.
-- hookd moves each row into hookd_events + hookd_deliveries and deletes it, atomically.
CREATE TABLE hookd_outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT,
    event_type  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    endpoint_id TEXT,
    created_at  INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
);

CREATE TABLE hookd_endpoints (
    id               TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    description      TEXT,
    event_types      TEXT NOT NULL,             -- JSON array of patterns
    bearer_token     TEXT,
    signature_scheme TEXT NOT NULL,
    secret           TEXT NOT NULL,
    retry_schedule   TEXT,                      -- JSON array of delays in ms; NULL = global schedule
    timeout_ms       INTEGER,                   -- NULL = global timeout
    headers          TEXT NOT NULL DEFAULT '{}', -- JSON object of static headers
    enabled          BOOLEAN NOT NULL DEFAULT 1,
    disabled_reason  TEXT,
    disabled_at      INTEGER,
    deleted_at       INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE hookd_events (
    event_id      TEXT PRIMARY KEY,
    event_type    TEXT NOT NULL,
    payload       TEXT NOT NULL,
    endpoint_id   TEXT,
    payload_error TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE hookd_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL REFERENCES hookd_events(event_id),
    endpoint_id      TEXT NOT NULL REFERENCES hookd_endpoints(id),
    event_type       TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    auto_attempts    INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,                  -- NULL while pending = parked (endpoint disabled)
    next_trigger     TEXT NOT NULL DEFAULT 'auto',
    manual_only      BOOLEAN NOT NULL DEFAULT 0, -- a resend of a finished delivery: its failure is final
    resend_requested BOOLEAN NOT NULL DEFAULT 0, -- resend asked for while in flight
    lease_token      TEXT,
    lease_expires_at INTEGER,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
);

-- The claim index: only due-able rows, ordered by due time. Its size is the backlog, not the table.
CREATE INDEX hookd_deliveries_due ON hookd_deliveries (next_attempt_at) WHERE state = 'pending';
-- The rescuer's index: only leased rows.
CREATE INDEX hookd_deliveries_leased ON hookd_deliveries (lease_expires_at) WHERE state = 'in_flight';
CREATE INDEX hookd_deliveries_lease_token ON hookd_deliveries (lease_token) WHERE lease_token IS NOT NULL;
CREATE INDEX hookd_deliveries_event ON hookd_deliveries (event_id);
CREATE INDEX hookd_deliveries_endpoint ON hookd_deliveries (endpoint_id, id);
CREATE INDEX hookd_deliveries_state ON hookd_deliveries (state, id);

CREATE TABLE hookd_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id   INTEGER NOT NULL REFERENCES hookd_deliveries(id),
    attempt       INTEGER NOT NULL,
    trigger       TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    status_code   INTEGER,
    outcome       TEXT NOT NULL,
    error         TEXT,
    response_body TEXT
);
CREATE INDEX hookd_attempts_delivery ON hookd_attempts (delivery_id, attempt);
