-- Every running hookd instance writes its heartbeat here every few seconds (database
-- clock, ms). A lease records the instance that holds it, so that the leases of an
-- instance whose heartbeat stopped are taken back long before they expire.
CREATE TABLE hookd_instances (
    id           TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
ALTER TABLE hookd_deliveries ADD COLUMN lease_instance TEXT;
