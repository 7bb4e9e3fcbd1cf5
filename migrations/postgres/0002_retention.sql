-- Retention finds finished deliveries by age, and events left without deliveries.
CREATE INDEX hookd_deliveries_finished ON hookd_deliveries (finished_at) WHERE state IN ('succeeded', 'failed');
CREATE INDEX hookd_events_created ON hookd_events (created_at);
