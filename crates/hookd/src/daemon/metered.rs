//! A [`Store`] that measures every call: `hookd_store_query_duration_seconds{operation}`
//! and `hookd_store_errors_total{operation}`, labelled with the method name. The daemon
//! wraps its store in one, so no caller has to remember to count.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use hookd_store::*;

use crate::daemon::metrics::Metrics;

pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Metrics,
}

impl MeteredStore {
    pub fn wrap(inner: Arc<dyn Store>, metrics: Metrics) -> Arc<dyn Store> {
        Arc::new(MeteredStore { inner, metrics })
    }

    fn observe<T>(&self, operation: &str, started: Instant, result: &Result<T>) {
        self.metrics
            .store_query_duration
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.store_error(operation);
        }
    }
}

/// `metered!(self, name(args...))` calls the inner store's `name` and observes it.
macro_rules! metered {
    ($self:ident, $op:ident($($arg:expr),*)) => {{
        let started = Instant::now();
        let result = $self.inner.$op($($arg),*).await;
        $self.observe(stringify!($op), started, &result);
        result
    }};
    // A scoped call observed under the name of its unscoped form: one series per
    // operation, whoever's scope (no tenant label, ever).
    ($self:ident, $name:literal, $op:ident($($arg:expr),*)) => {{
        let started = Instant::now();
        let result = $self.inner.$op($($arg),*).await;
        $self.observe($name, started, &result);
        result
    }};
}

#[async_trait]
impl Store for MeteredStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn writer_busy_seconds(&self) -> Option<f64> {
        self.inner.writer_busy_seconds()
    }
    async fn stopped(&self) -> String {
        self.inner.stopped().await
    }
    #[cfg(feature = "fault-injection")]
    async fn end_writer_thread(&self) -> bool {
        self.inner.end_writer_thread().await
    }
    async fn migrate(&self) -> Result<()> {
        metered!(self, migrate())
    }
    async fn check_ready(&self) -> Result<()> {
        metered!(self, check_ready())
    }
    async fn now_ms(&self) -> Result<i64> {
        metered!(self, now_ms())
    }
    async fn wake_source(&self) -> Result<Option<Box<dyn WakeSource>>> {
        metered!(self, wake_source())
    }
    async fn insert_endpoint(&self, endpoint: &Endpoint) -> Result<Endpoint> {
        metered!(self, insert_endpoint(endpoint))
    }
    async fn endpoint_in(&self, scope: &Scope, id: &EndpointId) -> Result<Option<Endpoint>> {
        metered!(self, "endpoint", endpoint_in(scope, id))
    }
    async fn endpoints_in(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Endpoint>> {
        metered!(self, "endpoints", endpoints_in(scope, after, limit))
    }
    /// Observed as `update_endpoint`, with or without a version to compare.
    async fn update_endpoint_if(
        &self,
        endpoint: &Endpoint,
        if_version: Option<i64>,
    ) -> Result<Versioned<Endpoint>> {
        let started = Instant::now();
        let result = self.inner.update_endpoint_if(endpoint, if_version).await;
        self.observe("update_endpoint", started, &result);
        result
    }
    async fn unreadable_endpoints(&self) -> Result<Vec<(EndpointId, String)>> {
        metered!(self, unreadable_endpoints())
    }
    /// Observed as `delete_endpoint`, with or without a version to compare.
    async fn delete_endpoint_if(
        &self,
        id: &EndpointId,
        if_version: Option<i64>,
    ) -> Result<Versioned<()>> {
        let started = Instant::now();
        let result = self.inner.delete_endpoint_if(id, if_version).await;
        self.observe("delete_endpoint", started, &result);
        result
    }
    async fn disable_endpoint(&self, id: &EndpointId, reason: &str) -> Result<bool> {
        metered!(self, disable_endpoint(id, reason))
    }
    async fn record_endpoint_health(
        &self,
        outcomes: &[(EndpointId, bool)],
        disable_after_ms: Option<i64>,
        reason: &str,
    ) -> Result<Vec<EndpointId>> {
        metered!(
            self,
            record_endpoint_health(outcomes, disable_after_ms, reason)
        )
    }
    async fn create_resend_job(&self, filter: &DeliveryFilter) -> Result<ResendJob> {
        metered!(self, create_resend_job(filter))
    }
    async fn resend_job_in(&self, scope: &Scope, id: &str) -> Result<Option<ResendJob>> {
        metered!(self, "resend_job", resend_job_in(scope, id))
    }
    async fn step_resend_jobs(&self, batch: u32, max_due: u32) -> Result<u64> {
        metered!(self, step_resend_jobs(batch, max_due))
    }
    async fn endpoint_summaries_in(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: u32,
        window_ms: i64,
    ) -> Result<Summaries> {
        metered!(
            self,
            "endpoint_summaries",
            endpoint_summaries_in(scope, after, limit, window_ms)
        )
    }
    async fn insert_tenant_token(
        &self,
        token_hash: &str,
        tenant: &TenantId,
        ttl_ms: i64,
    ) -> Result<i64> {
        metered!(self, insert_tenant_token(token_hash, tenant, ttl_ms))
    }
    async fn tenant_of_token(&self, token_hash: &str) -> Result<Option<TenantId>> {
        metered!(self, tenant_of_token(token_hash))
    }
    async fn revoke_tenant_tokens(&self, tenant: &TenantId) -> Result<u64> {
        metered!(self, revoke_tenant_tokens(tenant))
    }
    async fn event_types(&self, after: Option<&str>, limit: u32) -> Result<Vec<EventType>> {
        metered!(self, event_types(after, limit))
    }
    async fn event_type(&self, name: &str) -> Result<Option<EventType>> {
        metered!(self, event_type(name))
    }
    async fn insert_event_type(&self, event_type: &EventType) -> Result<EventType> {
        metered!(self, insert_event_type(event_type))
    }
    async fn update_event_type(&self, event_type: &EventType) -> Result<Option<EventType>> {
        metered!(self, update_event_type(event_type))
    }
    async fn delete_event_type(&self, name: &str) -> Result<bool> {
        metered!(self, delete_event_type(name))
    }
    /// Observed as `enqueue_events` (which calls it): the same work, with or without leases.
    async fn enqueue_events_leasing(
        &self,
        events: &[NewEvent],
        limits: &IngestLimits,
        lease: Option<IngestLease<'_>>,
    ) -> Result<(Vec<Enqueued>, Ingested)> {
        let started = Instant::now();
        let result = self
            .inner
            .enqueue_events_leasing(events, limits, lease)
            .await;
        self.observe("enqueue_events", started, &result);
        result
    }
    /// Observed as `ingest_outbox` (which calls it): the same work, with or without leases.
    async fn ingest_leasing(
        &self,
        max_rows: u32,
        limits: &IngestLimits,
        lease: Option<IngestLease<'_>>,
    ) -> Result<Ingested> {
        let started = Instant::now();
        let result = self.inner.ingest_leasing(max_rows, limits, lease).await;
        self.observe("ingest_outbox", started, &result);
        result
    }
    async fn event_in(&self, scope: &Scope, event_id: &EventId) -> Result<Option<Event>> {
        metered!(self, "event", event_in(scope, event_id))
    }
    async fn claim_due(
        &self,
        plan: ClaimPlan,
        exclude: &[EndpointId],
        lease_ms: u64,
    ) -> Result<Vec<Claimed>> {
        metered!(self, claim_due(plan, exclude, lease_ms))
    }
    async fn complete(&self, batch: &[Completion]) -> Result<Vec<bool>> {
        metered!(self, complete(batch))
    }
    async fn release(&self, leases: &[Lease], how: Release) -> Result<u64> {
        metered!(self, release(leases, how))
    }
    async fn rescue_expired(&self) -> Result<u64> {
        metered!(self, rescue_expired())
    }
    async fn start_instance(&self) -> Result<Instance> {
        metered!(self, start_instance())
    }
    async fn heartbeat(&self, dead_after_ms: u64) -> Result<u64> {
        metered!(self, heartbeat(dead_after_ms))
    }
    async fn stop_instance(&self) -> Result<()> {
        metered!(self, stop_instance())
    }
    async fn promote_stranded(&self) -> Result<u64> {
        metered!(self, promote_stranded())
    }
    async fn next_due_in_ms(&self) -> Result<Option<i64>> {
        metered!(self, next_due_in_ms())
    }
    async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        metered!(self, deliveries(filter, before_id, limit))
    }
    async fn delivery_in(&self, scope: &Scope, id: i64) -> Result<Option<Delivery>> {
        metered!(self, "delivery", delivery_in(scope, id))
    }
    async fn attempts(&self, delivery_id: i64) -> Result<Vec<AttemptRecord>> {
        metered!(self, attempts(delivery_id))
    }
    async fn resend_in(&self, scope: &Scope, id: i64) -> Result<bool> {
        metered!(self, "resend", resend_in(scope, id))
    }

    async fn backlog(&self) -> Result<Backlog> {
        metered!(self, backlog())
    }
    async fn purge_finished(&self, before_ms: i64, batch: u32) -> Result<Purged> {
        metered!(self, purge_finished(before_ms, batch))
    }
}
