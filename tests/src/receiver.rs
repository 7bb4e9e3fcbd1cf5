//! How the suite's receivers answer. The receiver itself is [`hookd_testkit::Receiver`],
//! started with [`Receiver::per_event`](hookd_testkit::Receiver::per_event): it counts, per
//! `webhook-id`, every request and every 2xx it answered, which is what the [`audit`]
//! (crate::audit) compares with the database.

use hookd_testkit::Reply;

use crate::event_number;

/// The suite's usual mix, by the number at the end of the event id:
/// - every 50th (n % 50 == 7) is "poison": 500 on every attempt, so it ends `failed`
///   after the full schedule;
/// - every 10th (n % 10 == 3) is "flaky": 503 on its first request, then 200 (a retry);
/// - the rest: 200.
pub fn standard_mix(id: &str, request: u32) -> Reply {
    let n = event_number(id);
    if n % 50 == 7 {
        Reply::status(500)
    } else if n % 10 == 3 && request == 1 {
        Reply::status(503)
    } else {
        Reply::ok()
    }
}

/// Whether [`standard_mix`] fails every attempt of this event.
pub fn is_poison(id: &str) -> bool {
    event_number(id) % 50 == 7
}
