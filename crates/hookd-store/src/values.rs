//! SQLite's batch statements read their rows as bound `VALUES`, not as one JSON array.
//!
//! SQLite's JSON functions turn each element of an array back into text and parse it again
//! for every column read from it (`value ->> 'column'`): at saturation that was a quarter
//! of the writer's time. A bound value costs nothing to read. A statement's text depends on
//! its number of rows, so a chunk of rows is padded with rows of NULLs to the next power of
//! two ([`SIZES`] texts per statement, each prepared once per connection) and the rows `v`
//! that the statement reads leave the padding out. A batch larger than [`MAX_ROWS`] is
//! written in chunks of that many (the statement limit is 32,766 bound values).

use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::{Arguments, Encode, Type};

/// Rows per statement at most: 512 results of 12 columns are 6,144 bound values.
pub(crate) const MAX_ROWS: usize = 512;
/// Padded sizes 1, 2, 4, ..., [`MAX_ROWS`].
pub(crate) const SIZES: usize = MAX_ROWS.trailing_zeros() as usize + 1;

/// A row of a batch statement. PostgreSQL reads its JSON object by name; SQLite binds its
/// values by position, in the order of the statement's columns, which is the order of its
/// fields (a unit test per row type holds the two to each other).
pub(crate) trait Row: serde::Serialize {
    fn add_to<'q>(&'q self, args: &mut Values<'q>);
}

/// The arguments of one chunk, filled row by row.
pub(crate) struct Values<'q>(SqliteArguments<'q>);

impl<'q> Values<'q> {
    pub(crate) fn add<T: Encode<'q, Sqlite> + Type<Sqlite> + 'q>(&mut self, value: T) -> &mut Self {
        self.0
            .add(value)
            .expect("integers, text and booleans always bind");
        self
    }
}

/// Index into [`SIZES`] and the padded number of rows for a chunk of `rows` (1 to
/// [`MAX_ROWS`]).
pub(crate) fn padded(rows: usize) -> (usize, usize) {
    assert!(
        (1..=MAX_ROWS).contains(&rows),
        "a chunk has 1 to {MAX_ROWS} rows, not {rows}"
    );
    let padded = rows.next_power_of_two();
    (padded.trailing_zeros() as usize, padded)
}

/// `WITH p(columns) AS (VALUES (?, ...), ...), v AS (...) `: `padded` rows of bound values,
/// of which `v` keeps those whose first column is set (padding is all NULL).
pub(crate) fn rows_cte(names: &[&str], padded: usize) -> String {
    let first = names.first().expect("a batch has columns");
    let row = format!("({})", vec!["?"; names.len()].join(", "));
    format!(
        "WITH p({}) AS (VALUES {}), v AS (SELECT * FROM p WHERE {first} IS NOT NULL) ",
        names.join(", "),
        vec![row.as_str(); padded].join(", ")
    )
}

/// The arguments for `rows` (1 to [`MAX_ROWS`] of them), padded with NULLs to the size
/// [`crate::sql::Batch::sqlite`] chose for the same number of rows.
pub(crate) fn bind<'q, R: Row>(rows: &'q [R], width: usize) -> SqliteArguments<'q> {
    let (_, padded) = padded(rows.len());
    let mut values = Values(SqliteArguments::default());
    for row in rows {
        row.add_to(&mut values);
    }
    for _ in 0..(padded - rows.len()) * width {
        values.add(None::<i64>);
    }
    values.0
}

/// The names of `row`'s JSON object in order: what [`Row::add_to`] must follow.
#[cfg(test)]
pub(crate) fn json_names(row: &impl serde::Serialize) -> Vec<String> {
    let text = serde_json::to_string(row).expect("rows serialize");
    // serde_json writes a struct's fields in declaration order; a Map would sort them, so
    // read the keys from the text itself.
    let mut names = Vec::new();
    let mut de = serde_json::Deserializer::from_str(&text);
    struct Keys<'a>(&'a mut Vec<String>);
    impl<'de> serde::de::Visitor<'de> for Keys<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                self.0.push(k);
            }
            Ok(())
        }
    }
    serde::Deserializer::deserialize_map(&mut de, Keys(&mut names)).expect("an object");
    names
}

/// How many values `row` binds.
#[cfg(test)]
pub(crate) fn width(row: &impl Row) -> usize {
    let mut values = Values(SqliteArguments::default());
    row.add_to(&mut values);
    sqlx::Arguments::len(&values.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_pad_to_a_power_of_two() {
        let cases = [
            (1, 0, 1),
            (2, 1, 2),
            (3, 2, 4),
            (4, 2, 4),
            (5, 3, 8),
            (129, 8, 256),
            (500, 9, 512),
            (512, 9, 512),
        ];
        for (rows, size, padded_rows) in cases {
            assert_eq!(padded(rows), (size, padded_rows), "{rows} rows");
        }
        assert_eq!(SIZES, 10);
    }

    #[test]
    #[should_panic(expected = "a chunk has 1 to 512 rows")]
    fn a_chunk_is_never_empty() {
        padded(0);
    }

    /// SQLite binds by position what PostgreSQL reads by name: every row type binds its
    /// fields in the order of its statement's columns, and binds all of them.
    #[test]
    fn rows_bind_in_the_order_of_their_columns() {
        use crate::ingest::{NewDelivery, PreparedEvent};
        use crate::sql::{
            Batch, COMPLETION_COLUMNS, INSERT_DELIVERIES, INSERT_EVENTS, INSERT_LEASED_DELIVERIES,
            INSERT_NEW_EVENTS,
        };

        fn check<R: Row>(row: &R, batch: &'static Batch) {
            let columns: Vec<&str> = batch.columns().collect();
            assert_eq!(json_names(row), columns);
            assert_eq!(width(row), columns.len());
        }
        let event = PreparedEvent {
            event_id: "evt_1".into(),
            event_type: "purchase",
            payload: "{}",
            endpoint_id: None,
            tenant_id: Some("t1"),
            payload_error: None,
            given_tenant: Some("t1"),
            traceparent: None,
        };
        check(&event, &INSERT_EVENTS);
        check(&event, &INSERT_NEW_EVENTS);
        let delivery = NewDelivery {
            ord: 0,
            event_id: "evt_1",
            endpoint_id: "ep_1".into(),
            event_type: "purchase",
            tenant_id: None,
            state: "pending",
            parked: false,
            held: false,
            error: None,
            lease_token: Some("t"),
            lease_ms: Some(60_000),
        };
        check(&delivery, &INSERT_DELIVERIES);
        check(&delivery, &INSERT_LEASED_DELIVERIES);
        static COMPLETION: Batch = Batch::new(COMPLETION_COLUMNS, "");
        let completion = crate::Completion {
            delivery_id: 1,
            lease_token: "t".into(),
            endpoint_id: "ep_1".into(),
            ordered: false,
            record: crate::AttemptRecord {
                attempt: 1,
                trigger: crate::Trigger::Auto,
                started_at: 0,
                duration_ms: 1,
                status_code: Some(200),
                outcome: crate::Outcome::Success,
                error: None,
                response_body: None,
            },
            next: crate::Next::Succeeded,
        };
        let rows = crate::rows::completion_rows(std::slice::from_ref(&completion));
        check(&rows[0], &COMPLETION);
    }

    #[test]
    fn the_rows_cte_names_every_column_and_drops_padding() {
        let cte = rows_cte(&["id", "name"], 2);
        assert_eq!(
            cte,
            "WITH p(id, name) AS (VALUES (?, ?), (?, ?)), \
             v AS (SELECT * FROM p WHERE id IS NOT NULL) "
        );
    }
}
