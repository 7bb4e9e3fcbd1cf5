-- W3C trace context: a producer may hand hookd the `traceparent` of the trace its event
-- belongs to (an outbox column, or the API's request header). The event keeps it, so every
-- attempt joins that trace, whichever instance makes it and however late.
ALTER TABLE hookd_outbox ADD COLUMN traceparent TEXT;
ALTER TABLE hookd_events ADD COLUMN traceparent TEXT;
