-- Tenants: the provider's customers. A NULL tenant_id is the provider-wide tenant, as every
-- row was before; the indexes below are partial (WHERE tenant_id IS NOT NULL), so a
-- deployment without tenants stores and maintains nothing more.
ALTER TABLE hookd_outbox ADD COLUMN tenant_id TEXT;
ALTER TABLE hookd_endpoints ADD COLUMN tenant_id TEXT;
ALTER TABLE hookd_events ADD COLUMN tenant_id TEXT;
-- Copied from the event at fan-out, so a tenant's delivery log reads one index.
ALTER TABLE hookd_deliveries ADD COLUMN tenant_id TEXT;
-- A bulk resend of a tenant stays within it.
ALTER TABLE hookd_resend_jobs ADD COLUMN f_tenant_id TEXT;

-- A tenant's endpoint list, by id.
CREATE INDEX hookd_endpoints_tenant ON hookd_endpoints (tenant_id, id)
    WHERE tenant_id IS NOT NULL;
-- A tenant's delivery log, newest first, and its filters by state and by event type (the
-- log's pages and a bulk resend's windows).
CREATE INDEX hookd_deliveries_tenant ON hookd_deliveries (tenant_id, id)
    WHERE tenant_id IS NOT NULL;
CREATE INDEX hookd_deliveries_tenant_state ON hookd_deliveries (tenant_id, state, id)
    WHERE tenant_id IS NOT NULL;
CREATE INDEX hookd_deliveries_tenant_event_type ON hookd_deliveries (tenant_id, event_type, id)
    WHERE tenant_id IS NOT NULL;

-- Portal tokens, stored only as the SHA-256 of the token (hex).
CREATE TABLE hookd_tenant_tokens (
    token_hash TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX hookd_tenant_tokens_tenant ON hookd_tenant_tokens (tenant_id);
