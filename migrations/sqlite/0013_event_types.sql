-- The event-type catalog: the event types a provider documents, each with an optional JSON
-- Schema its payloads must match. Provider-wide (no tenant). Endpoints may still subscribe
-- to any type; a type with no row here is not checked. `schema` is the JSON text as given.
CREATE TABLE hookd_event_types (
    name        TEXT PRIMARY KEY,
    description TEXT,
    schema      TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
