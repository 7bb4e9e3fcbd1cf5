-- Whether an endpoint has a delivery on its way (an ordered endpoint's next must wait) is
-- one seek here, whatever the endpoint's history: only unfinished rows are in it, so its
-- size is the backlog. Non-held rows come first within an endpoint. Queries spell out the
-- state predicate so that SQLite sees it may use the index. `endpoint_id IS NOT NULL`
-- (always true) keeps it from any query that does not name an endpoint, the claim in
-- particular: with statistics from before a burst, PostgreSQL would otherwise read every
-- pending row through it and sort them on each claim.
CREATE INDEX hookd_deliveries_unfinished ON hookd_deliveries (endpoint_id, held)
    WHERE state IN ('pending', 'in_flight') AND endpoint_id IS NOT NULL;
-- Bulk resend (and the log) by event type, newest first from a cursor, and by time.
CREATE INDEX hookd_deliveries_event_type ON hookd_deliveries (event_type, id);
CREATE INDEX hookd_deliveries_created ON hookd_deliveries (created_at);
-- The lowest id a bulk resend matched when it was created: its steps stop there instead
-- of reading the older history.
ALTER TABLE hookd_resend_jobs ADD COLUMN floor_id BIGINT NOT NULL DEFAULT 0;
