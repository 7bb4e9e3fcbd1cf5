-- Delivery history in partitions, so that retention drops a day of it whole instead of
-- deleting its rows one by one (docs/scaling.md, "Time-partitioned history").
--
-- hookd_deliveries is partitioned by state:
--   hookd_deliveries_unfinished   pending and in flight: the backlog, whatever the history;
--                                 every claim reads only this partition.
--   hookd_deliveries_finished     succeeded and failed, partitioned by id, one partition a
--                                 day: hookd_deliveries_pYYYYMMDD.
-- hookd_attempts is partitioned by delivery id with the same days: hookd_attempts_pYYYYMMDD.
--
-- A delivery's id says its day: the ids of day d (days since the Unix epoch, UTC) start at
-- d * 2^32, and the maintenance job moves the id sequence to that first id as the day
-- begins (hookd_history_prepare). Ids keep their order, so does every page and cursor, and
-- they stay below 2^53 (exact in JavaScript) until the year 8000 and more. A delivery that
-- finishes moves into its day's partition; a resend moves it back into the backlog.
--
-- The tables as they were become the first partitions (hookd_deliveries_before,
-- hookd_attempts_before), their unfinished deliveries moved into the backlog: this
-- migration reads the old tables once under lock (measured in docs/scaling.md), and
-- retention trims them row by row and then drops them.
--
-- No foreign keys on these tables any more: hookd writes a delivery, its event and its
-- attempts itself, and a partition that references or is referenced could not be
-- detached without a lock on the whole table.

-- The first delivery id of day `day` (days since the Unix epoch, UTC).
CREATE FUNCTION hookd_day_first_id(day BIGINT) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT day * 4294967296 $$;

ALTER TABLE hookd_attempts DROP CONSTRAINT hookd_attempts_delivery_id_fkey;
ALTER TABLE hookd_deliveries DROP CONSTRAINT hookd_deliveries_endpoint_id_fkey;
ALTER TABLE hookd_deliveries DROP CONSTRAINT hookd_deliveries_event_id_fkey;
ALTER TABLE hookd_deliveries RENAME TO hookd_deliveries_before;
ALTER TABLE hookd_attempts RENAME TO hookd_attempts_before;
DO $$
DECLARE
    i RECORD;
BEGIN
    FOR i IN SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
             WHERE x.indrelid IN ('hookd_deliveries_before'::regclass, 'hookd_attempts_before'::regclass)
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', i.relname, i.relname || '_before');
    END LOOP;
END $$;

CREATE TABLE hookd_deliveries (
    id               BIGINT NOT NULL DEFAULT nextval('hookd_deliveries_id_seq'),
    event_id         TEXT NOT NULL,
    endpoint_id      TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    auto_attempts    INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    next_trigger     TEXT NOT NULL DEFAULT 'auto',
    manual_only      BOOLEAN NOT NULL DEFAULT FALSE,
    resend_requested BOOLEAN NOT NULL DEFAULT FALSE,
    lease_token      TEXT,
    lease_expires_at BIGINT,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    held             BOOLEAN NOT NULL DEFAULT FALSE,
    tenant_id        TEXT,
    lease_instance   TEXT
) PARTITION BY LIST (state);
ALTER SEQUENCE hookd_deliveries_id_seq OWNED BY hookd_deliveries.id;
ALTER TABLE hookd_deliveries_before ALTER COLUMN id DROP DEFAULT;

CREATE TABLE hookd_deliveries_unfinished PARTITION OF hookd_deliveries
    FOR VALUES IN ('pending', 'in_flight');
CREATE TABLE hookd_deliveries_finished PARTITION OF hookd_deliveries
    FOR VALUES IN ('succeeded', 'failed') PARTITION BY RANGE (id);
ALTER TABLE hookd_deliveries_unfinished ADD PRIMARY KEY (id);
ALTER TABLE hookd_deliveries_finished ADD PRIMARY KEY (id);

-- Every delivery: by event, endpoint, type, time and tenant (the log and bulk resends).
CREATE INDEX hookd_deliveries_event ON hookd_deliveries (event_id);
CREATE INDEX hookd_deliveries_endpoint ON hookd_deliveries (endpoint_id, id);
CREATE INDEX hookd_deliveries_event_type ON hookd_deliveries (event_type, id);
CREATE INDEX hookd_deliveries_created ON hookd_deliveries (created_at);
CREATE INDEX hookd_deliveries_tenant ON hookd_deliveries (tenant_id, id)
    WHERE tenant_id IS NOT NULL;
CREATE INDEX hookd_deliveries_tenant_state ON hookd_deliveries (tenant_id, state, id)
    WHERE tenant_id IS NOT NULL;
CREATE INDEX hookd_deliveries_tenant_event_type ON hookd_deliveries (tenant_id, event_type, id)
    WHERE tenant_id IS NOT NULL;

-- The backlog's indexes, as they were (their predicates explained in 0004, 0005, 0007,
-- 0010 and 0011): only the backlog has them.
CREATE INDEX hookd_deliveries_due_first ON hookd_deliveries_unfinished (next_attempt_at)
    WHERE state = 'pending' AND attempts = 0;
CREATE INDEX hookd_deliveries_due_retry ON hookd_deliveries_unfinished (next_attempt_at)
    WHERE state = 'pending' AND attempts > 0;
CREATE INDEX hookd_deliveries_due_endpoint ON hookd_deliveries_unfinished (endpoint_id, next_attempt_at)
    WHERE state = 'pending' AND attempts < 1 AND NOT held;
CREATE INDEX hookd_deliveries_due_retry_endpoint ON hookd_deliveries_unfinished (endpoint_id, next_attempt_at)
    WHERE state = 'pending' AND attempts <> 0 AND NOT held;
CREATE INDEX hookd_deliveries_leased ON hookd_deliveries_unfinished (lease_expires_at)
    WHERE state = 'in_flight';
CREATE INDEX hookd_deliveries_held ON hookd_deliveries_unfinished (endpoint_id, id) WHERE held;
CREATE INDEX hookd_deliveries_unfinished_endpoint ON hookd_deliveries_unfinished (endpoint_id, held, id)
    WHERE state IN ('pending', 'in_flight') AND held IS NOT NULL;

-- The history's: retention's newest finish per partition, the log's state filter.
CREATE INDEX hookd_deliveries_finished_at ON hookd_deliveries_finished (finished_at)
    WHERE state IN ('succeeded', 'failed');
CREATE INDEX hookd_deliveries_state ON hookd_deliveries_finished (state, id)
    WHERE state IN ('succeeded', 'failed');

CREATE TABLE hookd_attempts (
    id            BIGINT NOT NULL DEFAULT nextval('hookd_attempts_id_seq'),
    delivery_id   BIGINT NOT NULL,
    attempt       INTEGER NOT NULL,
    trigger       TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    duration_ms   BIGINT NOT NULL,
    status_code   INTEGER,
    outcome       TEXT NOT NULL,
    error         TEXT,
    response_body TEXT
) PARTITION BY RANGE (delivery_id);
ALTER SEQUENCE hookd_attempts_id_seq OWNED BY hookd_attempts.id;
ALTER TABLE hookd_attempts_before ALTER COLUMN id DROP DEFAULT;
CREATE INDEX hookd_attempts_delivery ON hookd_attempts (delivery_id, attempt);

-- The old backlog moves; the old history becomes the first partition of each table, up
-- to today's first id. Their indexes that match the new ones are taken over, not rebuilt.
INSERT INTO hookd_deliveries
    SELECT id, event_id, endpoint_id, event_type, state, attempts, auto_attempts,
        next_attempt_at, next_trigger, manual_only, resend_requested, lease_token,
        lease_expires_at, last_status_code, last_error, created_at, updated_at, finished_at,
        held, tenant_id, lease_instance
    FROM hookd_deliveries_before WHERE state IN ('pending', 'in_flight') AND held IS NOT NULL;
DELETE FROM hookd_deliveries_before WHERE state IN ('pending', 'in_flight') AND held IS NOT NULL;
DROP INDEX hookd_deliveries_due_first_before, hookd_deliveries_due_retry_before,
    hookd_deliveries_due_endpoint_before, hookd_deliveries_due_retry_endpoint_before,
    hookd_deliveries_leased_before, hookd_deliveries_held_before,
    hookd_deliveries_unfinished_before;
ALTER TABLE hookd_deliveries_before DROP CONSTRAINT hookd_deliveries_state_check;
DO $$
DECLARE
    first_id BIGINT := hookd_day_first_id(hookd_now_ms() / 86400000);
BEGIN
    EXECUTE format('ALTER TABLE hookd_deliveries_finished ATTACH PARTITION hookd_deliveries_before '
        'FOR VALUES FROM (MINVALUE) TO (%s)', first_id);
    EXECUTE format('ALTER TABLE hookd_attempts ATTACH PARTITION hookd_attempts_before '
        'FOR VALUES FROM (MINVALUE) TO (%s)', first_id);
END $$;

-- Creates day `day`'s partitions of the history and of the attempts, unless they exist.
-- Each is made apart and then attached: attaching locks the parent only against other
-- changes of its partitions, not against reads and writes, and the table's CHECK (its
-- range) spares the check of its rows.
CREATE FUNCTION hookd_history_partition(day BIGINT) RETURNS VOID
    LANGUAGE plpgsql
    AS $$
DECLARE
    suffix TEXT := to_char(to_timestamp(day * 86400) AT TIME ZONE 'UTC', 'YYYYMMDD');
    lo BIGINT := hookd_day_first_id(day);
    hi BIGINT := hookd_day_first_id(day + 1);
    deliveries TEXT := 'hookd_deliveries_p' || suffix;
    attempts TEXT := 'hookd_attempts_p' || suffix;
BEGIN
    IF to_regclass(deliveries) IS NULL THEN
        EXECUTE format('CREATE TABLE %I (LIKE hookd_deliveries_finished, '
            'CHECK (state IN (''succeeded'', ''failed'') AND id >= %s AND id < %s))',
            deliveries, lo, hi);
        EXECUTE format('ALTER TABLE hookd_deliveries_finished ATTACH PARTITION %I '
            'FOR VALUES FROM (%s) TO (%s)', deliveries, lo, hi);
    END IF;
    IF to_regclass(attempts) IS NULL THEN
        EXECUTE format('CREATE TABLE %I (LIKE hookd_attempts, '
            'CHECK (delivery_id >= %s AND delivery_id < %s))', attempts, lo, hi);
        EXECUTE format('ALTER TABLE hookd_attempts ATTACH PARTITION %I '
            'FOR VALUES FROM (%s) TO (%s)', attempts, lo, hi);
    END IF;
END $$;

-- Creates the partitions of today and of the `ahead` days after it, and moves the id
-- sequence to today's first id (forward only). One instance at a time.
CREATE FUNCTION hookd_history_prepare(ahead INTEGER) RETURNS VOID
    LANGUAGE plpgsql
    AS $$
DECLARE
    today BIGINT := hookd_now_ms() / 86400000;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('hookd_history_prepare'));
    FOR d IN 0 .. ahead LOOP
        PERFORM hookd_history_partition(today + d);
    END LOOP;
    IF (SELECT last_value FROM hookd_deliveries_id_seq) < hookd_day_first_id(today) THEN
        PERFORM setval('hookd_deliveries_id_seq', hookd_day_first_id(today), false);
    END IF;
END $$;

-- The partitions of the history, attached or left detached by a drop that stopped, with
-- what retention needs to know of each: its range of ids (from its name's day; `lo` NULL:
-- from the lowest, for the tables from before, up to the first day's), its attempts'
-- table, whether a detach of it was interrupted, whether a delivery of its range is in the
-- backlog (resent), its newest finish and PostgreSQL's estimate of its rows (-1: not
-- estimated yet).
CREATE FUNCTION hookd_history_partitions()
    RETURNS TABLE (name TEXT, attempts TEXT, lo BIGINT, hi BIGINT, attached BOOLEAN,
                   detach_pending BOOLEAN, resent BOOLEAN, newest_finish BIGINT, rows BIGINT)
    LANGUAGE plpgsql
    AS $$
DECLARE
    p RECORD;
    first_id BIGINT;
BEGIN
    SELECT min(hookd_day_first_id(to_date(substring(c.relname FROM 19), 'YYYYMMDD') - DATE '1970-01-01'))
        INTO first_id
        FROM pg_class c WHERE c.relname ~ '^hookd_deliveries_p[0-9]{8}$' AND c.relkind = 'r';
    FOR p IN SELECT c.relname::TEXT AS relname, c.reltuples, i.inhrelid IS NOT NULL AS attached,
                 COALESCE(i.inhdetachpending, FALSE) AS detach_pending
             FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
             WHERE c.relname ~ '^hookd_deliveries_(p[0-9]{8}|before)$' AND c.relkind = 'r'
             ORDER BY c.relname
    LOOP
        name := p.relname;
        attempts := replace(p.relname, 'hookd_deliveries_', 'hookd_attempts_');
        IF p.relname = 'hookd_deliveries_before' THEN
            lo := NULL;
            hi := COALESCE(first_id, hookd_day_first_id(hookd_now_ms() / 86400000));
        ELSE
            lo := hookd_day_first_id(to_date(substring(p.relname FROM 19), 'YYYYMMDD') - DATE '1970-01-01');
            hi := lo + hookd_day_first_id(1);
        END IF;
        attached := p.attached;
        detach_pending := p.detach_pending;
        resent := EXISTS (SELECT 1 FROM hookd_deliveries_unfinished u
            WHERE u.id >= COALESCE(lo, 0) AND u.id < hi);
        EXECUTE format('SELECT max(finished_at) FROM %I WHERE state IN (''succeeded'', ''failed'')',
            p.relname) INTO newest_finish;
        rows := p.reltuples::BIGINT;
        RETURN NEXT;
    END LOOP;
END $$;

SELECT hookd_history_prepare(2);
