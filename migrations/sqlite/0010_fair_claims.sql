-- Fair claims list the endpoints with first attempts due (a skip scan over this index),
-- then read each chosen endpoint's oldest due rows from it. Its predicate is spelled so that
-- neither it nor the due-order index of first attempts can stand in for the other: the
-- statements for this one say `attempts < 1` (which does not imply the other's
-- `attempts = 0`: read through that one, filtering on the endpoint, a share would walk
-- another endpoint's backlog), and `NOT held` (true of every due row), which the claim's
-- due-order reads do not say.
CREATE INDEX hookd_deliveries_due_endpoint ON hookd_deliveries (endpoint_id, next_attempt_at) WHERE state = 'pending' AND attempts < 1 AND NOT held;
