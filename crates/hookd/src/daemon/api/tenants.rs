//! `/v1/tenants/{tenant_id}/tokens`: the admin creates a tenant's portal token, shown once,
//! and revokes all of a tenant's tokens at once. Admin only.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header::HOST;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use hookd_store::TenantId;

use super::error::{ApiError, ErrorBody};
use super::scope::AdminOnly;
use super::time::rfc3339;
use super::AppState;
use crate::daemon::tenant_tokens;
use crate::duration;

const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(24 * 3600);
/// A portal link is handed to people: it should not live for ever.
const MAX_EXPIRES_IN: Duration = Duration::from_secs(90 * 24 * 3600);

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// How long the token is valid, such as `1h`; default 24h, at most 90 days.
    expires_in: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenCreated {
    /// The token, shown this once (only its hash is stored).
    token: String,
    expires_at: String,
    /// `<base URL>/portal#token=<token>`: the web dashboard confined to the tenant.
    portal_url: String,
}

fn tenant(text: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(text).map_err(|e| ApiError::invalid(format!("tenant_id: {e}")))
}

/// The base URL the caller reached hookd at: `Host` (already checked against
/// `HOOKD_ALLOWED_HOSTS`), over `https` when a proxy in front says so.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/tokens", tag = "tenants", params(("tenant_id" = String, Path)), request_body(content = Option<NewToken>), security(("admin_token" = [])), responses((status = 201, description = "the token, shown once, and the tenant's portal link", body = TokenCreated), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 403, description = "a tenant token cannot call this", body = ErrorBody), (status = 422, description = "invalid tenant_id or expires_in", body = ErrorBody)))]
pub async fn create_token(
    _: AdminOnly,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let tenant = tenant(&tenant_id)?;
    let req: NewToken = if body.iter().all(u8::is_ascii_whitespace) {
        NewToken::default()
    } else {
        super::json::parse(&body)?
    };
    let expires_in = match req.expires_in.as_deref() {
        None => DEFAULT_EXPIRES_IN,
        Some(text) => duration::parse_duration(text)
            .map_err(|e| ApiError::invalid(format!("expires_in: {e}")))?,
    };
    if expires_in.is_zero() || expires_in > MAX_EXPIRES_IN {
        return Err(ApiError::invalid(
            "expires_in must be more than 0 and at most 90 days",
        ));
    }
    let (token, hash) = tenant_tokens::generate();
    let expires_at = state
        .store
        .insert_tenant_token(&hash, &tenant, expires_in.as_millis() as i64)
        .await?;
    tracing::info!(tenant_id = %tenant, "tenant token created");
    let portal_url = format!("{}/portal#token={token}", base_url(&headers));
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token,
            expires_at: rfc3339(expires_at),
            portal_url,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/tokens", tag = "tenants", params(("tenant_id" = String, Path)), security(("admin_token" = [])), responses((status = 204, description = "every token of the tenant revoked"), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 403, description = "a tenant token cannot call this", body = ErrorBody), (status = 422, description = "invalid tenant_id", body = ErrorBody)))]
pub async fn revoke_tokens(
    _: AdminOnly,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = tenant(&tenant_id)?;
    let revoked = state.store.revoke_tenant_tokens(&tenant).await?;
    tracing::info!(tenant_id = %tenant, revoked, "tenant tokens revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        let cases = [
            (
                headers(&[("host", "127.0.0.1:8080")]),
                "http://127.0.0.1:8080",
            ),
            (
                headers(&[
                    ("host", "hooks.example.com"),
                    ("x-forwarded-proto", "https"),
                ]),
                "https://hooks.example.com",
            ),
            (
                headers(&[("host", "h.example"), ("x-forwarded-proto", "gopher")]),
                "http://h.example",
            ),
            (headers(&[]), "http://localhost"),
        ];
        for (h, want) in cases {
            assert_eq!(base_url(&h), want, "{h:?}");
        }
    }
}
