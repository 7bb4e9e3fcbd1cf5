//! The OpenAPI 3 document of the admin API, served at `/openapi.json`. The paths come
//! from the `#[utoipa::path]` annotations on the handlers (collected by the router), so
//! every documented route exists and every route is documented.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::webhooks::OperationalWebhooks;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookd admin API",
        description = "Endpoints, events, the delivery log with every attempt, and resends. \
            Errors are `{\"error\": {\"code\", \"message\"}}`. When HOOKD_ADMIN_TOKEN is set, \
            every /v1 call needs `Authorization: Bearer <token>`. A tenant token (`hkt_...`, from \
            POST /v1/tenants/{tenant_id}/tokens) confines a call to its tenant's rows; \
            admin-only routes answer it 403."
    ),
    modifiers(&AdminToken, &OperationalWebhooks),
    tags(
        (name = "endpoints", description = "Receivers of webhooks"),
        (name = "events", description = "Events handed to hookd over HTTP"),
        (name = "deliveries", description = "The delivery log, attempts and resends"),
        (name = "tenants", description = "Tenants' portal tokens (admin only)"),
        (name = "event-types", description = "The event-type catalog: names, descriptions and the JSON Schemas payloads are checked against (tenants read it; the admin changes it)"),
        (name = "health", description = "Liveness, readiness and metrics (no token)")
    )
)]
pub struct ApiDoc;

struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
