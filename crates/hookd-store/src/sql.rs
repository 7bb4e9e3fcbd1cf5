//! SQL that both databases run unchanged, apart from `hookd_now_ms()`: a function in
//! PostgreSQL, spelled out as an expression for SQLite (see [`sqlite_dialect`]).
//!
//! Parameters are `$N`, which both drivers bind by number.

use std::borrow::Cow;
use std::sync::OnceLock;

/// SQLite's equivalent of PostgreSQL's `hookd_now_ms()`: ms since the epoch, from julianday
/// (which, unlike `unixepoch('subsec')`, every SQLite a producer may use understands).
pub(crate) const SQLITE_NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// Index hints: a comment PostgreSQL ignores and SQLite turns into `INDEXED BY`. SQLite has
/// no planner statistics unless `ANALYZE` runs, and without them it prefers the `state`
/// index and reads every pending row; a due index is read in due order from its first entry.
const HINTS: [(&str, &str); 5] = [
    (
        "hookd_deliveries /* due_endpoint */",
        "hookd_deliveries INDEXED BY hookd_deliveries_due_endpoint",
    ),
    (
        "hookd_deliveries /* due_retry_endpoint */",
        "hookd_deliveries INDEXED BY hookd_deliveries_due_retry_endpoint",
    ),
    (
        "hookd_deliveries /* due_first */",
        "hookd_deliveries INDEXED BY hookd_deliveries_due_first",
    ),
    (
        "hookd_deliveries /* due_retry */",
        "hookd_deliveries INDEXED BY hookd_deliveries_due_retry",
    ),
    // Without statistics SQLite would rather walk the `state` index and test every row in
    // flight against every result; this makes it look each result up by id.
    (
        "hookd_deliveries /* by_id */",
        "hookd_deliveries NOT INDEXED",
    ),
];

/// The SQLite text of a statement built at run time.
pub(crate) fn sqlite_dialect_owned(sql: &str) -> String {
    HINTS.iter().fold(
        sql.replace("hookd_now_ms()", SQLITE_NOW),
        |s, (hint, sqlite)| s.replace(hint, sqlite),
    )
}

/// The SQLite text of a shared statement.
pub(crate) fn sqlite_dialect(sql: &'static str) -> Cow<'static, str> {
    if sql.contains("hookd_now_ms()") || HINTS.iter().any(|(hint, _)| sql.contains(hint)) {
        Cow::Owned(sqlite_dialect_owned(sql))
    } else {
        Cow::Borrowed(sql)
    }
}

pub(crate) const NOW: &str = "SELECT hookd_now_ms()";

pub(crate) const INSERT_ENDPOINT: &str = "INSERT INTO hookd_endpoints (id, url, description, \
    event_types, bearer_token, signature_scheme, secret, retry_schedule, timeout_ms, headers, \
    enabled, disabled_reason, disabled_at, previous_secret, previous_secret_expires_at, ordered, \
    tenant_id, created_at, updated_at, rate_limit) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
    hookd_now_ms(), hookd_now_ms(), $18)";

/// `$17`: the endpoint is unreadable (its secrets could not be decrypted), so its stored
/// secret values are kept as they are instead of being overwritten with blanks.
/// `$18`: the version the write depends on, compared in the same statement (NULL: none).
/// `$19`: the rate limit (its budget, `rate_tat`, is left as it is).
pub(crate) const UPDATE_ENDPOINT: &str = "UPDATE hookd_endpoints SET url = $2, description = $3, \
    event_types = $4, bearer_token = CASE WHEN $17 THEN bearer_token ELSE $5 END, \
    signature_scheme = $6, secret = CASE WHEN $17 THEN secret ELSE $7 END, retry_schedule = $8, \
    timeout_ms = $9, headers = $10, enabled = $11, disabled_reason = $12, disabled_at = $13, \
    previous_secret = CASE WHEN $17 THEN previous_secret ELSE $14 END, \
    previous_secret_expires_at = CASE WHEN $17 THEN previous_secret_expires_at ELSE $15 END, \
    ordered = $16, rate_limit = $19, \
    failing_since = CASE WHEN $11 AND NOT enabled THEN NULL ELSE failing_since END, \
    version = version + 1, updated_at = hookd_now_ms() \
    WHERE id = $1 AND deleted_at IS NULL AND version = COALESCE($18, version)";

/// Whether a live endpoint exists (a conditional write that changed nothing: gone, or changed).
pub(crate) const ENDPOINT_LIVE: &str =
    "SELECT EXISTS (SELECT 1 FROM hookd_endpoints WHERE id = $1 AND deleted_at IS NULL)";

/// Disables a live endpoint for a reason (410 Gone, failing too long); `false` if it was
/// already disabled.
pub(crate) const DISABLE_ENDPOINT: &str = "UPDATE hookd_endpoints SET enabled = FALSE, \
    disabled_reason = $2, disabled_at = hookd_now_ms(), updated_at = hookd_now_ms(), \
    version = version + 1 WHERE id = $1 AND enabled AND deleted_at IS NULL";

/// A success (written at most once a minute per endpoint while healthy).
pub(crate) const ENDPOINT_SUCCEEDED: &str = "UPDATE hookd_endpoints \
    SET last_success_at = hookd_now_ms(), failing_since = NULL WHERE id = $1 \
    AND (failing_since IS NOT NULL OR last_success_at IS NULL OR last_success_at < hookd_now_ms() - 60000)";

/// A failure starts the failing period if none is running.
pub(crate) const ENDPOINT_FAILED: &str = "UPDATE hookd_endpoints \
    SET failing_since = hookd_now_ms() WHERE id = $1 AND failing_since IS NULL";

/// Disables an endpoint failing for `$3` ms or more.
pub(crate) const DISABLE_IF_FAILING: &str = "UPDATE hookd_endpoints SET enabled = FALSE, \
    disabled_reason = $2, disabled_at = hookd_now_ms(), updated_at = hookd_now_ms(), \
    version = version + 1 WHERE id = $1 AND enabled AND deleted_at IS NULL AND failing_since <= hookd_now_ms() - $3";

/// Disabling an endpoint parks its automatic pending deliveries (manual ones still go).
pub(crate) const PARK_ENDPOINT_DELIVERIES: &str = "UPDATE hookd_deliveries \
    SET next_attempt_at = NULL, updated_at = hookd_now_ms() \
    WHERE endpoint_id = $1 AND state = 'pending' AND next_trigger = 'auto' AND next_attempt_at IS NOT NULL";

/// An endpoint that is no longer ordered lets every held delivery go (parked instead while
/// the endpoint is disabled).
pub(crate) const UNHOLD_ENDPOINT_DELIVERIES: &str = "UPDATE hookd_deliveries \
    SET held = FALSE, next_attempt_at = CASE WHEN $2 THEN hookd_now_ms() END, updated_at = hookd_now_ms() \
    WHERE endpoint_id = $1 AND held AND state = 'pending'";

/// The safety net behind `PROMOTE_NEXT`: the oldest held delivery of every endpoint with
/// nothing else on its way goes. Catches an endpoint switched to ordered while a delivery
/// was in flight, and on PostgreSQL an ingestion that held a delivery while the one before
/// it finished concurrently. Each store names the rows in its own words: SQLite with
/// [`STRANDED_HEADS`], PostgreSQL by walking the index of held rows.
pub(crate) const PROMOTE_STRANDED_SET: &str = "UPDATE hookd_deliveries \
    SET held = FALSE, next_attempt_at = hookd_now_ms(), updated_at = hookd_now_ms() ";

/// The ids [`PROMOTE_STRANDED_SET`] lets go on SQLite: each live endpoint's oldest held
/// delivery, when nothing else of it is on its way. Two seeks per live endpoint (the index
/// of unfinished rows, then the index of held ones), whatever the history and however many
/// are held.
pub(crate) static STRANDED_HEADS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT (SELECT MIN(h.id) FROM hookd_deliveries h \
            WHERE h.endpoint_id = e.id AND h.held AND h.state = 'pending') \
        FROM hookd_endpoints e WHERE e.deleted_at IS NULL AND {}",
        nothing_on_its_way("e.id")
    )
});

/// Whether the endpoint `endpoint` (an SQL expression) has no unheld delivery on its way,
/// pending or in flight.
pub(crate) fn nothing_on_its_way(endpoint: &str) -> String {
    format!(
        "(SELECT 1 FROM hookd_deliveries o WHERE o.endpoint_id = {endpoint} \
         AND o.state IN ('pending', 'in_flight') AND o.held IS NOT NULL AND o.held = FALSE \
         LIMIT 1) IS NULL"
    )
}

// An update of unfinished deliveries by id names their state as well: on PostgreSQL that
// keeps it to the backlog's partition, where without it the plan takes in (and locks)
// every day of the history.
//
// "Nothing of the endpoint on its way", above and below, is `(SELECT ... LIMIT 1) IS NULL`
// rather than `NOT EXISTS`: PostgreSQL turns a NOT EXISTS into a join, which with stale
// statistics may read every unfinished row of every endpoint; a scalar subquery stays one
// seek per endpoint. The state and `held IS NOT NULL` terms name the partial index of
// unfinished rows (see migration 0007).

/// Enabling an endpoint makes its parked deliveries due at once.
pub(crate) const UNPARK_ENDPOINT_DELIVERIES: &str = "UPDATE hookd_deliveries \
    SET next_attempt_at = hookd_now_ms(), updated_at = hookd_now_ms() \
    WHERE endpoint_id = $1 AND state = 'pending' AND next_attempt_at IS NULL AND NOT held";

/// `$2`: the version the delete depends on (NULL: none).
pub(crate) const DELETE_ENDPOINT: &str = "UPDATE hookd_endpoints \
    SET deleted_at = hookd_now_ms(), enabled = FALSE, updated_at = hookd_now_ms(), \
    version = version + 1 \
    WHERE id = $1 AND deleted_at IS NULL AND version = COALESCE($2, version)";

pub(crate) const FAIL_ENDPOINT_DELIVERIES: &str = "UPDATE hookd_deliveries \
    SET state = 'failed', next_attempt_at = NULL, last_error = 'endpoint deleted', \
    finished_at = hookd_now_ms(), updated_at = hookd_now_ms() \
    WHERE endpoint_id = $1 AND state = 'pending'";

/// Live endpoints holding a sealed value, for `unreadable_endpoints` (a small table).
pub(crate) const SEALED_ENDPOINTS: &str = "SELECT id, secret, previous_secret, bearer_token \
    FROM hookd_endpoints WHERE deleted_at IS NULL AND (secret LIKE 'sealed:%' \
    OR previous_secret LIKE 'sealed:%' OR bearer_token LIKE 'sealed:%') ORDER BY id";

pub(crate) const TARGETS: &str = "SELECT id, tenant_id, event_types, enabled, ordered, \
    rate_limit IS NOT NULL AS rate_limited FROM hookd_endpoints WHERE deleted_at IS NULL";

/// Whether an endpoint has a delivery still to finish (an ordered one's next must wait):
/// the first entry of the endpoint in the index of unfinished rows.
pub(crate) const HAS_UNFINISHED: &str = "SELECT EXISTS (SELECT 1 FROM hookd_deliveries \
    WHERE endpoint_id = $1 AND state IN ('pending', 'in_flight') AND held IS NOT NULL)";

/// After delivery `$1` of an ordered endpoint was released as failed, the oldest held one
/// goes, unless another is already on its way (a manual resend jumped the queue).
pub(crate) const PROMOTE_NEXT: &str = "UPDATE hookd_deliveries \
    SET held = FALSE, next_attempt_at = hookd_now_ms(), updated_at = hookd_now_ms() \
    WHERE id = (SELECT MIN(h.id) FROM hookd_deliveries h WHERE h.held AND h.state = 'pending' \
        AND h.endpoint_id = (SELECT d.endpoint_id FROM hookd_deliveries d \
            WHERE d.id = $1 AND d.state IN ('succeeded', 'failed'))) \
    AND state = 'pending' AND (SELECT 1 FROM hookd_deliveries o \
        WHERE o.endpoint_id = hookd_deliveries.endpoint_id \
        AND o.state IN ('pending', 'in_flight') AND o.held IS NOT NULL AND o.held = FALSE \
        LIMIT 1) IS NULL";

/// After a batch of results of ordered endpoint `$1` was recorded, its oldest held delivery
/// goes, unless one of the endpoint's is still on its way (a retry, or a manual resend that
/// jumped the queue). Once per endpoint per batch, however many of its results the batch
/// carries: a bulk resend of an ordered endpoint's history brings hundreds per batch.
pub(crate) const PROMOTE_ENDPOINT_NEXT: &str = "UPDATE hookd_deliveries \
    SET held = FALSE, next_attempt_at = hookd_now_ms(), updated_at = hookd_now_ms() \
    WHERE id = (SELECT MIN(h.id) FROM hookd_deliveries h \
        WHERE h.endpoint_id = $1 AND h.held AND h.state = 'pending') \
    AND state = 'pending' AND (SELECT 1 FROM hookd_deliveries o WHERE o.endpoint_id = $1 \
        AND o.state IN ('pending', 'in_flight') AND o.held IS NOT NULL AND o.held = FALSE \
        LIMIT 1) IS NULL";

/// Which pending rows of an endpoint a fair claim's share reads: first attempts, or retries
/// (`(predicate, index hint)`). Each is spelled to match only its index of pending rows by
/// endpoint (migrations 0010, 0011) and not to imply the predicate of the due-order index of
/// its kind, so that neither stands in for the other: read through the due-order index,
/// filtering on the endpoint, a share would walk the other endpoints' backlog.
pub(crate) const FIRST_BY_ENDPOINT: (&str, &str) = (
    "state = 'pending' AND attempts < 1 AND NOT held",
    "/* due_endpoint */",
);
pub(crate) const RETRY_BY_ENDPOINT: (&str, &str) = (
    "state = 'pending' AND attempts <> 0 AND NOT held",
    "/* due_retry_endpoint */",
);

/// The endpoints with `kind` rows due ([`FIRST_BY_ENDPOINT`], [`RETRY_BY_ENDPOINT`]), their
/// tenants and `retry`: a skip scan of the kind's index of pending rows by endpoint, one
/// seek to the next endpoint and one to its first due row, however long its backlog.
fn due_endpoints(cte: &str, (kind, hint): (&str, &str), retry: bool) -> String {
    format!(
        "{cte}(endpoint_id) AS ( \
         SELECT (SELECT endpoint_id FROM hookd_deliveries {hint} \
             WHERE {kind} ORDER BY endpoint_id LIMIT 1) \
         UNION ALL \
         SELECT (SELECT endpoint_id FROM hookd_deliveries {hint} \
             WHERE {kind} AND endpoint_id > {cte}.endpoint_id \
             ORDER BY endpoint_id LIMIT 1) \
         FROM {cte} WHERE {cte}.endpoint_id IS NOT NULL), \
         {cte}_due AS (SELECT e.id, e.tenant_id, {retry} AS retry, e.rate_limit, \
             e.rate_tat - hookd_now_ms() AS rate_ahead FROM {cte} \
             JOIN hookd_endpoints e ON e.id = {cte}.endpoint_id \
             WHERE (SELECT next_attempt_at FROM hookd_deliveries {hint} \
                 WHERE endpoint_id = {cte}.endpoint_id AND {kind} \
                 AND next_attempt_at IS NOT NULL ORDER BY next_attempt_at LIMIT 1) <= hookd_now_ms())",
        retry = if retry { "TRUE" } else { "FALSE" },
    )
}

/// The endpoints with first attempts due and those with retries due, for a fair claim
/// ([`crate::fair`]): `(endpoint, tenant, retry, rate limit, its theoretical arrival time
/// from now)` ([`crate::limited`]), both skip scans in one statement; then every
/// rate-limited endpoint, `retry` NULL (none when none is limited: a partial index).
/// Those are kept out of the claim's reads of the oldest due rows of any endpoint, even
/// when rows of theirs became due after this read.
pub(crate) static DUE_ENDPOINTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH RECURSIVE {}, {} \
         SELECT id, tenant_id, retry, rate_limit, rate_ahead FROM firsts_due \
         UNION ALL SELECT id, tenant_id, retry, rate_limit, rate_ahead FROM retries_due \
         UNION ALL SELECT id, tenant_id, NULL, rate_limit, NULL FROM hookd_endpoints \
             WHERE rate_limit IS NOT NULL AND deleted_at IS NULL",
        due_endpoints("firsts", FIRST_BY_ENDPOINT, false),
        due_endpoints("retries", RETRY_BY_ENDPOINT, true),
    )
});

/// One endpoint's share of `kind` rows ([`FIRST_BY_ENDPOINT`], [`RETRY_BY_ENDPOINT`]), due
/// now, oldest first: endpoint `$endpoint`, and whatever `also` adds to the condition;
/// without its `LIMIT`.
pub(crate) fn share_of(endpoint: &str, (kind, hint): (&str, &str), also: &str) -> String {
    format!(
        "SELECT id FROM hookd_deliveries {hint} WHERE endpoint_id = {endpoint} AND {kind} \
         AND next_attempt_at <= hookd_now_ms(){also} ORDER BY next_attempt_at"
    )
}

/// The deliveries of each event of a group (one read per group commit, by the event index).
/// `$1`: the event ids, a JSON array on SQLite (`json_each`), a `text[]` on PostgreSQL.
pub(crate) const COUNT_EVENTS_DELIVERIES_SQLITE: &str = "SELECT event_id, COUNT(*) \
    FROM hookd_deliveries WHERE event_id IN (SELECT value FROM json_each($1)) GROUP BY event_id";
pub(crate) const COUNT_EVENTS_DELIVERIES_POSTGRES: &str = "SELECT event_id, COUNT(*) \
    FROM hookd_deliveries WHERE event_id = ANY($1) GROUP BY event_id";

/// `$2`: the scope's tenant (NULL: the admin's scope, every event).
pub(crate) const EVENT: &str = "SELECT event_id, event_type, payload, endpoint_id, tenant_id, \
    payload_error, created_at FROM hookd_events \
    WHERE event_id = $1 AND ($2 IS NULL OR tenant_id = $2)";

/// The columns of a batch of attempt results, one JSON object per result (built by
/// [`crate::rows::completions_json`]), with their PostgreSQL types.
pub(crate) const COMPLETION_COLUMNS: &[(&str, &str)] = &[
    ("delivery_id", "BIGINT"),
    ("lease_token", "TEXT"),
    ("next_state", "TEXT"),
    ("delay_ms", "BIGINT"),
    ("status_code", "INTEGER"),
    ("error", "TEXT"),
    ("attempt", "INTEGER"),
    ("trigger", "TEXT"),
    ("started_at", "BIGINT"),
    ("duration_ms", "BIGINT"),
    ("outcome", "TEXT"),
    ("response_body", "TEXT"),
];

/// `WITH v AS (...)`: PostgreSQL's rows of the JSON array bound as `$1`, with `columns`.
/// One bound array per batch makes a batch one statement, whatever its size (a statement
/// is a round trip). SQLite binds the rows as values instead (see [`crate::values`]).
pub(crate) fn json_rows(columns: &[(&str, &str)]) -> String {
    let fields: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
    format!(
        "WITH v AS (SELECT * FROM json_to_recordset($1::json) AS r({})) ",
        fields.join(", ")
    )
}

/// A statement over a batch of rows `v`, in each dialect, built once: on PostgreSQL the
/// rows of one JSON array, on SQLite bound `VALUES` (one text per padded batch size).
pub(crate) struct Batch {
    columns: &'static [(&'static str, &'static str)],
    statement: &'static str,
    /// Appended to `statement` (the part one dialect's variant adds).
    suffix: &'static str,
    sqlite: [OnceLock<String>; crate::values::SIZES],
    postgres: OnceLock<String>,
}

impl Batch {
    pub(crate) const fn new(
        columns: &'static [(&'static str, &'static str)],
        statement: &'static str,
    ) -> Self {
        Self::with_suffix(columns, statement, "")
    }

    pub(crate) const fn with_suffix(
        columns: &'static [(&'static str, &'static str)],
        statement: &'static str,
        suffix: &'static str,
    ) -> Self {
        Batch {
            columns,
            statement,
            suffix,
            sqlite: [const { OnceLock::new() }; crate::values::SIZES],
            postgres: OnceLock::new(),
        }
    }

    pub(crate) fn columns(&self) -> impl Iterator<Item = &'static str> {
        self.columns.iter().map(|(name, _)| *name)
    }

    /// The SQLite text for a chunk of `rows` rows.
    fn sqlite(&'static self, rows: usize) -> &'static str {
        let (size, padded) = crate::values::padded(rows);
        self.sqlite[size].get_or_init(|| {
            sqlite_dialect_owned(&format!(
                "{}{}{}",
                crate::values::rows_cte(&self.columns().collect::<Vec<_>>(), padded),
                self.statement,
                self.suffix
            ))
        })
    }

    /// The SQLite text and arguments for a chunk of 1 to [`crate::values::MAX_ROWS`] rows.
    pub(crate) fn sqlite_bind<'q, R: crate::values::Row>(
        &'static self,
        rows: &'q [R],
    ) -> (&'static str, sqlx::sqlite::SqliteArguments<'q>) {
        (
            self.sqlite(rows.len()),
            crate::values::bind(rows, self.columns.len()),
        )
    }

    pub(crate) fn postgres(&'static self) -> &'static str {
        self.postgres.get_or_init(|| {
            format!(
                "{}{}{}",
                json_rows(self.columns),
                self.statement,
                self.suffix
            )
        })
    }
}

/// New events; returns the ids inserted (an id already stored is left alone).
pub(crate) static INSERT_EVENTS: Batch = Batch::with_suffix(
    EVENT_COLUMNS,
    INSERT_EVENTS_STATEMENT,
    " RETURNING event_id",
);

/// The same, returning nothing: SQLite's writer counts the rows inserted instead of reading
/// each id back (see `SqliteStore::insert_events`).
pub(crate) static INSERT_NEW_EVENTS: Batch = Batch::new(EVENT_COLUMNS, INSERT_EVENTS_STATEMENT);

const EVENT_COLUMNS: &[(&str, &str)] = &[
    ("event_id", "TEXT"),
    ("event_type", "TEXT"),
    ("payload", "TEXT"),
    ("endpoint_id", "TEXT"),
    ("tenant_id", "TEXT"),
    ("payload_error", "TEXT"),
    ("traceparent", "TEXT"),
];

// WHERE TRUE: SQLite would read ON CONFLICT as a join constraint of the FROM.
const INSERT_EVENTS_STATEMENT: &str = "INSERT INTO hookd_events (event_id, event_type, payload, \
     endpoint_id, tenant_id, payload_error, traceparent, created_at) SELECT v.event_id, \
     v.event_type, v.payload, v.endpoint_id, v.tenant_id, v.payload_error, v.traceparent, \
     hookd_now_ms() FROM v WHERE TRUE \
     ON CONFLICT (event_id) DO NOTHING";

/// New deliveries, in `ord` order. `state`: 'pending' or 'failed'; `parked`: pending with
/// no due time; `held`: behind an earlier delivery of an ordered endpoint; `error`: why it
/// failed; `lease_token` and `lease_ms`: set for a delivery created leased, `in_flight`
/// (on PostgreSQL those go through [`INSERT_LEASED_DELIVERIES`]; SQLite knows their ids
/// without reading them back).
pub(crate) static INSERT_DELIVERIES: Batch =
    Batch::new(DELIVERY_COLUMNS, INSERT_DELIVERIES_STATEMENT);

const DELIVERY_COLUMNS: &[(&str, &str)] = &[
    ("ord", "BIGINT"),
    ("event_id", "TEXT"),
    ("endpoint_id", "TEXT"),
    ("event_type", "TEXT"),
    ("tenant_id", "TEXT"),
    ("state", "TEXT"),
    ("parked", "BOOLEAN"),
    ("held", "BOOLEAN"),
    ("error", "TEXT"),
    ("lease_token", "TEXT"),
    ("lease_ms", "BIGINT"),
];

/// The same for deliveries created leased (`lease_token` set): `in_flight` with their first
/// attempt counted, as a claim leaves a row. Names the rows created, in no order.
pub(crate) static INSERT_LEASED_DELIVERIES: Batch = Batch::with_suffix(
    DELIVERY_COLUMNS,
    INSERT_DELIVERIES_STATEMENT,
    " RETURNING id, event_id, endpoint_id",
);

const INSERT_DELIVERIES_STATEMENT: &str = "INSERT INTO hookd_deliveries (event_id, endpoint_id, \
     event_type, state, next_attempt_at, last_error, held, created_at, updated_at, finished_at, \
     lease_token, lease_expires_at, attempts, auto_attempts, tenant_id) \
     SELECT v.event_id, v.endpoint_id, v.event_type, \
     CASE WHEN v.lease_token IS NULL THEN v.state ELSE 'in_flight' END, \
     CASE WHEN v.state = 'pending' AND NOT v.parked AND NOT v.held THEN hookd_now_ms() END, \
     v.error, v.held, hookd_now_ms(), hookd_now_ms(), \
     CASE WHEN v.state = 'failed' THEN hookd_now_ms() END, \
     v.lease_token, hookd_now_ms() + v.lease_ms, \
     CASE WHEN v.lease_token IS NULL THEN 0 ELSE 1 END, \
     CASE WHEN v.lease_token IS NULL THEN 0 ELSE 1 END, v.tenant_id \
     FROM v ORDER BY v.ord";

/// Records a batch of attempt results (rows `v`, see [`json_rows`]), each only if its lease
/// is still held. A resend asked for while the attempt ran turns
/// the delivery straight back into a due manual attempt.
pub(crate) const COMPLETE_BATCH: &str = "UPDATE hookd_deliveries /* by_id */ SET \
    state = CASE WHEN resend_requested THEN 'pending' ELSE v.next_state END, \
    next_attempt_at = CASE WHEN resend_requested THEN hookd_now_ms() \
        WHEN v.next_state = 'pending' THEN hookd_now_ms() + v.delay_ms END, \
    next_trigger = CASE WHEN resend_requested THEN 'manual' ELSE 'auto' END, \
    manual_only = CASE WHEN resend_requested THEN v.next_state <> 'pending' ELSE FALSE END, \
    finished_at = CASE WHEN resend_requested OR v.next_state = 'pending' THEN NULL \
        ELSE hookd_now_ms() END, \
    resend_requested = FALSE, lease_token = NULL, lease_expires_at = NULL, \
    last_status_code = v.status_code, last_error = v.error, updated_at = hookd_now_ms() \
    FROM v WHERE hookd_deliveries.id = v.delivery_id \
    AND hookd_deliveries.lease_token = v.lease_token AND hookd_deliveries.state = 'in_flight'";

/// The attempt log rows of a batch of results (rows `v`); each dialect adds the join that
/// keeps only the results recorded.
pub(crate) const INSERT_ATTEMPTS_BATCH: &str = "INSERT INTO hookd_attempts (delivery_id, \
    attempt, trigger, started_at, duration_ms, status_code, outcome, error, response_body) \
    SELECT v.delivery_id, v.attempt, v.trigger, v.started_at, v.duration_ms, v.status_code, \
    v.outcome, v.error, v.response_body FROM v";

/// Undoes a claim whose attempt never ran. `$3`: 'pending' or 'failed'; `$4`: due now
/// (else parked, unless a resend was asked for meanwhile or the endpoint was enabled again
/// since the claim); `$5`: last_error when failing.
pub(crate) const RELEASE: &str = "UPDATE hookd_deliveries SET \
    state = $3, \
    attempts = attempts - 1, \
    auto_attempts = auto_attempts - CASE WHEN next_trigger = 'auto' THEN 1 ELSE 0 END, \
    next_attempt_at = CASE WHEN $3 = 'pending' AND ($4 OR resend_requested OR EXISTS ( \
        SELECT 1 FROM hookd_endpoints e WHERE e.id = hookd_deliveries.endpoint_id AND e.enabled)) \
        THEN hookd_now_ms() END, \
    next_trigger = CASE WHEN resend_requested THEN 'manual' ELSE next_trigger END, \
    resend_requested = FALSE, lease_token = NULL, lease_expires_at = NULL, \
    last_error = COALESCE($5, last_error), \
    finished_at = CASE WHEN $3 = 'failed' THEN hookd_now_ms() END, updated_at = hookd_now_ms() \
    WHERE id = $1 AND lease_token = $2 AND state = 'in_flight'";

pub(crate) const LOST_ERROR: &str =
    "lease expired before the result was recorded (the worker stopped or lost the database)";

/// The earliest due time, from the first entry of each due index (parked rows have none).
pub(crate) const NEXT_DUE: &str = "SELECT MIN(due) - hookd_now_ms() FROM ( \
    SELECT * FROM (SELECT next_attempt_at AS due FROM hookd_deliveries /* due_first */ \
        WHERE state = 'pending' AND attempts = 0 AND next_attempt_at IS NOT NULL \
        ORDER BY next_attempt_at LIMIT 1) f \
    UNION ALL \
    SELECT * FROM (SELECT next_attempt_at FROM hookd_deliveries /* due_retry */ \
        WHERE state = 'pending' AND attempts > 0 AND next_attempt_at IS NOT NULL \
        ORDER BY next_attempt_at LIMIT 1) r) firsts";

/// `$2`: the scope's tenant (NULL: the admin's scope, every delivery).
pub(crate) const DELIVERY: &str = "SELECT id, event_id, endpoint_id, tenant_id, event_type, \
    state, attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at, \
    finished_at FROM hookd_deliveries WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)";

pub(crate) const ATTEMPTS: &str = "SELECT attempt, trigger, started_at, duration_ms, status_code, \
    outcome, error, response_body FROM hookd_attempts WHERE delivery_id = $1 ORDER BY attempt, id";

/// The SET clause of a resend; followed by a WHERE clause. In flight: flag it for the
/// completion write. Finished: one manual attempt whose failure is final. Pending: due now,
/// manual, its automatic schedule kept.
pub(crate) const RESEND_SET: &str = "UPDATE hookd_deliveries SET \
    resend_requested = (state = 'in_flight'), held = FALSE, \
    manual_only = CASE WHEN state IN ('succeeded', 'failed') THEN TRUE \
        WHEN state = 'pending' THEN manual_only ELSE FALSE END, \
    next_trigger = CASE WHEN state = 'in_flight' THEN next_trigger ELSE 'manual' END, \
    next_attempt_at = CASE WHEN state = 'in_flight' THEN next_attempt_at ELSE hookd_now_ms() END, \
    finished_at = CASE WHEN state = 'in_flight' THEN finished_at END, \
    state = CASE WHEN state = 'in_flight' THEN 'in_flight' ELSE 'pending' END, \
    updated_at = hookd_now_ms() ";

/// Unfinished deliveries (a count: it reads every one, on a reader, every few seconds; each
/// term reads one partial index), and the age of the oldest due one, from the first entry
/// of each due index.
pub(crate) const BACKLOG: &str = "SELECT \
    (SELECT COUNT(*) FROM hookd_deliveries WHERE state = 'pending' AND attempts = 0) \
    + (SELECT COUNT(*) FROM hookd_deliveries WHERE state = 'pending' AND attempts > 0) \
    + (SELECT COUNT(*) FROM hookd_deliveries WHERE state = 'in_flight'), \
    (SELECT COUNT(*) FROM hookd_outbox), \
    (SELECT hookd_now_ms() - MIN(due) FROM ( \
        SELECT * FROM (SELECT created_at AS due FROM hookd_outbox ORDER BY seq LIMIT 1) o \
        UNION ALL \
        SELECT * FROM (SELECT next_attempt_at AS due FROM hookd_deliveries /* due_first */ \
            WHERE state = 'pending' AND attempts = 0 AND next_attempt_at IS NOT NULL \
            ORDER BY next_attempt_at LIMIT 1) f \
        UNION ALL \
        SELECT * FROM (SELECT next_attempt_at FROM hookd_deliveries /* due_retry */ \
            WHERE state = 'pending' AND attempts > 0 AND next_attempt_at IS NOT NULL \
            ORDER BY next_attempt_at LIMIT 1) r) firsts \
        WHERE due <= hookd_now_ms())";

/// Events older than `$1` whose deliveries are all gone. Deleting one ends its `event_id`'s
/// dedupe window: the retention period is also the idempotency window.
pub(crate) const PURGE_EVENTS: &str = "DELETE FROM hookd_events WHERE event_id IN ( \
    SELECT e.event_id FROM hookd_events e WHERE e.created_at < $1 \
    AND NOT EXISTS (SELECT 1 FROM hookd_deliveries d WHERE d.event_id = e.event_id) \
    ORDER BY e.created_at LIMIT $2)";

/// `$2`: the scope's tenant (NULL: the admin's scope, every job).
pub(crate) const RESEND_JOB: &str = "SELECT id, state, f_state, f_endpoint_id, f_event_id, \
    f_event_type, f_since, f_until, f_tenant_id, cursor, floor_id, matched, resent, created_at, \
    updated_at, finished_at FROM hookd_resend_jobs \
    WHERE id = $1 AND ($2 IS NULL OR f_tenant_id = $2)";

/// `$8` cursor (the highest id matched), `$9` matched, `$10` floor (the lowest), `$11` tenant.
pub(crate) const INSERT_RESEND_JOB: &str = "INSERT INTO hookd_resend_jobs (id, state, f_state, \
    f_endpoint_id, f_event_id, f_event_type, f_since, f_until, cursor, matched, floor_id, resent, \
    created_at, updated_at, finished_at, f_tenant_id) VALUES ($1, CASE WHEN $9 = 0 THEN 'done' ELSE 'running' END, \
    $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, hookd_now_ms(), hookd_now_ms(), \
    CASE WHEN $9 = 0 THEN hookd_now_ms() END, $11)";

/// A running job's cursor, read in the step's write transaction (locked on PostgreSQL, so
/// that two instances cannot both move it from the same place).
pub(crate) const RESEND_JOB_CURSOR: &str =
    "SELECT cursor FROM hookd_resend_jobs WHERE id = $1 AND state = 'running'";

/// Manual resends due now, counted up to `$1` (through both due indexes): the job waits
/// while the dispatcher is behind.
pub(crate) const DUE_MANUAL: &str = "SELECT COUNT(*) FROM ( \
    SELECT 1 FROM hookd_deliveries WHERE state = 'pending' AND attempts = 0 \
        AND next_attempt_at <= hookd_now_ms() AND next_trigger = 'manual' \
    UNION ALL \
    SELECT 1 FROM hookd_deliveries WHERE state = 'pending' AND attempts > 0 \
        AND next_attempt_at <= hookd_now_ms() AND next_trigger = 'manual' \
    LIMIT $1) due";

/// `$2` new cursor, `$3` resent in this step, `$4` finished.
pub(crate) const ADVANCE_RESEND_JOB: &str = "UPDATE hookd_resend_jobs SET cursor = $2, \
    resent = resent + $3, state = CASE WHEN $4 THEN 'done' ELSE state END, \
    finished_at = CASE WHEN $4 THEN hookd_now_ms() END, updated_at = hookd_now_ms() WHERE id = $1";

/// A bulk resend step reads its chunk from a window of this many batches' worth of ids, so
/// a read is bounded whatever the planner makes of the filter...
pub(crate) const RESEND_WINDOW_BATCHES: i64 = 20;
/// ...and passes over at most this many windows without a match before it records its
/// progress.
pub(crate) const RESEND_WINDOWS_PER_STEP: usize = 100;

/// `$1` hash, `$2` tenant, `$3` time to live (ms). Returns the expiry.
pub(crate) const INSERT_TENANT_TOKEN: &str = "INSERT INTO hookd_tenant_tokens \
    (token_hash, tenant_id, created_at, expires_at) \
    VALUES ($1, $2, hookd_now_ms(), hookd_now_ms() + $3) RETURNING expires_at";

/// The tenant of an unexpired token: one seek in the primary key.
pub(crate) const TENANT_OF_TOKEN: &str = "SELECT tenant_id FROM hookd_tenant_tokens \
    WHERE token_hash = $1 AND expires_at > hookd_now_ms()";

/// Revoke-all; expired tokens of the tenant go too.
pub(crate) const REVOKE_TENANT_TOKENS: &str =
    "DELETE FROM hookd_tenant_tokens WHERE tenant_id = $1";
