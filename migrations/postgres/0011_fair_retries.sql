-- Fair claims share retries as they share first attempts: the endpoints with retries due
-- are listed by a skip scan over this index, and each chosen endpoint's oldest due retries
-- read from it. Its predicate (`attempts <> 0`, `NOT held`) is spelled, as 0010's is, so
-- that neither it nor the due-order index of retries (`attempts > 0`) can stand in for the
-- other.
CREATE INDEX hookd_deliveries_due_retry_endpoint ON hookd_deliveries (endpoint_id, next_attempt_at) WHERE state = 'pending' AND attempts <> 0 AND NOT held;
