//! Request bodies: JSON that is not JSON is a 400, JSON of the wrong shape a 422, a body
//! over the limit a 413, always in the API's error format. The `Content-Type` label is
//! checked before the handlers run (`browser`: a body not labelled JSON is a 415).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::error::ApiError;

/// A JSON body, parsed.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge("request body is over the size limit".into())
            } else {
                ApiError::MalformedJson(format!("cannot read the request body: {e}"))
            }
        })?;
        parse(&bytes).map(Body)
    }
}

/// Parses a JSON body: not JSON at all is a 400, JSON of the wrong shape a 422.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first: a typed parse can stop at an unknown field before it reaches the
    // syntax error, and the answer must not depend on the order of the fields.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ApiError::MalformedJson(format!("request body is not valid JSON: {e}")))?;
    serde_json::from_slice(bytes).map_err(|e| ApiError::Invalid(e.to_string()))
}

/// For PATCH fields where `null` (clear) differs from absent (keep): use with
/// `#[serde(default, deserialize_with = "nullable")]` on an `Option<Option<T>>`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The payload as JSON when it is JSON, else as a JSON string.
pub fn raw_payload(payload: String) -> Box<RawValue> {
    RawValue::from_string(payload.clone()).unwrap_or_else(|_| {
        RawValue::from_string(serde_json::to_string(&payload).expect("strings serialize"))
            .expect("a JSON string is JSON")
    })
}
