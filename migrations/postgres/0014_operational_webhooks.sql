-- When hookd last told of the endpoint's failing (hookd.endpoint.failing): at most once an
-- hour per endpoint, however often it recovers and fails again.
ALTER TABLE hookd_endpoints ADD COLUMN failing_noticed_at BIGINT;
