-- Nothing looks a delivery up by its lease token any more: a claim returns its rows, and a
-- result is found by id and then checked against the token. One index fewer to write on
-- every claim and every result.
DROP INDEX IF EXISTS hookd_deliveries_lease_token;

-- The (state, id) index serves the delivery log's state filter; for pending and in-flight
-- rows the due and lease indexes serve, and the log finds them among the newest ids.
-- Partial, a delivery writes one entry to it (when it finishes) instead of five (an
-- insert, and a delete and an insert on each of two state changes): SQLite has one
-- writer, and every index entry is its time. The log adds the predicate to its filter so
-- that SQLite sees it may use the index.
DROP INDEX hookd_deliveries_state;
CREATE INDEX hookd_deliveries_state ON hookd_deliveries (state, id) WHERE state IN ('succeeded', 'failed');
