-- First attempts and retries are claimed separately (a retry storm must not starve new
-- events); each kind reads its own partial index of pending rows in due order.
DROP INDEX hookd_deliveries_due;
CREATE INDEX hookd_deliveries_due_first ON hookd_deliveries (next_attempt_at) WHERE state = 'pending' AND attempts = 0;
CREATE INDEX hookd_deliveries_due_retry ON hookd_deliveries (next_attempt_at) WHERE state = 'pending' AND attempts > 0;
