-- The outbox by tenant: a read that finds a backlog also takes each tenant's first rows
-- beyond it, found by a skip scan of this index, so that one tenant's backlog in the outbox
-- does not hold up another's fresh rows.
CREATE INDEX hookd_outbox_tenant ON hookd_outbox (tenant_id, seq);
