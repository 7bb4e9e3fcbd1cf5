//! What both stores do with incoming events around the statements that write them: the
//! checks and ids of events, the deliveries they fan out to (held behind an ordered
//! endpoint's earlier ones, or leased to the caller), and which outbox rows an ingest
//! takes. Pure: no I/O; the stores run the statements.

/// Bounds applied to incoming events.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// A payload larger than this is not sent: its deliveries end `failed`.
    pub max_payload_bytes: usize,
    /// Checks each payload that passed the other checks against its type's schema; one
    /// that fails is not sent (its deliveries end `failed` with the reason). `None`: no
    /// check.
    pub check: Option<std::sync::Arc<dyn crate::PayloadCheck>>,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 * 1024,
            check: None,
        }
    }
}

/// Why an event can never be delivered, or `None` when it can.
pub(crate) fn undeliverable(
    event_id: &str,
    payload: &str,
    limits: &IngestLimits,
) -> Option<String> {
    if event_id.len() > 200 || !event_id.chars().all(|c| c.is_ascii_graphic()) {
        return Some(
            "event_id must be 1 to 200 visible ASCII characters (it is sent as the webhook-id header)"
                .to_string(),
        );
    }
    payload_error(payload, limits)
}

/// Why a payload can never be delivered, or `None` when it can.
pub fn payload_error(payload: &str, limits: &IngestLimits) -> Option<String> {
    let depth = json_depth(payload);
    if depth > MAX_DEPTH {
        return Some(format!(
            "payload is nested {depth} levels deep, over the limit of {MAX_DEPTH}"
        ));
    }
    if payload.len() > limits.max_payload_bytes {
        return Some(format!(
            "payload is {} bytes, over the limit of {} bytes",
            payload.len(),
            limits.max_payload_bytes
        ));
    }
    match serde_json::from_str::<serde::de::IgnoredAny>(payload) {
        Ok(_) => None,
        Err(e) => Some(format!("payload is not valid JSON: {e}")),
    }
}

/// Deeper JSON is refused: receivers' parsers (and many of ours) recurse.
pub const MAX_DEPTH: usize = 128;

/// How deeply arrays and objects nest in a JSON text, found without recursion (strings and
/// their escapes are skipped).
pub fn json_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The event id to store: the producer's, or a generated one when absent or blank.
pub(crate) fn event_id(given: Option<&str>) -> String {
    match given.map(str::trim) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => crate::new_id("evt"),
    }
}

/// The id to store for an event: the given one when it is a valid id, else a stable
/// stand-in derived from it.
pub(crate) fn storable_id(given: String) -> String {
    if given.len() <= 200 && given.chars().all(|c| c.is_ascii_graphic()) {
        given
    } else {
        format!(
            "evt_invalid_{}",
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, given.as_bytes()).simple()
        )
    }
}

/// Text from a column that may not hold valid UTF-8 (SQLite stores whatever it is given).
pub(crate) fn lossy(bytes: Vec<u8>) -> (String, bool) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, true),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_errors() {
        let limits = IngestLimits {
            max_payload_bytes: 16,
            ..IngestLimits::default()
        };
        assert_eq!(payload_error(r#"{"a":1}"#, &limits), None);
        assert_eq!(payload_error("[1, 2]", &limits), None);
        assert!(payload_error("{not json", &limits)
            .unwrap()
            .contains("not valid JSON"));
        assert!(payload_error("", &limits)
            .unwrap()
            .contains("not valid JSON"));
        assert!(payload_error(r#"{"a":"0123456789abcdef"}"#, &limits)
            .unwrap()
            .contains("over the limit"));
    }

    #[test]
    fn undeliverable_event_ids() {
        let limits = IngestLimits::default();
        assert_eq!(undeliverable("order-1:paid", "{}", &limits), None);
        for bad in [
            "has space",
            "tab\there",
            "line\nbreak",
            "한글",
            &"x".repeat(201),
        ] {
            assert!(
                undeliverable(bad, "{}", &limits)
                    .unwrap()
                    .contains("webhook-id"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn depth_table() {
        for (text, depth) in [
            ("1", 0),
            ("{}", 1),
            (r#"{"a":[1,{"b":[]}]}"#, 4),
            (r#"{"a":"[[[[{{{{"}"#, 1),
            (r#"{"a":"\\\"[[["}"#, 1),
            ("[[[]]][]", 3),
        ] {
            assert_eq!(json_depth(text), depth, "{text}");
        }
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(payload_error(&deep, &IngestLimits::default())
            .unwrap()
            .contains("nested 200 levels"));
        let ok = format!("{}1{}", "[".repeat(128), "]".repeat(128));
        assert_eq!(payload_error(&ok, &IngestLimits::default()), None);
    }

    #[test]
    fn invalid_ids_get_a_stable_stand_in() {
        assert_eq!(storable_id("e-1".into()), "e-1");
        let long = "x".repeat(6000);
        let a = storable_id(long.clone());
        assert!(a.starts_with("evt_invalid_") && a.len() < 60);
        assert_eq!(a, storable_id(long), "the same bad id, the same stand-in");
        assert_ne!(storable_id("bad id".into()), storable_id("bad  id".into()));
        assert_eq!(lossy(b"ok".to_vec()), ("ok".to_string(), true));
        assert!(!lossy(vec![0xff, b'{']).1);
    }

    #[test]
    fn event_ids() {
        assert_eq!(event_id(Some("e-1")), "e-1");
        assert!(event_id(None).starts_with("evt_"));
        assert!(event_id(Some("  ")).starts_with("evt_"));
    }
}

/// The outbox row decoder, under arbitrary input: never a panic, and an event that is
/// accepted is JSON within the limits.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rows_are_accepted_only_when_sendable(
            event_id in prop_oneof![".{0,40}", "[a-zA-Z0-9_.:-]{1,40}"],
            payload in prop_oneof![
                any::<u32>().prop_map(|n| format!("{{\"n\":{n}}}")),
                ".{0,200}",
                "[\\[\\]{}\"\\\\:,0-9a ]{0,300}",
            ],
        ) {
            let limits = IngestLimits { max_payload_bytes: 256, ..IngestLimits::default() };
            let id = super::event_id(Some(&event_id));
            match undeliverable(&id, &payload, &limits) {
                None => {
                    prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(&payload).is_ok());
                    prop_assert!(payload.len() <= 256 && json_depth(&payload) <= MAX_DEPTH);
                    prop_assert!(id.chars().all(|c| c.is_ascii_graphic()));
                }
                Some(reason) => prop_assert!(!reason.is_empty()),
            }
        }
    }
}

/// Whether a producer's `traceparent` is kept with its event: printable ASCII, at most 128
/// bytes (a W3C `traceparent` has 55). Its meaning is the daemon's to read; anything else is
/// dropped rather than failing the event, as W3C asks of a malformed one.
pub fn storable_traceparent(text: &str) -> bool {
    !text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic())
}

/// An event on its way in: an outbox row or an API call.
pub(crate) struct Incoming<'a> {
    pub event_id: Option<&'a str>,
    pub event_type: &'a str,
    pub payload: &'a str,
    pub endpoint_id: Option<&'a str>,
    /// As given, not yet checked.
    pub tenant_id: Option<&'a str>,
    pub traceparent: Option<&'a str>,
}

impl<'a> From<&'a crate::rows::OutboxRow> for Incoming<'a> {
    fn from(r: &'a crate::rows::OutboxRow) -> Self {
        Incoming {
            event_id: r.event_id.as_deref(),
            event_type: &r.event_type,
            payload: &r.payload,
            endpoint_id: r.endpoint_id.as_deref(),
            tenant_id: r.tenant_id.as_deref(),
            traceparent: r.traceparent.as_deref(),
        }
    }
}

impl<'a> From<&'a crate::NewEvent> for Incoming<'a> {
    fn from(e: &'a crate::NewEvent) -> Self {
        Incoming {
            event_id: e.event_id.as_deref(),
            event_type: &e.event_type,
            payload: &e.payload,
            endpoint_id: e.endpoint_id.as_deref(),
            tenant_id: e.tenant_id.as_deref(),
            traceparent: e.traceparent.as_deref(),
        }
    }
}

/// An event ready to be inserted.
#[derive(serde::Serialize)]
pub(crate) struct PreparedEvent<'a> {
    pub event_id: String,
    pub event_type: &'a str,
    pub payload: &'a str,
    pub endpoint_id: Option<&'a str>,
    /// Stored only when valid (an invalid one is the event's `payload_error`).
    pub tenant_id: Option<&'a str>,
    pub payload_error: Option<String>,
    pub traceparent: Option<&'a str>,
    /// The tenant as given, which fan-out matches on: an invalid one matches no endpoint.
    #[serde(skip)]
    pub given_tenant: Option<&'a str>,
}

/// A batch of incoming events ready to be inserted.
pub(crate) struct Prepared<'a> {
    /// One per distinct event id, in arrival order.
    pub rows: Vec<PreparedEvent<'a>>,
    /// Per incoming event: its stored id, and whether it is the first with that id in the
    /// batch (a later one is a duplicate whatever the database holds).
    pub outcome: Vec<(String, bool)>,
}

/// Gives every event its storable id and its reason to fail, if any, and drops repeated ids.
pub(crate) fn prepare<'a>(events: &[Incoming<'a>], limits: &IngestLimits) -> Prepared<'a> {
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    let mut prepared = Prepared {
        rows: Vec::with_capacity(events.len()),
        outcome: Vec::with_capacity(events.len()),
    };
    for e in events {
        let given = event_id(e.event_id);
        let tenant_error = e
            .tenant_id
            .and_then(|t| crate::TenantId::parse(t).err())
            .map(|err| err.to_string());
        let tenant_id = e.tenant_id.filter(|_| tenant_error.is_none());
        let payload_error = tenant_error
            .or_else(|| undeliverable(&given, e.payload, limits))
            .or_else(|| {
                let check = limits.check.as_deref()?;
                check.check(e.event_type, e.payload)
            });
        // An id that cannot be an id (too long for the index, unprintable) is stored under a
        // stable stand-in, so the row fails with its reason instead of stopping ingestion;
        // the same bad id maps to the same stand-in.
        let id = storable_id(given);
        let first = seen.insert(id.clone());
        prepared.outcome.push((id.clone(), first));
        if first {
            prepared.rows.push(PreparedEvent {
                event_id: id,
                event_type: e.event_type,
                payload: e.payload,
                endpoint_id: e.endpoint_id,
                tenant_id,
                payload_error,
                traceparent: e.traceparent.filter(|t| storable_traceparent(t)),
                given_tenant: e.tenant_id,
            });
        }
    }
    prepared
}

/// The events as the JSON array `INSERT_EVENTS` reads on PostgreSQL.
pub(crate) fn events_json(rows: &[PreparedEvent<'_>]) -> String {
    serde_json::to_string(rows).expect("events serialize")
}

impl crate::values::Row for PreparedEvent<'_> {
    fn add_to<'q>(&'q self, v: &mut crate::values::Values<'q>) {
        v.add(self.event_id.as_str())
            .add(self.event_type)
            .add(self.payload)
            .add(self.endpoint_id)
            .add(self.tenant_id)
            .add(self.payload_error.as_deref())
            .add(self.traceparent);
    }
}

impl crate::values::Row for NewDelivery<'_> {
    fn add_to<'q>(&'q self, v: &mut crate::values::Values<'q>) {
        v.add(self.ord as i64)
            .add(self.event_id)
            .add(self.endpoint_id.as_str())
            .add(self.event_type)
            .add(self.tenant_id)
            .add(self.state)
            .add(self.parked)
            .add(self.held)
            .add(self.error)
            .add(self.lease_token)
            .add(self.lease_ms);
    }
}

/// A delivery to insert, as `INSERT_DELIVERIES` reads it; `ord` keeps the ids in arrival
/// order (an ordered endpoint delivers in id order).
#[derive(serde::Serialize)]
pub(crate) struct NewDelivery<'a> {
    pub ord: usize,
    pub event_id: &'a str,
    pub endpoint_id: String,
    pub event_type: &'a str,
    /// The event's tenant (none for a delivery failed across tenants: only the provider
    /// sees that one).
    pub tenant_id: Option<&'a str>,
    pub state: &'static str,
    pub parked: bool,
    pub held: bool,
    pub error: Option<&'a str>,
    /// Set when the delivery is created leased to the ingest's caller, `in_flight`.
    pub lease_token: Option<&'a str>,
    pub lease_ms: Option<i64>,
}

/// The deliveries an ingest leases to its caller as it creates them (`crate::IngestLease`).
pub(crate) struct Leasing<'a> {
    /// Deliveries to lease at most.
    pub room: usize,
    /// Endpoints whose deliveries are not leased.
    pub exclude: &'a [crate::EndpointId],
    /// Rate-limited endpoints: their deliveries are not leased either, but left pending for
    /// a claim to take within their budget.
    pub limited: Vec<String>,
    pub token: String,
    pub lease_ms: i64,
    /// The deliveries leased, filled in as they are created.
    pub rows: Vec<crate::rows::ClaimRow>,
    /// Whether deliveries due now were created and not leased.
    pub due: bool,
    /// Whether rows were left in the outbox only because their endpoints are busy.
    pub blocked: bool,
}

impl<'a> Leasing<'a> {
    fn new(lease: crate::IngestLease<'a>, limited: Vec<String>) -> Self {
        Leasing {
            room: lease.max as usize,
            exclude: lease.exclude_endpoints,
            limited,
            token: crate::token(),
            lease_ms: lease.lease_ms as i64,
            rows: Vec::new(),
            due: false,
            blocked: false,
        }
    }

    /// Whether a new delivery to `endpoint_id`, due now, is leased: while there is room.
    pub fn takes(&self, endpoint_id: &str, leased_so_far: usize) -> bool {
        leased_so_far < self.room
            && !self.exclude.iter().any(|e| e.as_str() == endpoint_id)
            && !self.limited.iter().any(|e| e == endpoint_id)
    }

    /// Takes the deliveries just created leased (`created`: id, event id, endpoint id, in
    /// any order) as claimed rows of the events in `prepared`, in due order: creation order.
    pub fn add_created(
        &mut self,
        created: Vec<(i64, String, String)>,
        prepared: &Prepared<'_>,
    ) -> crate::Result<()> {
        let events: std::collections::HashMap<&str, &PreparedEvent<'_>> = prepared
            .rows
            .iter()
            .map(|r| (r.event_id.as_str(), r))
            .collect();
        for (id, event_id, endpoint_id) in created {
            let event = events.get(event_id.as_str()).ok_or_else(|| {
                crate::StoreError::Inconsistent(format!(
                    "new delivery {id} names event {event_id}, which the batch does not have"
                ))
            })?;
            self.rows.push(crate::rows::ClaimRow {
                id,
                lease_token: self.token.clone(),
                event_type: event.event_type.to_string(),
                event_id: event_id.into(),
                endpoint_id,
                attempts: 1,
                next_trigger: "auto".to_string(),
                auto_attempts: 1,
                manual_only: false,
                next_attempt_at: None,
                payload: event.payload.to_string(),
                payload_error: None,
                traceparent: event.traceparent.map(str::to_string),
            });
        }
        // RETURNING gives no order: due order is creation order.
        self.rows.sort_by_key(|r| r.id);
        Ok(())
    }
}

impl Prepared<'_> {
    /// Per incoming event, its stored id and whether this batch created it: the first with
    /// its id in the batch, and among `new_ids`, the events the insert stored.
    pub fn created(self, new_ids: &std::collections::HashSet<String>) -> Vec<(String, bool)> {
        self.outcome
            .into_iter()
            .map(|(id, first)| {
                let created = first && new_ids.contains(&id);
                (id, created)
            })
            .collect()
    }
}

/// The ordered endpoints that pending deliveries of the new events in `prepared` go to,
/// each once, in the order first reached. Before it plans the deliveries ([`fan_out`]), a
/// store asks of each whether it already has a delivery to finish. Empty, with nothing
/// planned, when no target is ordered.
pub(crate) fn ordered_endpoints(
    prepared: &Prepared<'_>,
    new_ids: &std::collections::HashSet<String>,
    targets: &[crate::matching::Target],
) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    if !targets.iter().any(|t| t.ordered) {
        return found;
    }
    let pending = prepared
        .rows
        .iter()
        .filter(|r| r.payload_error.is_none() && new_ids.contains(&r.event_id));
    for row in pending {
        for planned in
            crate::matching::plan(row.event_type, row.endpoint_id, row.given_tenant, targets)
        {
            if planned.ordered && !found.contains(&planned.endpoint_id) {
                found.push(planned.endpoint_id);
            }
        }
    }
    found
}

/// The deliveries of the new events in `prepared` (those in `new_ids`), in arrival order,
/// and how many of them are leased.
///
/// `busy` says, of each endpoint [`ordered_endpoints`] named, whether it already has a
/// delivery to finish: its first new delivery waits (`held`) if so, and every later one in
/// the batch does. With `leasing`, the deliveries due now are created leased, with `token`,
/// while it has room.
pub(crate) fn fan_out<'p>(
    prepared: &'p Prepared<'_>,
    new_ids: &std::collections::HashSet<String>,
    targets: &[crate::matching::Target],
    mut busy: std::collections::HashMap<String, bool>,
    mut leasing: Option<&mut Leasing<'_>>,
    token: Option<&'p str>,
) -> (Vec<NewDelivery<'p>>, usize) {
    let lease_ms = leasing.as_ref().map(|l| l.lease_ms);
    let (mut deliveries, mut leased) = (Vec::new(), 0);
    for row in prepared
        .rows
        .iter()
        .filter(|r| new_ids.contains(&r.event_id))
    {
        let planned =
            crate::matching::plan(row.event_type, row.endpoint_id, row.given_tenant, targets);
        if planned.is_empty() {
            if let Some(missing) = row.endpoint_id {
                tracing::warn!(event_id = %row.event_id, endpoint_id = missing, "event names an endpoint that does not exist; nothing to deliver");
            }
        }
        for planned in planned {
            let error = row.payload_error.as_deref().or(planned.error);
            let state = if error.is_some() { "failed" } else { "pending" };
            let held = planned.ordered
                && state == "pending"
                // Every endpoint reached was asked about; were one not, waiting is the
                // safe answer (the safety net, `promote_stranded`, lets it go).
                && busy.insert(planned.endpoint_id.clone(), true).unwrap_or(true);
            let due = state == "pending" && !planned.parked && !held;
            let lease = match leasing.as_deref_mut() {
                Some(l) if due && l.takes(&planned.endpoint_id, leased) => {
                    leased += 1;
                    true
                }
                Some(l) => {
                    l.due |= due;
                    false
                }
                None => false,
            };
            deliveries.push(NewDelivery {
                ord: deliveries.len(),
                event_id: &row.event_id,
                endpoint_id: planned.endpoint_id,
                event_type: row.event_type,
                tenant_id: if planned.error.is_some() {
                    None
                } else {
                    row.tenant_id
                },
                state,
                parked: planned.parked,
                held,
                error,
                lease_token: if lease { token } else { None },
                lease_ms: if lease { lease_ms } else { None },
            });
        }
    }
    (deliveries, leased)
}

/// What one outbox row can do under a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowLease {
    /// Deliveries it could lease now.
    pub leasable: usize,
    /// Deliveries due now to endpoints at their cap (`IngestLease::exclude_endpoints`).
    pub busy: usize,
}

/// How many rows of a window of outbox rows an ingest consumes, with room to lease `room`
/// deliveries (at least 1), and whether it left rows behind only because their endpoints
/// are busy:
/// - every row up to and including the one that fills the room; the rest stay in the
///   outbox, the queue, until there is room again, instead of becoming deliveries that a
///   claim must read back;
/// - with [`Consume::ToRoom`], not the rows at the end whose deliveries all go to busy
///   endpoints: a busy endpoint's rows are taken (as pending deliveries) only to reach
///   rows behind them that are not blocked, so a busy endpoint never holds the others up.
pub(crate) fn rows_to_take(
    rows: impl IntoIterator<Item = RowLease>,
    room: usize,
    consume: crate::Consume,
) -> (usize, bool) {
    let (mut sum, mut take, mut read) = (0, 0, 0);
    for (i, row) in rows.into_iter().enumerate() {
        read = i + 1;
        let blocked = row.leasable == 0 && row.busy > 0;
        if !blocked || consume != crate::Consume::ToRoom {
            take = i + 1;
        }
        sum += row.leasable;
        if sum >= room.max(1) {
            return (i + 1, false);
        }
    }
    (take, take < read)
}

/// Outbox rows an ingest reads at most: under a lease that leaves rows behind, about twice
/// what it may lease (a row leases one delivery or more), so that rows it will leave in the
/// outbox are not read for nothing.
pub(crate) fn window(max_rows: u32, lease: Option<&crate::IngestLease<'_>>) -> u32 {
    match lease {
        Some(l) if l.max > 0 && l.consume == crate::Consume::ToRoom => {
            max_rows.min(l.max.saturating_mul(2).max(32))
        }
        _ => max_rows,
    }
}

/// The outbox rows an ingest consumes under `lease` ([`rows_to_take`]), and the leasing to
/// do; without a lease (or with no room), all of them, none leased.
pub(crate) fn lease_rows<'l>(
    mut rows: Vec<crate::rows::OutboxRow>,
    targets: &[crate::matching::Target],
    lease: Option<crate::IngestLease<'l>>,
) -> (Vec<crate::rows::OutboxRow>, Option<Leasing<'l>>) {
    let Some(lease) = lease.filter(|l| l.max > 0) else {
        return (rows, None);
    };
    let limited: Vec<String> = targets
        .iter()
        .filter(|t| t.rate_limited)
        .map(|t| t.id.clone())
        .collect();
    let per_row = rows.iter().map(|r| {
        let mut row = RowLease {
            leasable: 0,
            busy: 0,
        };
        for p in crate::matching::plan(
            &r.event_type,
            r.endpoint_id.as_deref(),
            r.tenant_id.as_deref(),
            targets,
        ) {
            // A rate-limited endpoint's delivery is created pending: neither leased nor
            // waiting for a place.
            if p.parked || p.error.is_some() || limited.contains(&p.endpoint_id) {
                continue;
            }
            if lease
                .exclude_endpoints
                .iter()
                .any(|e| e.as_str() == p.endpoint_id)
            {
                row.busy += 1;
            } else {
                row.leasable += 1;
            }
        }
        row
    });
    let (take, blocked) = rows_to_take(per_row, lease.max as usize, lease.consume);
    rows.truncate(take);
    let mut leasing = Leasing::new(lease, limited);
    leasing.blocked = blocked;
    (rows, Some(leasing))
}

/// The leasing of a write that stores every event it is given (the API's group commit):
/// `lease`'s `consume` does not apply. Without a lease (or with no room), none.
pub(crate) fn lease_all<'l>(
    targets: &[crate::matching::Target],
    lease: Option<crate::IngestLease<'l>>,
) -> Option<Leasing<'l>> {
    let lease = lease.filter(|l| l.max > 0)?;
    let limited = targets
        .iter()
        .filter(|t| t.rate_limited)
        .map(|t| t.id.clone())
        .collect();
    Some(Leasing::new(lease, limited))
}

#[cfg(test)]
mod leasing_tests {
    use super::{rows_to_take, RowLease};

    #[test]
    fn rows_to_take_fills_the_room_and_leaves_busy_rows_at_the_end() {
        use crate::Consume::{ToRoom, ToRoomPastBusy};
        // A row: (leasable, busy) deliveries. Case: (rows, room, consume, (take, blocked)).
        type Case = (
            &'static [(usize, usize)],
            usize,
            crate::Consume,
            (usize, bool),
        );
        let cases: [Case; 12] = [
            (&[(1, 0), (1, 0), (1, 0), (1, 0)], 2, ToRoom, (2, false)),
            (&[(1, 0), (1, 0), (1, 0), (1, 0)], 4, ToRoom, (4, false)),
            (&[(1, 0), (1, 0), (1, 0), (1, 0)], 5, ToRoom, (4, false)),
            // A fan-out row that overfills the room is taken whole.
            (&[(10, 0), (10, 0), (10, 0)], 15, ToRoom, (2, false)),
            // Rows with nothing to deliver (no endpoint, a disabled one) are taken.
            (&[(0, 0), (0, 0), (1, 0), (0, 0)], 1, ToRoom, (3, false)),
            (&[(0, 0), (0, 0)], 1, ToRoom, (2, false)),
            // A busy endpoint's rows wait in the outbox...
            (&[(0, 1), (0, 1), (0, 1)], 4, ToRoom, (0, true)),
            (&[(1, 0), (0, 1), (0, 1)], 4, ToRoom, (1, true)),
            // ...unless a row behind them can go, or waiting is off.
            (&[(0, 1), (0, 1), (1, 0), (0, 1)], 4, ToRoom, (3, true)),
            (&[(0, 1), (0, 1), (0, 1)], 4, ToRoomPastBusy, (3, false)),
            // A row that leases some and waits for a busy endpoint with the rest is taken.
            (&[(1, 1), (0, 1)], 4, ToRoom, (1, true)),
            // Room 0 is treated as 1.
            (&[(1, 0), (1, 0)], 0, ToRoom, (1, false)),
        ];
        for (rows, room, consume, expected) in cases {
            let rows = rows
                .iter()
                .map(|&(leasable, busy)| RowLease { leasable, busy });
            assert_eq!(
                rows_to_take(rows.clone(), room, consume),
                expected,
                "{:?} room {room} {consume:?}",
                rows.collect::<Vec<_>>()
            );
        }
    }
}
