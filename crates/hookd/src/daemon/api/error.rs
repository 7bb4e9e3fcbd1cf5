//! API errors and their HTTP form: `{"error": {"code": "...", "message": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use hookd_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON.
    #[error("{0}")]
    MalformedJson(String),
    /// 401: missing or wrong admin token.
    #[error("missing or wrong admin token: send Authorization: Bearer <HOOKD_ADMIN_TOKEN>")]
    Unauthorized,
    /// 403: a web page of another origin sent the request.
    #[error("the tenant token is unknown, expired or revoked: ask for a new link")]
    TenantTokenInvalid,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    ForeignOrigin(String),
    /// 421: the `Host` is not one this server answers to.
    #[error("{0}")]
    MisdirectedRequest(String),
    /// 415: a body not labelled `Content-Type: application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 405: the path exists, the method does not.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` names a version the resource no longer has.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: the body is over the size limit.
    #[error("{0}")]
    TooLarge(String),
    /// 422: well-formed, but a field is invalid.
    #[error("{0}")]
    Invalid(String),
    /// 500/503: the database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `{"error": {"code": "...", "message": "..."}}`, the shape of every error.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// malformed_json, unauthorized, foreign_origin, misdirected_request,
    /// unsupported_media_type, not_found, method_not_allowed, conflict, precondition_failed,
    /// payload_too_large, invalid_request, database_unavailable, internal_error.
    code: String,
    message: String,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Invalid(message.into())
    }

    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::NotFound(format!("no {what} with id {id:?}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::TenantTokenInvalid => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::ForeignOrigin(_) => (StatusCode::FORBIDDEN, "foreign_origin"),
            ApiError::MisdirectedRequest(_) => {
                (StatusCode::MISDIRECTED_REQUEST, "misdirected_request")
            }
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PreconditionFailed(_) => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed")
            }
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::Store(e) if e.is_transient() => {
                (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
            }
            ApiError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        let message = match &self {
            ApiError::Store(e) => {
                tracing::error!(error = %e, "API request failed in the database");
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "the database is unavailable; try again".to_string()
                } else {
                    "internal error; see hookd's log".to_string()
                }
            }
            other => other.to_string(),
        };
        let body = json!({ "error": { "code": code, "message": message } });
        (status, Json(body)).into_response()
    }
}
