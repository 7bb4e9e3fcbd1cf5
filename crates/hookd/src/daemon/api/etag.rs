//! Entity tags of endpoints: `ETag: "v<version>"` on every answer that carries one endpoint,
//! and `If-Match` on the calls that change one, so that a change made from a stale read is
//! refused (`412`) instead of overwriting someone else's.
//!
//! The version is compared by the store in the statement that writes (see
//! `Store::update_endpoint_if`): checking it here first only gives an early, clearer answer.

use axum::http::header::{HeaderName, ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue};

use super::error::ApiError;

/// Tries of a change without `If-Match` whose endpoint changed between its read and its
/// write: each try reads the endpoint again and applies the change to what it finds.
pub const MAX_TRIES: u32 = 5;

/// The `ETag` header of an endpoint at `version`: strong, `"v3"`.
pub fn header(version: i64) -> [(HeaderName, HeaderValue); 1] {
    let value = HeaderValue::from_str(&format!("\"v{version}\"")).expect("an ASCII tag");
    [(ETAG, value)]
}

/// What a request's `If-Match` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match`, or `*`: whatever the endpoint's version.
    Any,
    /// One of these versions. Weak and foreign tags match none (`If-Match` compares
    /// strongly), so the list may be empty.
    Versions(Vec<i64>),
}

impl IfMatch {
    pub fn from_headers(headers: &HeaderMap) -> IfMatch {
        let mut values = headers.get_all(IF_MATCH).iter().peekable();
        if values.peek().is_none() {
            return IfMatch::Any;
        }
        // A value that is not text names no tag of ours.
        parse(values.map(|v| v.to_str().unwrap_or("")))
    }

    /// The version to write against, when the endpoint is at `current`; `412` when the
    /// request names other versions only.
    pub fn check(&self, id: &str, current: i64) -> Result<i64, ApiError> {
        match self {
            IfMatch::Versions(versions) if !versions.contains(&current) => {
                Err(changed(id, Some(current)))
            }
            _ => Ok(current),
        }
    }

    /// After the store found the endpoint changed since this try read it: `Ok` to try
    /// again (no `If-Match`, tries left), else the error to answer.
    pub fn retry(&self, id: &str, tries: u32) -> Result<(), ApiError> {
        match self {
            IfMatch::Versions(_) => Err(changed(id, None)),
            IfMatch::Any if tries < MAX_TRIES => Ok(()),
            IfMatch::Any => Err(ApiError::Conflict(format!(
                "endpoint {id:?} kept changing while this change was being applied; try again"
            ))),
        }
    }
}

/// `412`: the endpoint is no longer at a version the request named (now at `current`, when
/// known).
pub fn changed(id: &str, current: Option<i64>) -> ApiError {
    let now = match current {
        Some(v) => format!(" (its ETag is now \"v{v}\")"),
        None => String::new(),
    };
    ApiError::PreconditionFailed(format!(
        "endpoint {id:?} changed since it was read{now}: read it again, then retry with its new ETag in If-Match"
    ))
}

/// `If-Match` values: `*`, or a list of entity tags (`"v3", W/"v2"`). Parsing stops at
/// anything else: what follows names no tag.
fn parse<'a>(values: impl Iterator<Item = &'a str>) -> IfMatch {
    let mut versions = Vec::new();
    for value in values {
        let mut rest = value;
        loop {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix('*') {
                if after.trim_start().is_empty() || after.trim_start().starts_with(',') {
                    return IfMatch::Any;
                }
                break;
            }
            let (weak, tagged) = match rest.strip_prefix("W/") {
                Some(tagged) => (true, tagged),
                None => (false, rest),
            };
            let Some(quoted) = tagged.strip_prefix('"') else {
                break;
            };
            let Some(end) = quoted.find('"') else {
                break;
            };
            let opaque = &quoted[..end];
            rest = &quoted[end + 1..];
            if weak {
                continue;
            }
            let version = opaque
                .strip_prefix('v')
                .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<i64>().ok());
            if let Some(v) = version {
                versions.push(v);
            }
        }
    }
    IfMatch::Versions(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_values() {
        let cases: &[(&[&str], IfMatch)] = &[
            (&["*"], IfMatch::Any),
            (&[" * "], IfMatch::Any),
            (&["\"v3\""], IfMatch::Versions(vec![3])),
            (&["\"v3\", \"v12\""], IfMatch::Versions(vec![3, 12])),
            (&["\"v3\"", "\"v4\""], IfMatch::Versions(vec![3, 4])),
            (&["\"v3\",\"v4\""], IfMatch::Versions(vec![3, 4])),
            // Weak tags never match If-Match (strong comparison).
            (&["W/\"v3\""], IfMatch::Versions(vec![])),
            (&["W/\"v3\", \"v4\""], IfMatch::Versions(vec![4])),
            // Tags that are not ours, and malformed values, name nothing.
            (&["\"3\""], IfMatch::Versions(vec![])),
            (&["\"v\""], IfMatch::Versions(vec![])),
            (&["\"v-1\""], IfMatch::Versions(vec![])),
            (&["\"v99999999999999999999\""], IfMatch::Versions(vec![])),
            (&["v3"], IfMatch::Versions(vec![])),
            (&["\"v3"], IfMatch::Versions(vec![])),
            (&["\"v3\" junk \"v4\""], IfMatch::Versions(vec![3])),
            (&["*x"], IfMatch::Versions(vec![])),
            (&[""], IfMatch::Versions(vec![])),
        ];
        for (values, want) in cases {
            assert_eq!(&parse(values.iter().copied()), want, "{values:?}");
        }
    }

    #[test]
    fn headers_to_conditions() {
        let mut headers = HeaderMap::new();
        assert_eq!(IfMatch::from_headers(&headers), IfMatch::Any);
        headers.append(IF_MATCH, HeaderValue::from_static("\"v2\""));
        headers.append(IF_MATCH, HeaderValue::from_static("\"v5\""));
        assert_eq!(
            IfMatch::from_headers(&headers),
            IfMatch::Versions(vec![2, 5])
        );
        let mut bytes = HeaderMap::new();
        bytes.insert(IF_MATCH, HeaderValue::from_bytes(b"\"v\xff\"").unwrap());
        assert_eq!(IfMatch::from_headers(&bytes), IfMatch::Versions(vec![]));
    }

    #[test]
    fn checks_and_retries() {
        let any = IfMatch::Any;
        let two = IfMatch::Versions(vec![2]);
        assert_eq!(any.check("ep_1", 7).unwrap(), 7);
        assert_eq!(two.check("ep_1", 2).unwrap(), 2);
        assert!(matches!(
            two.check("ep_1", 3),
            Err(ApiError::PreconditionFailed(m)) if m.contains("\"v3\"")
        ));
        assert!(any.retry("ep_1", 1).is_ok());
        assert!(matches!(
            any.retry("ep_1", MAX_TRIES),
            Err(ApiError::Conflict(_))
        ));
        assert!(matches!(
            two.retry("ep_1", 1),
            Err(ApiError::PreconditionFailed(_))
        ));
        assert_eq!(header(3)[0].1, "\"v3\"");
    }
}
