//! The part of the [`Store`](crate::Store) implementation that is the same SQL and the same
//! logic on both databases, written once and expanded for each.
//!
//! A backend provides `fn sql(&'static str) -> Cow<'static, str>` (its dialect of a shared
//! statement), `migrator()`, a `reader()` pool, `writer()` (a connection for one write),
//! `begin_write()` (a write transaction, of its type `WriteTx`), how it writes a batch of
//! rows (`insert_events`, `insert_deliveries`, `complete_rows`, `complete_unordered`), and
//! `check_writer()` (readiness of whatever writes), and
//! the methods that really differ (claim, ingest, rescue, migrations, wake-ups), passed in
//! as `$extra`.

macro_rules! store_impl {
    ($store:ty, $db:ty, { $($extra:item)* }) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            $($extra)*

            async fn migrate(&self) -> $crate::Result<()> {
                let mut conn = self.writer().await?;
                Self::migrator().run_direct(&mut *conn).await?;
                Ok(())
            }

            async fn check_ready(&self) -> $crate::Result<()> {
                let applied: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                        .fetch_one(self.reader())
                        .await?;
                let known = Self::migrator().iter().count() as u64;
                if (applied as u64) < known {
                    return Err($crate::StoreError::NotMigrated { applied: applied as u64, known });
                }
                self.check_writer().await
            }

            async fn now_ms(&self) -> $crate::Result<i64> {
                Ok(sqlx::query_scalar(&Self::sql($crate::sql::NOW))
                    .fetch_one(self.reader())
                    .await?)
            }

            async fn insert_endpoint(&self, e: &$crate::Endpoint) -> $crate::Result<$crate::Endpoint> {
                let (event_types, schedule, headers) = $crate::rows::endpoint_json(e);
                sqlx::query(&Self::sql($crate::sql::INSERT_ENDPOINT))
                    .bind(&e.id)
                    .bind(&e.url)
                    .bind(&e.description)
                    .bind(event_types)
                    .bind(e.bearer_token.as_deref().map(|t| $crate::seal(self.sealer(), t, &e.id)))
                    .bind(e.signature_scheme.as_str())
                    .bind($crate::seal(self.sealer(), &e.secret, &e.id))
                    .bind(schedule)
                    .bind(e.timeout_ms.map(|t| t as i64))
                    .bind(headers)
                    .bind(e.enabled)
                    .bind(&e.disabled_reason)
                    .bind(e.disabled_at)
                    .bind(e.previous_secret.as_deref().map(|p| $crate::seal(self.sealer(), p, &e.id)))
                    .bind(e.previous_secret_expires_at)
                    .bind(e.ordered)
                    .execute(&mut *self.writer().await?)
                    .await?;
                self.endpoint_any(&mut *self.writer().await?, &e.id)
                    .await?
                    .ok_or_else(|| $crate::StoreError::Inconsistent(format!("endpoint {} is not there after its insert", e.id)))
            }

            async fn endpoint(&self, id: &str) -> $crate::Result<Option<$crate::Endpoint>> {
                Ok(self.endpoint_any(self.reader(), id).await?.filter(|e| !e.deleted))
            }

            async fn endpoints(&self, after: Option<&str>, limit: u32) -> $crate::Result<Vec<$crate::Endpoint>> {
                let sql = format!(
                    "SELECT {} FROM hookd_endpoints WHERE deleted_at IS NULL AND id > $1 ORDER BY id LIMIT $2",
                    $crate::rows::ENDPOINT_COLUMNS
                );
                sqlx::query_as::<_, $crate::rows::EndpointRow>(&sql)
                    .bind(after.unwrap_or(""))
                    .bind(limit as i64)
                    .fetch_all(self.reader())
                    .await?
                    .into_iter()
                    .map(|row| Ok($crate::open_endpoint(self.sealer(), $crate::Endpoint::try_from(row)?)))
                    .collect()
            }

            async fn unreadable_endpoints(&self) -> $crate::Result<Vec<(String, String)>> {
                let rows: Vec<(String, String, Option<String>, Option<String>)> =
                    sqlx::query_as(&Self::sql($crate::sql::SEALED_ENDPOINTS))
                        .fetch_all(self.reader())
                        .await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(id, secret, previous, token)| {
                        [Some(secret), previous, token]
                            .into_iter()
                            .flatten()
                            .find_map(|value| $crate::open(self.sealer(), value, &id).err())
                            .map(|reason| (id, reason))
                    })
                    .collect())
            }

            async fn update_endpoint_if(
                &self,
                e: &$crate::Endpoint,
                if_version: Option<i64>,
            ) -> $crate::Result<$crate::Versioned<$crate::Endpoint>> {
                let (event_types, schedule, headers) = $crate::rows::endpoint_json(e);
                let mut tx = self.begin_write().await?;
                let updated = sqlx::query(&Self::sql($crate::sql::UPDATE_ENDPOINT))
                    .bind(&e.id)
                    .bind(&e.url)
                    .bind(&e.description)
                    .bind(event_types)
                    .bind(e.bearer_token.as_deref().map(|t| $crate::seal(self.sealer(), t, &e.id)))
                    .bind(e.signature_scheme.as_str())
                    .bind($crate::seal(self.sealer(), &e.secret, &e.id))
                    .bind(schedule)
                    .bind(e.timeout_ms.map(|t| t as i64))
                    .bind(headers)
                    .bind(e.enabled)
                    .bind(&e.disabled_reason)
                    .bind(e.disabled_at)
                    .bind(e.previous_secret.as_deref().map(|p| $crate::seal(self.sealer(), p, &e.id)))
                    .bind(e.previous_secret_expires_at)
                    .bind(e.ordered)
                    .bind(e.unreadable.is_some())
                    .bind(if_version)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if updated == 0 {
                    return Self::unwritten(&mut tx, &e.id).await;
                }
                let follow = if e.enabled {
                    $crate::sql::UNPARK_ENDPOINT_DELIVERIES
                } else {
                    $crate::sql::PARK_ENDPOINT_DELIVERIES
                };
                sqlx::query(&Self::sql(follow)).bind(&e.id).execute(&mut *tx).await?;
                if !e.ordered {
                    sqlx::query(&Self::sql($crate::sql::UNHOLD_ENDPOINT_DELIVERIES))
                        .bind(&e.id)
                        .bind(e.enabled)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(match self.endpoint_any(&mut *self.writer().await?, &e.id).await? {
                    Some(updated) => $crate::Versioned::Done(updated),
                    None => $crate::Versioned::NotFound,
                })
            }

            async fn delete_endpoint_if(
                &self,
                id: &str,
                if_version: Option<i64>,
            ) -> $crate::Result<$crate::Versioned<()>> {
                let mut tx = self.begin_write().await?;
                let deleted = sqlx::query(&Self::sql($crate::sql::DELETE_ENDPOINT))
                    .bind(id)
                    .bind(if_version)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    return Self::unwritten(&mut tx, id).await;
                }
                sqlx::query(&Self::sql($crate::sql::FAIL_ENDPOINT_DELIVERIES))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::Versioned::Done(()))
            }

            async fn disable_endpoint(&self, id: &str, reason: &str) -> $crate::Result<bool> {
                let mut tx = self.begin_write().await?;
                let disabled = sqlx::query(&Self::sql($crate::sql::DISABLE_ENDPOINT))
                    .bind(id)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if disabled {
                    sqlx::query(&Self::sql($crate::sql::PARK_ENDPOINT_DELIVERIES)).bind(id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(disabled)
            }

            async fn record_endpoint_health(
                &self,
                outcomes: &[(String, bool)],
                disable_after_ms: Option<i64>,
                reason: &str,
            ) -> $crate::Result<Vec<String>> {
                let mut disabled = Vec::new();
                if outcomes.is_empty() {
                    return Ok(disabled);
                }
                let mut tx = self.begin_write().await?;
                for (id, succeeded) in outcomes {
                    if *succeeded {
                        sqlx::query(&Self::sql($crate::sql::ENDPOINT_SUCCEEDED)).bind(id).execute(&mut *tx).await?;
                        continue;
                    }
                    sqlx::query(&Self::sql($crate::sql::ENDPOINT_FAILED)).bind(id).execute(&mut *tx).await?;
                    let Some(after) = disable_after_ms else { continue };
                    let now_disabled = sqlx::query(&Self::sql($crate::sql::DISABLE_IF_FAILING))
                        .bind(id)
                        .bind(reason)
                        .bind(after)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        == 1;
                    if now_disabled {
                        sqlx::query(&Self::sql($crate::sql::PARK_ENDPOINT_DELIVERIES)).bind(id).execute(&mut *tx).await?;
                        disabled.push(id.clone());
                    }
                }
                tx.commit().await?;
                Ok(disabled)
            }

            async fn create_resend_job(&self, filter: &$crate::DeliveryFilter) -> $crate::Result<$crate::ResendJob> {
                let id = $crate::new_id("rsj");
                // The job covers what exists now: ids up to the current highest, down to the
                // lowest that matches. Counted on a reader, through the filter's index: a
                // count of a million matches must not hold the write lock (SQLite has one
                // writer, and delivery needs it).
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(MIN(id), 0) FROM hookd_deliveries WHERE TRUE",
                );
                push_filter!(q, filter);
                let (matched, max_id, min_id): (i64, i64, i64) =
                    q.build_query_as().fetch_one(self.reader()).await?;
                let mut tx = self.begin_write().await?;
                sqlx::query(&Self::sql($crate::sql::INSERT_RESEND_JOB))
                    .bind(&id)
                    .bind(filter.state.map(|s| s.as_str()))
                    .bind(&filter.endpoint_id)
                    .bind(&filter.event_id)
                    .bind(&filter.event_type)
                    .bind(filter.since)
                    .bind(filter.until)
                    .bind(max_id)
                    .bind(matched)
                    .bind(min_id)
                    .execute(&mut *tx)
                    .await?;
                let job = Self::load_resend_job(&mut tx, &id).await?;
                tx.commit().await?;
                job.ok_or_else(|| $crate::StoreError::Inconsistent(format!("resend job {id} is not there after its insert")))
            }

            async fn resend_job(&self, id: &str) -> $crate::Result<Option<$crate::ResendJob>> {
                sqlx::query_as::<_, $crate::rows::ResendJobRow>(&Self::sql($crate::sql::RESEND_JOB))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?
                    .map($crate::ResendJob::try_from)
                    .transpose()
            }

            async fn step_resend_jobs(&self, batch: u32, max_due: u32) -> $crate::Result<u64> {
                // What reads many rows runs on a reader, outside the write lock: which job,
                // whether the dispatcher is behind, and the job's next chunk. A chunk is read
                // by id, newest first, from the cursor down through a window of ids (never
                // below the job's floor), so that however the planner reads it (the filter's
                // index, the primary key) it reads a bounded number of rows; windows with no
                // match are passed over. The write transaction then only resends the chunk
                // by id and moves the cursor, if the cursor is still where the chunk was read
                // from. Each round either returns or moves a cursor down, so the loop ends
                // with the job.
                let window = i64::from(batch.max(1)) * $crate::sql::RESEND_WINDOW_BATCHES;
                loop {
                    let job: Option<$crate::rows::ResendJobRow> = sqlx::query_as(&format!(
                        "SELECT {} FROM hookd_resend_jobs WHERE state = 'running' ORDER BY created_at LIMIT 1",
                        $crate::rows::RESEND_JOB_COLUMNS
                    ))
                    .fetch_optional(self.reader())
                    .await?;
                    let Some(row) = job else { return Ok(0) };
                    let due: i64 = sqlx::query_scalar(&Self::sql($crate::sql::DUE_MANUAL))
                        .bind(max_due as i64)
                        .fetch_one(self.reader())
                        .await?;
                    if due >= max_due as i64 {
                        return Ok(0); // the dispatcher is behind: wait rather than pile up
                    }
                    let (id, cursor, floor) = (row.id.clone(), row.cursor, row.floor_id);
                    let job = $crate::ResendJob::try_from(row)?;
                    let (mut top, mut ids, mut next_cursor) = (cursor, Vec::<i64>::new(), cursor);
                    for _ in 0..$crate::sql::RESEND_WINDOWS_PER_STEP {
                        let low = (top - window + 1).max(floor);
                        let mut q = sqlx::QueryBuilder::<$db>::new("SELECT id FROM hookd_deliveries WHERE id <= ");
                        q.push_bind(top).push(" AND id >= ").push_bind(low);
                        push_filter!(q, &job.filter);
                        q.push(" ORDER BY id DESC LIMIT ").push_bind(batch as i64);
                        ids = q.build_query_scalar::<i64>().fetch_all(self.reader()).await?;
                        next_cursor = match ids.last() {
                            Some(last) if ids.len() >= batch as usize => last - 1,
                            _ => low - 1,
                        };
                        if !ids.is_empty() || next_cursor < floor {
                            break;
                        }
                        top = next_cursor;
                    }
                    let finished = next_cursor < floor;

                    let mut tx = self.begin_write().await?;
                    let current: Option<i64> = sqlx::query_scalar(&format!(
                        "{}{}",
                        Self::sql($crate::sql::RESEND_JOB_CURSOR),
                        Self::SKIP_LOCKED
                    ))
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match current {
                        // Done meanwhile, or another instance is taking a step of it.
                        None => return Ok(0),
                        // Another instance took this step: read the next chunk again.
                        Some(c) if c != cursor => continue,
                        Some(_) => {}
                    }
                    let mut resent = 0;
                    if !ids.is_empty() {
                        let mut update = sqlx::QueryBuilder::<$db>::new(Self::sql($crate::sql::RESEND_SET));
                        update.push("WHERE id IN (");
                        let mut list = update.separated(", ");
                        for id in &ids {
                            list.push_bind(*id);
                        }
                        update.push(")");
                        // Only the state can have changed since the chunk was read.
                        if let Some(state) = job.filter.state {
                            update.push(" AND state = ").push_bind(state.as_str());
                        }
                        resent = update.build().execute(&mut *tx).await?.rows_affected();
                    }
                    sqlx::query(&Self::sql($crate::sql::ADVANCE_RESEND_JOB))
                        .bind(&id)
                        .bind(next_cursor)
                        .bind(resent as i64)
                        .bind(finished)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    if resent > 0 || finished {
                        return Ok(resent);
                    }
                }
            }

            async fn enqueue_event(
                &self,
                event: &$crate::NewEvent,
                limits: &$crate::IngestLimits,
            ) -> $crate::Result<$crate::Enqueued> {
                let mut tx = self.begin_write().await?;
                let targets = Self::targets(&mut tx).await?;
                let incoming = $crate::ingest::Incoming {
                    event_id: event.event_id.as_deref(),
                    event_type: &event.event_type,
                    payload: &event.payload,
                    endpoint_id: event.endpoint_id.as_deref(),
                };
                let (event_id, created) = Self::store_events(&mut tx, &targets, &[incoming], limits, None)
                    .await?
                    .pop()
                    .expect("one event in, one out");
                let deliveries: i64 = sqlx::query_scalar(&Self::sql($crate::sql::COUNT_EVENT_DELIVERIES))
                    .bind(&event_id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::Enqueued { event_id, deliveries: deliveries as u64, created })
            }

            async fn event(&self, event_id: &str) -> $crate::Result<Option<$crate::Event>> {
                Ok(sqlx::query_as::<_, $crate::rows::EventRow>(&Self::sql($crate::sql::EVENT))
                    .bind(event_id)
                    .fetch_optional(self.reader())
                    .await?
                    .map(Into::into))
            }

            async fn complete(&self, batch: &[$crate::Completion]) -> $crate::Result<Vec<bool>> {
                if batch.is_empty() {
                    return Ok(Vec::new());
                }
                let recorded = if batch.iter().any(|c| c.ordered) {
                    // A final result of an ordered endpoint lets its next delivery go, in
                    // the same transaction.
                    let mut tx = self.begin_write().await?;
                    let done = Self::complete_rows(&mut *tx, batch).await?;
                    let recorded = $crate::rows::recorded(batch, &done);
                    for (c, ok) in batch.iter().zip(&recorded) {
                        if *ok && c.ordered {
                            sqlx::query(&Self::sql($crate::sql::PROMOTE_NEXT))
                                .bind(c.delivery_id)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    tx.commit().await?;
                    recorded
                } else {
                    let done = self.complete_unordered(batch).await?;
                    $crate::rows::recorded(batch, &done)
                };
                Ok(recorded)
            }

            async fn release(&self, leases: &[$crate::Lease], how: $crate::Release) -> $crate::Result<u64> {
                let (state, due_now, error) = match &how {
                    $crate::Release::Now => ("pending", true, None),
                    $crate::Release::Park => ("pending", false, None),
                    $crate::Release::Fail(reason) => ("failed", false, Some(reason.as_str())),
                };
                let sql = Self::sql($crate::sql::RELEASE);
                let mut tx = self.begin_write().await?;
                let mut released = 0;
                for lease in leases {
                    let n = sqlx::query(&sql)
                        .bind(lease.delivery_id)
                        .bind(&lease.token)
                        .bind(state)
                        .bind(due_now)
                        .bind(error)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if n == 1 && error.is_some() {
                        // A failed head of an ordered endpoint lets the next one go.
                        sqlx::query(&Self::sql($crate::sql::PROMOTE_NEXT))
                            .bind(lease.delivery_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    released += n;
                }
                tx.commit().await?;
                Ok(released)
            }

            async fn promote_stranded(&self) -> $crate::Result<u64> {
                Ok(sqlx::query(&Self::sql($crate::sql::PROMOTE_STRANDED))
                    .execute(&mut *self.writer().await?)
                    .await?
                    .rows_affected())
            }

            async fn next_due_in_ms(&self) -> $crate::Result<Option<i64>> {
                Ok(sqlx::query_scalar(&Self::sql($crate::sql::NEXT_DUE))
                    .fetch_one(self.reader())
                    .await?)
            }

            async fn deliveries(
                &self,
                filter: &$crate::DeliveryFilter,
                before_id: Option<i64>,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::Delivery>> {
                let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM hookd_deliveries WHERE TRUE",
                    $crate::rows::DELIVERY_COLUMNS
                ));
                push_filter!(q, filter);
                if let Some(before) = before_id {
                    q.push(" AND id < ").push_bind(before);
                }
                q.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64);
                q.build_query_as::<$crate::rows::DeliveryRow>()
                    .fetch_all(self.reader())
                    .await?
                    .into_iter()
                    .map($crate::Delivery::try_from)
                    .collect()
            }

            async fn delivery(&self, id: i64) -> $crate::Result<Option<$crate::Delivery>> {
                sqlx::query_as::<_, $crate::rows::DeliveryRow>(&Self::sql($crate::sql::DELIVERY))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?
                    .map($crate::Delivery::try_from)
                    .transpose()
            }

            async fn attempts(&self, delivery_id: i64) -> $crate::Result<Vec<$crate::AttemptRecord>> {
                sqlx::query_as::<_, $crate::rows::AttemptRow>(&Self::sql($crate::sql::ATTEMPTS))
                    .bind(delivery_id)
                    .fetch_all(self.reader())
                    .await?
                    .into_iter()
                    .map($crate::AttemptRecord::try_from)
                    .collect()
            }

            async fn resend(&self, id: i64) -> $crate::Result<bool> {
                let mut q = sqlx::QueryBuilder::<$db>::new(Self::sql($crate::sql::RESEND_SET));
                q.push("WHERE id = ").push_bind(id);
                Ok(q.build().execute(&mut *self.writer().await?).await?.rows_affected() == 1)
            }



            async fn backlog(&self) -> $crate::Result<$crate::Backlog> {
                let (unfinished, outbox, oldest): (i64, i64, Option<i64>) =
                    sqlx::query_as(&Self::sql($crate::sql::BACKLOG))
                        .fetch_one(self.reader())
                        .await?;
                Ok($crate::Backlog {
                    unfinished: unfinished + outbox,
                    outbox,
                    oldest_due_age_ms: oldest.unwrap_or(0).max(0),
                })
            }
        }

        impl $store {
            /// Why a conditional write of an endpoint changed no row: no such live endpoint,
            /// or it no longer has the version named.
            async fn unwritten<T>(tx: &mut WriteTx, id: &str) -> $crate::Result<$crate::Versioned<T>> {
                let live: bool = sqlx::query_scalar(&Self::sql($crate::sql::ENDPOINT_LIVE))
                    .bind(id)
                    .fetch_one(&mut **tx)
                    .await?;
                Ok(if live { $crate::Versioned::Changed } else { $crate::Versioned::NotFound })
            }

            async fn endpoint_any<'e, E>(&self, executor: E, id: &str) -> $crate::Result<Option<$crate::Endpoint>>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let sql = format!(
                    "SELECT {} FROM hookd_endpoints WHERE id = $1",
                    $crate::rows::ENDPOINT_COLUMNS
                );
                sqlx::query_as::<_, $crate::rows::EndpointRow>(&sql)
                    .bind(id)
                    .fetch_optional(executor)
                    .await?
                    .map(|row| Ok($crate::open_endpoint(self.sealer(), $crate::Endpoint::try_from(row)?)))
                    .transpose()
            }

            async fn load_resend_job(
                tx: &mut WriteTx,
                id: &str,
            ) -> $crate::Result<Option<$crate::ResendJob>> {
                sqlx::query_as::<_, $crate::rows::ResendJobRow>(&Self::sql($crate::sql::RESEND_JOB))
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map($crate::ResendJob::try_from)
                    .transpose()
            }

            /// Endpoints by id, deleted ones included (a claimed delivery of a deleted endpoint
            /// must be failed, not dropped).
            async fn endpoints_by_id(
                &self,
                ids: impl Iterator<Item = &str>,
            ) -> $crate::Result<std::collections::HashMap<String, std::sync::Arc<$crate::Endpoint>>> {
                let ids: std::collections::BTreeSet<&str> = ids.collect();
                let mut found = std::collections::HashMap::new();
                if ids.is_empty() {
                    return Ok(found);
                }
                let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM hookd_endpoints WHERE id IN (",
                    $crate::rows::ENDPOINT_COLUMNS
                ));
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(id.to_string());
                }
                q.push(")");
                for row in q.build_query_as::<$crate::rows::EndpointRow>().fetch_all(self.reader()).await? {
                    let e = $crate::open_endpoint(self.sealer(), $crate::Endpoint::try_from(row)?);
                    found.insert(e.id.clone(), std::sync::Arc::new(e));
                }
                Ok(found)
            }

            /// Joins claimed rows with their endpoints. If that fails, the rows are handed back
            /// (due now, the claim undone) before the error is returned: a claim that cannot be
            /// completed must not leave leases to expire and charge a lost attempt.
            async fn with_endpoints(
                &self,
                rows: Vec<$crate::rows::ClaimRow>,
            ) -> $crate::Result<Vec<$crate::Claimed>> {
                let leases: Vec<$crate::Lease> = rows
                    .iter()
                    .map(|r| $crate::Lease { delivery_id: r.id, token: r.lease_token.clone() })
                    .collect();
                match self.join_endpoints(rows).await {
                    Ok(claimed) => Ok(claimed),
                    Err(e) => {
                        if let Err(undo) = $crate::Store::release(self, &leases, $crate::Release::Now).await {
                            tracing::warn!(error = %undo, "cannot hand back a claim that failed");
                        }
                        Err(e)
                    }
                }
            }

            /// What an ingest of `rows` outbox rows did, its leased deliveries joined with
            /// their endpoints (handed back if that fails: see `with_endpoints`).
            async fn ingested(
                &self,
                rows: usize,
                more: bool,
                leasing: Option<$crate::ingest::Leasing<'_>>,
            ) -> $crate::Result<$crate::Ingested> {
                let (claimed, due, blocked) = match leasing {
                    Some(l) if !l.rows.is_empty() => {
                        (self.with_endpoints(l.rows).await?, l.due, l.blocked)
                    }
                    Some(l) => (Vec::new(), l.due, l.blocked),
                    // Not counted without a lease: due as far as anyone knows.
                    None => (Vec::new(), rows > 0, false),
                };
                Ok($crate::Ingested { rows: rows as u64, claimed, due, more, blocked })
            }

            async fn join_endpoints(
                &self,
                rows: Vec<$crate::rows::ClaimRow>,
            ) -> $crate::Result<Vec<$crate::Claimed>> {
                let endpoints = self.endpoints_by_id(rows.iter().map(|r| r.endpoint_id.as_str())).await?;
                rows.into_iter()
                    .map(|r| {
                        let endpoint = endpoints.get(&r.endpoint_id).cloned().ok_or_else(|| {
                            $crate::StoreError::Inconsistent(format!("delivery {} names endpoint {}, which is not there", r.id, r.endpoint_id))
                        })?;
                        r.into_claimed(endpoint)
                    })
                    .collect()
            }

            /// The endpoints fan-out chooses among.
            async fn targets(
                tx: &mut WriteTx,
            ) -> $crate::Result<Vec<$crate::matching::Target>> {
                sqlx::query_as::<_, $crate::rows::TargetRow>(&Self::sql($crate::sql::TARGETS))
                    .fetch_all(&mut **tx)
                    .await?
                    .into_iter()
                    .map($crate::matching::Target::try_from)
                    .collect()
            }

            /// Stores events and their deliveries inside `tx`, in three statements whatever
            /// the number of events (plus two per ordered endpoint, and one when some are
            /// leased). Returns, per event, its id and whether it was new; a repeated id (in
            /// the database or earlier in `events`) creates nothing. With `leasing`, the new
            /// deliveries due now are created leased while it has room.
            async fn store_events(
                tx: &mut WriteTx,
                targets: &[$crate::matching::Target],
                events: &[$crate::ingest::Incoming<'_>],
                limits: &$crate::IngestLimits,
                mut leasing: Option<&mut $crate::ingest::Leasing<'_>>,
            ) -> $crate::Result<Vec<(String, bool)>> {
                let token = leasing.as_ref().map(|l| l.token.clone());
                let lease_ms = leasing.as_ref().map(|l| l.lease_ms);
                let mut leased = 0;
                let prepared = $crate::ingest::prepare(events, limits);
                let new_ids: std::collections::HashSet<String> = if prepared.rows.is_empty() {
                    Default::default()
                } else {
                    Self::insert_events(tx, &prepared.rows).await?.into_iter().collect()
                };
                let mut deliveries = Vec::new();
                // Ordered endpoints: whether each already has a delivery to finish, asked once
                // per batch; within the batch, every delivery after the first waits.
                let mut busy: std::collections::HashMap<String, bool> = Default::default();
                for row in prepared.rows.iter().filter(|r| new_ids.contains(&r.event_id)) {
                    let state = if row.payload_error.is_some() { "failed" } else { "pending" };
                    let planned = $crate::matching::plan(row.event_type, row.endpoint_id, targets);
                    if planned.is_empty() {
                        if let Some(missing) = row.endpoint_id {
                            tracing::warn!(event_id = %row.event_id, endpoint_id = missing, "event names an endpoint that does not exist; nothing to deliver");
                        }
                    }
                    for planned in planned {
                        let held = if planned.ordered && state == "pending" {
                            let before = match busy.get(&planned.endpoint_id) {
                                Some(b) => *b,
                                None => {
                                    if let Some(lock) = Self::LOCK_ENDPOINT {
                                        // Serialises ingestion per ordered endpoint across instances.
                                        sqlx::query(lock).bind(&planned.endpoint_id).execute(&mut **tx).await?;
                                    }
                                    sqlx::query_scalar::<_, bool>(&Self::sql($crate::sql::HAS_UNFINISHED))
                                        .bind(&planned.endpoint_id)
                                        .fetch_one(&mut **tx)
                                        .await?
                                }
                            };
                            busy.insert(planned.endpoint_id.clone(), true);
                            before
                        } else {
                            false
                        };
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
                        deliveries.push($crate::ingest::NewDelivery {
                            ord: deliveries.len(),
                            event_id: &row.event_id,
                            endpoint_id: planned.endpoint_id,
                            event_type: row.event_type,
                            state,
                            parked: planned.parked,
                            held,
                            error: row.payload_error.as_deref(),
                            lease_token: if lease { token.as_deref() } else { None },
                            lease_ms: if lease { lease_ms } else { None },
                        });
                    }
                }
                if leased > 0 {
                    // Leased ones first: an ordered endpoint's leased delivery is its first
                    // in this batch, the rest wait behind it, so ids keep arrival order.
                    let (taken, rest): (Vec<_>, Vec<_>) =
                        deliveries.into_iter().partition(|d| d.lease_token.is_some());
                    let created = Self::insert_leased_deliveries(tx, &taken).await?;
                    if !rest.is_empty() {
                        Self::insert_deliveries(tx, &rest).await?;
                    }
                    let events: std::collections::HashMap<&str, &$crate::ingest::PreparedEvent<'_>> =
                        prepared.rows.iter().map(|r| (r.event_id.as_str(), r)).collect();
                    let leasing = leasing.expect("leased");
                    for (id, event_id, endpoint_id) in created {
                        let event = events.get(event_id.as_str()).ok_or_else(|| {
                            $crate::StoreError::Inconsistent(format!("new delivery {id} names event {event_id}, which the batch does not have"))
                        })?;
                        leasing.rows.push($crate::rows::ClaimRow {
                            id,
                            lease_token: leasing.token.clone(),
                            event_type: event.event_type.to_string(),
                            event_id,
                            endpoint_id,
                            attempts: 1,
                            next_trigger: "auto".to_string(),
                            auto_attempts: 1,
                            manual_only: false,
                            next_attempt_at: None,
                            payload: event.payload.to_string(),
                            payload_error: None,
                        });
                    }
                    // RETURNING gives no order: due order is creation order.
                    leasing.rows.sort_by_key(|r| r.id);
                } else if !deliveries.is_empty() {
                    Self::insert_deliveries(tx, &deliveries).await?;
                }
                Ok(prepared
                    .outcome
                    .into_iter()
                    .map(|(id, first)| {
                        let created = first && new_ids.contains(&id);
                        (id, created)
                    })
                    .collect())
            }
        }
    };
}

/// Appends the delivery-log filter as `AND ...` clauses with bound values.
macro_rules! push_filter {
    ($q:ident, $filter:expr) => {{
        let f: &$crate::DeliveryFilter = $filter;
        if let Some(state) = f.state {
            $q.push(" AND state = ").push_bind(state.as_str());
            if matches!(
                state,
                $crate::DeliveryState::Succeeded | $crate::DeliveryState::Failed
            ) {
                // The partial index of finished rows applies; SQLite only sees that when
                // its predicate is spelled out.
                $q.push(" AND state IN ('succeeded', 'failed')");
            }
        }
        if let Some(endpoint_id) = &f.endpoint_id {
            $q.push(" AND endpoint_id = ")
                .push_bind(endpoint_id.clone());
        }
        if let Some(event_id) = &f.event_id {
            $q.push(" AND event_id = ").push_bind(event_id.clone());
        }
        if let Some(event_type) = &f.event_type {
            $q.push(" AND event_type = ").push_bind(event_type.clone());
        }
        if let Some(since) = f.since {
            $q.push(" AND created_at >= ").push_bind(since);
        }
        if let Some(until) = f.until {
            $q.push(" AND created_at < ").push_bind(until);
        }
    }};
}

pub(crate) use push_filter;
pub(crate) use store_impl;
