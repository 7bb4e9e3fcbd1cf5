-- Fair claims list the endpoints with first attempts due (a skip scan over this index),
-- then read each chosen endpoint's oldest due rows from it. Its predicate says
-- `attempts < 1`, not `attempts = 0`, so that the statements written for it cannot be read
-- through the due-order index of first attempts instead (which, filtering on the endpoint,
-- would walk another endpoint's backlog).
CREATE INDEX hookd_deliveries_due_endpoint ON hookd_deliveries (endpoint_id, next_attempt_at) WHERE state = 'pending' AND attempts < 1;
