//! Who is calling, as a [`Scope`]: `authenticate` (the `/v1` middleware) resolves the
//! bearer credential into one and puts it in the request; handlers take it through
//! [`Caller`] and hand it to every store call they make for data, which builds it into its
//! SQL; admin-only handlers take [`AdminOnly`] instead, which answers `403` to a tenant.
//!
//! - the admin token (or no token on an open API): [`Scope::Admin`];
//! - a tenant token (`hkt_...`): looked up by its SHA-256, [`Scope::Tenant`]; unknown,
//!   expired or revoked: `401`.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use hookd_store::{Scope, TenantId};

use super::error::ApiError;
use super::AppState;
use crate::daemon::tenant_tokens;

/// Every `/v1` call: the admin token when one is configured (compared in constant time),
/// or a live tenant token, which confines the call to its tenant. The token itself is
/// never logged.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let scope = match resolve(&state, given).await {
        Ok(scope) => scope,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(scope);
    next.run(req).await
}

async fn resolve(state: &AppState, given: Option<&str>) -> Result<Scope, ApiError> {
    if let Some(token) = given.filter(|t| tenant_tokens::is_tenant_token(t)) {
        // One seek by the hash: a token is 256 random bits, so the lookup by hash
        // discloses nothing an attacker could use.
        return match state
            .store
            .tenant_of_token(&tenant_tokens::hash(token))
            .await?
        {
            Some(tenant) => Ok(Scope::Tenant(tenant)),
            None => Err(ApiError::TenantTokenInvalid),
        };
    }
    match &state.admin_token {
        None => Ok(Scope::Admin),
        Some(admin) => {
            let given = given.unwrap_or("");
            if bool::from(given.as_bytes().ct_eq(admin.as_bytes())) {
                Ok(Scope::Admin)
            } else {
                Err(ApiError::Unauthorized)
            }
        }
    }
}

/// The caller's scope, for a handler that serves both the admin and tenants: it passes it
/// to every store call it makes for data.
pub struct Caller(pub Scope);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Scope>()
            .cloned()
            .map(Caller)
            // Only a route outside `authenticate` could get here: refuse rather than guess.
            .ok_or(ApiError::Unauthorized)
    }
}

impl Caller {
    /// The tenant a request may name (a body's or a filter's `tenant_id`): any for the
    /// admin, its own only for a tenant (another answers `403`). Invalid: `422` naming
    /// the field.
    pub fn tenant_named(
        &self,
        field: &str,
        given: Option<&str>,
    ) -> Result<Option<TenantId>, ApiError> {
        let named = given
            .map(|t| TenantId::parse(t).map_err(|e| ApiError::invalid(format!("{field}: {e}"))))
            .transpose()?;
        match (&self.0, named) {
            (Scope::Tenant(own), Some(named)) if *own != named => Err(ApiError::Forbidden(
                format!("{field}: a tenant token acts for its own tenant only"),
            )),
            (Scope::Tenant(own), _) => Ok(Some(own.clone())),
            (Scope::Admin, named) => Ok(named),
        }
    }
}

/// An admin-only route: a tenant's scope gets `403`.
pub struct AdminOnly;

impl<S: Send + Sync> FromRequestParts<S> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await?.0 {
            Scope::Admin => Ok(AdminOnly),
            Scope::Tenant(_) => Err(ApiError::Forbidden(
                "this route needs the admin token; a tenant token cannot call it".into(),
            )),
        }
    }
}
