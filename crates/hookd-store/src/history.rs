//! Retention of PostgreSQL's partitioned history: which day partitions to drop whole, and
//! which rows are still deleted one by one. Pure; `postgres.rs` reads the facts and does
//! what this decides.
//!
//! The layout (migration 0018): finished deliveries live in one partition per day of their
//! id (the ids of day `d` start at `d * 2^32`), attempts likewise by their delivery's id;
//! unfinished deliveries live apart, in the backlog. The tables from before the layout are
//! the partition `before`, below the first day.

/// A partition of the finished history and its attempts, as `hookd_history_partitions()`
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Partition {
    /// The deliveries' table (`hookd_deliveries_p20261207`, `hookd_deliveries_before`).
    pub name: String,
    /// Its attempts' table.
    pub attempts: String,
    /// Its ids, `lo` to `hi` (exclusive); `lo` `None`: from the lowest.
    pub lo: Option<i64>,
    pub hi: i64,
    /// Attached to the history (`false`: a drop detached it and stopped there).
    pub attached: bool,
    /// A detach of it was interrupted: it must be finished before anything else.
    pub detach_pending: bool,
    /// Some delivery of its range is in the backlog (resent): it finishes back into it.
    pub resent: bool,
    /// Its newest `finished_at`; `None` when it is empty.
    pub newest_finish: Option<i64>,
    /// PostgreSQL's estimate of its rows; -1 until one is made (a vacuum, an analyze).
    pub rows: i64,
}

/// What retention does with a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing: it is still written to, or holds rows retention keeps.
    Keep,
    /// Detach it, look again, and drop it with its attempts unless it changed meanwhile.
    Drop,
    /// It was detached by a drop that stopped before it looked again, and must not go:
    /// attach it again.
    Reattach,
}

/// What to do with `p`, when rows that finished before `cutoff` may go and the next
/// delivery id is `next_id`. A partition that can still receive new rows (today's, the
/// days ahead) is kept whatever it holds; one with a delivery in the backlog is kept so that
/// the delivery can finish back into it.
pub(crate) fn action(p: &Partition, cutoff: i64, next_id: i64) -> Action {
    let expired = p.hi <= next_id && !p.resent && p.newest_finish.is_none_or(|t| t < cutoff);
    match (expired, p.attached && !p.detach_pending) {
        (true, _) => Action::Drop,
        (false, true) => Action::Keep,
        (false, false) => Action::Reattach,
    }
}

/// The ids below which finished deliveries are still deleted row by row: those of the
/// tables from before the layout, so that they age out as they always did; `None` when
/// that partition is gone.
pub(crate) fn rows_purged_below(partitions: &[Partition]) -> Option<i64> {
    partitions
        .iter()
        .find(|p| p.lo.is_none() && p.attached && !p.detach_pending)
        .map(|p| p.hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    /// The ids of one day (`hookd_day_first_id` in the migration).
    const DAY_IDS: i64 = 1 << 32;
    /// 2026-12-07, as days since the Unix epoch.
    const TODAY: i64 = 20_794;

    fn day(d: i64) -> Partition {
        Partition {
            name: format!("hookd_deliveries_d{d}"),
            attempts: format!("hookd_attempts_d{d}"),
            lo: Some(d * DAY_IDS),
            hi: (d + 1) * DAY_IDS,
            attached: true,
            detach_pending: false,
            resent: false,
            newest_finish: Some(d * DAY + DAY / 2),
            rows: 10,
        }
    }

    #[test]
    fn a_partition_goes_once_it_is_closed_and_all_it_holds_is_past_the_cutoff() {
        let next_id = TODAY * DAY_IDS + 5;
        let cutoff = (TODAY - 30) * DAY;
        let old = TODAY - 31;
        let cases: &[(&str, Partition, Action)] = &[
            ("old, finished long ago", day(old), Action::Drop),
            (
                "old, but one row finished after the cutoff",
                Partition {
                    newest_finish: Some(cutoff),
                    ..day(old)
                },
                Action::Keep,
            ),
            (
                "old, one delivery resent",
                Partition {
                    resent: true,
                    ..day(old)
                },
                Action::Keep,
            ),
            (
                "old and empty",
                Partition {
                    newest_finish: None,
                    rows: 0,
                    ..day(old)
                },
                Action::Drop,
            ),
            (
                "today's, empty: still written to",
                Partition {
                    newest_finish: None,
                    ..day(TODAY)
                },
                Action::Keep,
            ),
            (
                "tomorrow's",
                Partition {
                    newest_finish: None,
                    ..day(TODAY + 1)
                },
                Action::Keep,
            ),
            (
                "detached by a drop that stopped, still expired",
                Partition {
                    attached: false,
                    ..day(old)
                },
                Action::Drop,
            ),
            (
                "detached by a drop that stopped, resent meanwhile",
                Partition {
                    attached: false,
                    resent: true,
                    ..day(old)
                },
                Action::Reattach,
            ),
            (
                "its detach interrupted, finished after the cutoff",
                Partition {
                    detach_pending: true,
                    newest_finish: Some(cutoff + 1),
                    ..day(old)
                },
                Action::Reattach,
            ),
            (
                "the tables from before, below today",
                Partition {
                    lo: None,
                    hi: (TODAY - 40) * DAY_IDS,
                    newest_finish: Some(cutoff - 1),
                    ..day(old)
                },
                Action::Drop,
            ),
        ];
        for (what, p, expected) in cases {
            assert_eq!(action(p, cutoff, next_id), *expected, "{what}");
        }
        // With an hour's retention, yesterday's partition goes an hour after its last
        // delivery finished, not before.
        let yesterday = day(TODAY - 1);
        let last = yesterday.newest_finish.unwrap();
        assert_eq!(action(&yesterday, last, next_id), Action::Keep);
        assert_eq!(action(&yesterday, last + 1, next_id), Action::Drop);
    }

    #[test]
    fn rows_are_deleted_one_by_one_only_below_the_first_day() {
        let before = Partition {
            name: "hookd_deliveries_before".into(),
            lo: None,
            hi: TODAY * DAY_IDS,
            ..day(TODAY)
        };
        assert_eq!(
            rows_purged_below(&[day(TODAY), before.clone(), day(TODAY + 1)]),
            Some(TODAY * DAY_IDS)
        );
        assert_eq!(rows_purged_below(&[day(TODAY), day(TODAY + 1)]), None);
        let detached = Partition {
            attached: false,
            ..before
        };
        assert_eq!(rows_purged_below(&[detached, day(TODAY)]), None);
    }
}
