-- An endpoint's rate limit (deliveries per second; NULL: unlimited) and its budget: the
-- theoretical arrival time (ms, database clock) of its next delivery at that rate, moved
-- on by each claim that takes its deliveries (see crates/hookd-store/src/rate.rs).
ALTER TABLE hookd_endpoints ADD COLUMN rate_limit REAL;
ALTER TABLE hookd_endpoints ADD COLUMN rate_tat REAL;
-- The idle wait reads the limited endpoints only.
CREATE INDEX hookd_endpoints_rate_limited ON hookd_endpoints (id) WHERE rate_limit IS NOT NULL;
