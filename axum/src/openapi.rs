//! The API description: an OpenAPI 3.1 document of every route the
//! [`router`](crate::router) serves, at `GET /openapi.json`.
//!
//! [`ROUTES`] is the list of (method, path) pairs with a tag and a
//! summary; [`document`] builds the document from it with utoipa's builder
//! types. Tests keep the list equal to the router: every entry must reach
//! a handler, not the router's fallback (`tests/openapi.rs`), and the list
//! must equal the bad-input test's route table, which is held to every
//! `.route(…)` in this crate's sources (`tests/bad_input.rs`) — so a route
//! can be neither missing nor invented. Request and response bodies are
//! described by the seeds' references (`docs/`), not yet as schemas here.

use super::state::AppState;
use axum::Router;
use axum::routing::get;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Required,
    ResponseBuilder,
};

/// One route: method, path template, tag, summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: &'static str,
    /// The path template as axum matches it (`{param}` segments).
    pub path: &'static str,
    /// The API group: `account`, `devices`, `portal`, `oidc`, `admin`,
    /// `operations`.
    pub tag: &'static str,
    /// One line for people.
    pub summary: &'static str,
}

const fn route(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        tag,
        summary,
    }
}

/// Every route of the server.
pub const ROUTES: &[Route] = &[
    route("POST", "/api/v1/authenticate", "account", "Authenticate"),
    route("POST", "/api/v1/user/mfa", "account", "Create key"),
    route("GET", "/api/v1/user/mfa/status", "account", "Statuses"),
    route("GET", "/api/v1/user/mfa/type", "account", "Types"),
    route(
        "PATCH",
        "/api/v1/user/mfa/{key_id}",
        "account",
        "Activate key",
    ),
    route(
        "DELETE",
        "/api/v1/user/my/mfa/{key_id}",
        "account",
        "Delete my key",
    ),
    route(
        "DELETE",
        "/api/v1/user/{user_id}/mfa/{key_id}",
        "account",
        "Delete key",
    ),
    route(
        "GET",
        "/api/v1/user/mfa/trusted_device",
        "account",
        "List my devices",
    ),
    route(
        "GET",
        "/api/v1/user/my/mfa/trusted_device",
        "account",
        "List my devices",
    ),
    route(
        "GET",
        "/api/v1/user/{user_id}/mfa/trusted_device",
        "account",
        "List devices",
    ),
    route(
        "DELETE",
        "/api/v1/user/mfa/trusted_device/{device_id}",
        "account",
        "Delete my device",
    ),
    route(
        "DELETE",
        "/api/v1/user/my/mfa/trusted_device/{device_id}",
        "account",
        "Delete my device",
    ),
    route(
        "DELETE",
        "/api/v1/user/{user_id}/mfa/trusted_device/{device_id}",
        "account",
        "Delete device",
    ),
    route("POST", "/admin/realms", "admin", "Create realm"),
    route(
        "PUT",
        "/admin/realms/{realm}/webauthn",
        "admin",
        "Set (or replace) the realm's relying party",
    ),
    route(
        "POST",
        "/admin/realms/{realm}/groups",
        "admin",
        "Create group",
    ),
    route(
        "PUT",
        "/admin/realms/{realm}/groups/{group_id}/members/{user_id}",
        "admin",
        "Add member",
    ),
    route(
        "DELETE",
        "/admin/realms/{realm}/groups/{group_id}/members/{user_id}",
        "admin",
        "Remove member",
    ),
    route(
        "POST",
        "/admin/realms/{realm}/clients",
        "admin",
        "Create client",
    ),
    route(
        "GET",
        "/admin/realms/{realm}/clients",
        "admin",
        "List clients",
    ),
    route(
        "GET",
        "/admin/realms/{realm}/clients/{client_id}",
        "admin",
        "Get client",
    ),
    route(
        "PATCH",
        "/admin/realms/{realm}/clients/{client_id}",
        "admin",
        "Update client",
    ),
    route(
        "DELETE",
        "/admin/realms/{realm}/clients/{client_id}",
        "admin",
        "Delete client",
    ),
    route(
        "POST",
        "/admin/realms/{realm}/clients/{client_id}/secret",
        "admin",
        "Rotate client secret",
    ),
    route(
        "DELETE",
        "/authlance/identity/api/v1/realm/admin/groups/{group_id}/devices/{device_id}",
        "devices",
        "Remove device",
    ),
    route(
        "POST",
        "/authlance/identity/api/v1/realm/admin/groups/{group_id}/devices/{device_id}/revoke",
        "devices",
        "Revoke device",
    ),
    route(
        "POST",
        "/authlance/identity/api/v1/realm/admin/groups/{group_id}/keys/rotate",
        "devices",
        "Rotate key",
    ),
    route(
        "GET",
        "/authlance/identity/api/v1/realm/groups/{group_id}",
        "devices",
        "`GET …/groups/{groupId}` — not in the seed: the group itself (name, realm id, key version, limits), which a front-end needs to bind its envelopes to the realm and group",
    ),
    route(
        "GET",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices",
        "devices",
        "List devices",
    ),
    route(
        "POST",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices",
        "devices",
        "Register device",
    ),
    route(
        "GET",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/count",
        "devices",
        "Device count",
    ),
    route(
        "GET",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/presence",
        "devices",
        "Presence",
    ),
    route(
        "GET",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/events",
        "devices",
        "Events",
    ),
    route(
        "GET",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/key-requests",
        "devices",
        "List key requests",
    ),
    route(
        "POST",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/key-requests",
        "devices",
        "Create key request",
    ),
    route(
        "GET",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/key-requests/{request_id}",
        "devices",
        "Get key request",
    ),
    route(
        "POST",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/key-requests/{request_id}/grant",
        "devices",
        "Grant key request",
    ),
    route(
        "POST",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/key-requests/{request_id}/reject",
        "devices",
        "Reject key request",
    ),
    route(
        "GET",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/{device_id}",
        "devices",
        "Get device",
    ),
    route(
        "POST",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/{device_id}/activate",
        "devices",
        "Activate device",
    ),
    route(
        "POST",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/{device_id}/heartbeat",
        "devices",
        "Heartbeat",
    ),
    route(
        "GET",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/{device_id}/key",
        "devices",
        "Device key",
    ),
    route(
        "PUT",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/{device_id}/public-key",
        "devices",
        "Update public key",
    ),
    route(
        "PUT",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/{device_id}/push-token",
        "devices",
        "Set push token",
    ),
    route(
        "DELETE",
        "/authlance/identity/api/v1/realm/groups/{group_id}/devices/{device_id}/push-token",
        "devices",
        "Clear push token",
    ),
    route(
        "GET",
        "/authlance/identity/api/v1/realm/groups/{group_id}/keys/version",
        "devices",
        "Key version",
    ),
    route("GET", "/healthz", "operations", "Healthz"),
    route("GET", "/readyz", "operations", "Readyz"),
    route("GET", "/metrics", "operations", "Metrics"),
    route(
        "GET",
        "/realms/{realm_name}/protocol/openid-connect/auth",
        "oidc",
        "The authorization endpoint: start a login (authorization code with PKCE)",
    ),
    route(
        "POST",
        "/realms/{realm_name}/protocol/openid-connect/registrations",
        "oidc",
        "Registration",
    ),
    route(
        "GET",
        "/realms/{realm_name}/login-actions/setup-otp",
        "oidc",
        "Setup otp",
    ),
    route(
        "POST",
        "/realms/{realm_name}/login-actions/generate-recovery-codes",
        "oidc",
        "Generate recovery codes",
    ),
    route(
        "POST",
        "/realms/{realm_name}/login-actions/send-magic-link",
        "oidc",
        "Send magic link",
    ),
    route(
        "GET",
        "/realms/{realm_name}/login-actions/verify-magic-link",
        "oidc",
        "Verify magic link",
    ),
    route(
        "POST",
        "/realms/{realm_name}/login-actions/update-password",
        "oidc",
        "Update password",
    ),
    route(
        "GET",
        "/realms/{realm_name}/login-actions/confirm-sign-up",
        "oidc",
        "The link of a sign-up confirmation: creates the account (once)",
    ),
    route(
        "POST",
        "/realms/{realm_name}/protocol/openid-connect/token",
        "oidc",
        "Token",
    ),
    route(
        "GET",
        "/realms/{realm_name}/protocol/openid-connect/certs",
        "oidc",
        "Certs",
    ),
    route(
        "GET",
        "/realms/{realm_name}/protocol/openid-connect/jwks.json",
        "oidc",
        "Certs",
    ),
    route(
        "GET",
        "/realms/{realm_name}/.well-known/openid-configuration",
        "oidc",
        "Discovery",
    ),
    route(
        "GET",
        "/realms/{realm_name}/protocol/openid-connect/userinfo",
        "oidc",
        "Userinfo",
    ),
    route(
        "POST",
        "/realms/{realm_name}/protocol/openid-connect/userinfo",
        "oidc",
        "Userinfo",
    ),
    route(
        "POST",
        "/realms/{realm_name}/protocol/openid-connect/token/introspect",
        "oidc",
        "`POST …/token/introspect`: for a resource server with its own client credentials, the bearer of a token with the `introspect` scope (`keystead::token::Introspector`), or the administrator",
    ),
    route(
        "POST",
        "/realms/{realm_name}/protocol/openid-connect/revoke",
        "oidc",
        "`POST …/revoke` (RFC 7009): the client authenticates (a public one by its `client_id`) and revokes only its own tokens; a request naming no client is `401 invalid_client`",
    ),
    route(
        "GET",
        "/realms/{realm_name}/protocol/openid-connect/logout",
        "oidc",
        "Logout get",
    ),
    route(
        "POST",
        "/realms/{realm_name}/protocol/openid-connect/logout",
        "oidc",
        "Logout post",
    ),
    route(
        "POST",
        "/realms/{realm_name}/login-actions/webauthn-public-key-create-options",
        "oidc",
        "Create options",
    ),
    route(
        "POST",
        "/realms/{realm_name}/login-actions/webauthn-public-key-create",
        "oidc",
        "Create",
    ),
    route(
        "POST",
        "/realms/{realm_name}/login-actions/webauthn-public-key-request-options",
        "oidc",
        "Request options",
    ),
    route(
        "POST",
        "/realms/{realm_name}/login-actions/webauthn-public-key-authenticate",
        "oidc",
        "Authenticate",
    ),
    route(
        "POST",
        "/api/v1/auth/app-portal-access/{app_id}",
        "portal",
        "App portal access",
    ),
    route(
        "POST",
        "/api/v1/auth/dashboard-access/{app_id}",
        "portal",
        "Dashboard access",
    ),
    route(
        "POST",
        "/api/v1/auth/one-time-token",
        "portal",
        "One time token",
    ),
    route(
        "POST",
        "/api/v1/auth/app/{app_id}/create-message-token",
        "portal",
        "Create message token",
    ),
    route(
        "POST",
        "/api/v1/auth/app/{app_id}/expire-all",
        "portal",
        "Expire all",
    ),
    route("POST", "/api/v1/auth/logout", "portal", "Logout"),
    route(
        "POST",
        "/realms/{realm_name}/login-actions/authenticate",
        "oidc",
        "Login page: username and password",
    ),
    route(
        "POST",
        "/realms/{realm_name}/login-actions/challenge-otp",
        "oidc",
        "Login page: ask for the TOTP step",
    ),
    route(
        "POST",
        "/realms/{realm_name}/login-actions/burn-recovery-code",
        "oidc",
        "Login page: answer the MFA step with a recovery code",
    ),
    route(
        "POST",
        "/realms/{realm_name}/login-actions/verify-otp",
        "oidc",
        "Login page: answer the MFA step with a TOTP code",
    ),
    route("GET", "/openapi.json", "operations", "This document"),
];

/// The routes that need no bearer token: the login and OAuth endpoints
/// (which authenticate the client or the user themselves), the probes,
/// discovery and keys.
fn is_public(route: &Route) -> bool {
    route.tag == "oidc" && !route.path.ends_with("/userinfo")
        || route.tag == "operations"
        || route.path == "/api/v1/authenticate"
}

/// The OpenAPI document of [`ROUTES`].
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new().build();
    for route in ROUTES {
        let mut operation = OperationBuilder::new()
            .tag(route.tag)
            .summary(Some(route.summary))
            .operation_id(Some(format!("{} {}", route.method, route.path)))
            .response("200", ResponseBuilder::new().description("success"))
            .response(
                "4XX",
                ResponseBuilder::new()
                    .description("refused: a JSON body with the library's stable `code`"),
            );
        for name in parameters(route.path) {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True),
            );
        }
        if !is_public(route) {
            operation =
                operation.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        paths.add_path_operation(route.path, vec![method(route.method)], operation.build());
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("keystead server")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The seed APIs over keystead: devices, account, OIDC, portal, admin.",
                )),
        )
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
                )
                .build(),
        ))
        .build()
}

/// The `{name}` segments of a path template.
fn parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn method(name: &str) -> HttpMethod {
    match name {
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

/// `GET /openapi.json`.
pub fn routes() -> Router<AppState> {
    let document = document().to_json().unwrap_or_default();
    Router::new().route(
        "/openapi.json",
        get(move || {
            let document = document.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    document,
                )
            }
        }),
    )
}
