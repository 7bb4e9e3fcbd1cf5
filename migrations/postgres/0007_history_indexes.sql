-- Whether an endpoint has a delivery on its way (an ordered endpoint's next must wait) is
-- one seek here, whatever the endpoint's history: only unfinished rows are in it, so its
-- size is the backlog. Within an endpoint the rows on their way come first, then the held
-- ones, oldest first (the next to let go is the first of them). `held IS NOT NULL` is
-- always true (the column is NOT NULL): only a query that spells out both terms uses the
-- index, which keeps it from the claim. With statistics from before a burst, PostgreSQL
-- would otherwise read every pending row through it and sort them on each claim.
CREATE INDEX hookd_deliveries_unfinished ON hookd_deliveries (endpoint_id, held, id)
    WHERE state IN ('pending', 'in_flight') AND held IS NOT NULL;
-- Bulk resend (and the log) by event type, newest first from a cursor, and by time.
CREATE INDEX hookd_deliveries_event_type ON hookd_deliveries (event_type, id);
CREATE INDEX hookd_deliveries_created ON hookd_deliveries (created_at);
-- The lowest id a bulk resend matched when it was created: its steps stop there instead
-- of reading the older history.
ALTER TABLE hookd_resend_jobs ADD COLUMN floor_id BIGINT NOT NULL DEFAULT 0;
