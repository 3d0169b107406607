//! The HTTP API. Every route but the health checks needs an API key
//! ([`auth`]); [`ROUTES`] says which roles each accepts (an `admin` key is
//! accepted everywhere).
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/events` | one event or a batch; 202 with the accepted ids, 400 (not JSON), 422 (invalid, with the fields), 403 (another tenant's events) |
//! | `GET /api/v1/accounts/{id}` | latest state (view stage) |
//! | `GET /api/v1/accounts/{id}/at?time=T` | state in effect at `T` |
//! | `GET /api/v1/accounts/{id}/versions?from=A&to=B` | the moves in `[A, B)` |
//! | `POST /api/v1/withdrawals/check` | 200 allowed, 423 restricted, 403 banned (410 erased) |
//! | `POST /api/v1/accounts/{id}/verdict` | operator: release, surveil or ban; 202 once published |
//! | `/api/v1/tenants/{tenant}/accounts/{id}[/at, /versions, /verdict]` | the same, for the named tenant's account ([`tenants`]) |
//! | `POST /api/v1/erasures` | admin: erase a data subject; 202 once the request is in `erasures` |
//! | `GET /api/v1/openapi.json` | the OpenAPI 3.1 document of this API (any role) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /healthz` | 200 while the process serves (no key) |
//! | `GET /healthz/ready` | 200 once this copy can answer (the view caught up), else 503 (no key) |

pub mod accounts;
pub mod auth;
pub mod erasures;
mod error;
pub mod events;
mod openapi;
pub mod overrides;
pub mod tenants;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

pub use accounts::AccountsApi;
pub use auth::{Caller, Keys};
pub use erasures::ErasuresApi;
pub use error::{InvalidRequest, Problem, problem};
pub use events::EventsApi;
pub use openapi::full_document;
pub use overrides::OverridesApi;

use crate::config::Role;
use crate::runtime::Metrics;
use crate::stages::view::View;

/// One route and the roles it accepts.
#[derive(Debug, Clone, Copy)]
pub struct RouteAccess {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path, with `{id}` for an account id and `{tenant}` for a tenant.
    pub path: &'static str,
    /// The roles accepted besides `admin`.
    pub roles: &'static [Role],
    /// It shows every tenant's data: keys bound to a tenant are refused.
    pub all_tenants: bool,
}

const READERS: &[Role] = &[Role::Viewer, Role::Operator, Role::Service];

/// Largest body of a state API request (a withdrawal check is one id).
const MAX_CHECK_BODY_BYTES: usize = 16 * 1024;

/// Every route that needs a key, and who may call it.
pub const ROUTES: &[RouteAccess] = &[
    RouteAccess {
        method: "POST",
        path: "/api/v1/events",
        roles: &[Role::Producer],
        all_tenants: false,
    },
    RouteAccess {
        method: "GET",
        path: "/api/v1/accounts/{id}",
        roles: READERS,
        all_tenants: false,
    },
    RouteAccess {
        method: "GET",
        path: "/api/v1/accounts/{id}/at",
        roles: READERS,
        all_tenants: false,
    },
    RouteAccess {
        method: "GET",
        path: "/api/v1/accounts/{id}/versions",
        roles: READERS,
        all_tenants: false,
    },
    RouteAccess {
        method: "POST",
        path: "/api/v1/withdrawals/check",
        roles: &[Role::Service, Role::Operator],
        all_tenants: false,
    },
    RouteAccess {
        method: "POST",
        path: "/api/v1/accounts/{id}/verdict",
        roles: &[Role::Operator],
        all_tenants: false,
    },
    RouteAccess {
        method: "GET",
        path: "/api/v1/tenants/{tenant}/accounts/{id}",
        roles: READERS,
        all_tenants: false,
    },
    RouteAccess {
        method: "GET",
        path: "/api/v1/tenants/{tenant}/accounts/{id}/at",
        roles: READERS,
        all_tenants: false,
    },
    RouteAccess {
        method: "GET",
        path: "/api/v1/tenants/{tenant}/accounts/{id}/versions",
        roles: READERS,
        all_tenants: false,
    },
    RouteAccess {
        method: "POST",
        path: "/api/v1/tenants/{tenant}/accounts/{id}/verdict",
        roles: &[Role::Operator],
        all_tenants: false,
    },
    RouteAccess {
        method: "POST",
        path: "/api/v1/erasures",
        roles: &[],
        all_tenants: true,
    },
    RouteAccess {
        method: "GET",
        path: "/api/v1/openapi.json",
        roles: &[Role::Viewer, Role::Operator, Role::Service, Role::Producer],
        all_tenants: false,
    },
    RouteAccess {
        method: "GET",
        path: "/metrics",
        roles: &[Role::Viewer, Role::Operator],
        all_tenants: true,
    },
];

/// What a process serves.
#[derive(Debug, Clone)]
pub struct Services {
    /// Counters (and `/metrics`).
    pub metrics: Metrics,
    /// The accepted keys.
    pub keys: Arc<Keys>,
    /// Event intake, when this process ingests.
    pub events: Option<Arc<EventsApi>>,
    /// The state API, when this process runs the view stage.
    pub view: Option<Arc<View>>,
    /// Erasure requests (admin), when this process can publish them.
    pub erasures: Option<Arc<ErasuresApi>>,
    /// Operators' verdicts, when this process runs the view stage.
    pub overrides: Option<Arc<OverridesApi>>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

/// `route` (one handler, from `routes!`) behind the guard of its path and
/// method in [`ROUTES`].
fn guarded<S>(s: &Services, route: UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let (schemas, paths, method) = route;
    let operations: Vec<(&'static str, &str)> = paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            openapi::methods(item)
                .into_iter()
                .map(move |m| (m, path.as_str()))
        })
        .collect();
    let [(verb, path)] = operations[..] else {
        panic!("a guarded route is one handler of one method: {operations:?}");
    };
    let access = ROUTES
        .iter()
        .find(|r| r.method == verb && r.path == path)
        .unwrap_or_else(|| panic!("{verb} {path} is not listed in ROUTES"));
    let method = method.route_layer(from_fn_with_state(
        auth::Guard {
            keys: Arc::clone(&s.keys),
            roles: access.roles,
            route: access.path,
            all_tenants: access.all_tenants,
            metrics: s.metrics.clone(),
        },
        auth::require,
    ));
    (schemas, paths, method)
}

/// Builds the router and the OpenAPI document of what it serves
/// (`GET /api/v1/openapi.json`).
///
/// Every route is mounted through utoipa-axum's `routes!`, from the
/// handler's `#[utoipa::path]`: the router and the document come from the
/// same declaration, so neither can have a route the other lacks. A path
/// nothing serves, or a method a path does not take, is answered with a
/// JSON [`Problem`] (404 `no_route`, 405 `method_not_allowed`).
pub fn router_and_document(s: Services) -> (Router, Arc<serde_json::Value>) {
    let document: Arc<OnceLock<Arc<serde_json::Value>>> = Arc::default();
    let mut app: OpenApiRouter = OpenApiRouter::new()
        .routes(guarded(&s, routes!(metrics_text)))
        .with_state(s.metrics.clone())
        .merge(
            OpenApiRouter::new()
                .routes(routes!(healthz))
                .routes(routes!(ready))
                .with_state(Health {
                    metrics: s.metrics.clone(),
                    view: s.view.clone(),
                }),
        )
        .merge(
            OpenApiRouter::new()
                .routes(guarded(&s, routes!(openapi_json)))
                .with_state(Contract {
                    document: Arc::clone(&document),
                    metrics: s.metrics.clone(),
                }),
        );
    if let Some(events) = s.events.clone() {
        app = app.merge(
            OpenApiRouter::new()
                .routes(guarded(&s, routes!(events::post_events)))
                .with_state(events)
                .layer(DefaultBodyLimit::max(s.max_body_bytes)),
        );
    }
    if let Some(erasures) = s.erasures.clone() {
        app = app.merge(
            OpenApiRouter::new()
                .routes(guarded(&s, routes!(erasures::post_erasure)))
                .with_state(erasures)
                .layer(DefaultBodyLimit::max(MAX_CHECK_BODY_BYTES)),
        );
    }
    if let Some(overrides) = s.overrides.clone() {
        app = app.merge(
            OpenApiRouter::new()
                .routes(guarded(&s, routes!(overrides::post_verdict)))
                .routes(guarded(&s, routes!(tenants::post_verdict)))
                .with_state(overrides)
                .layer(DefaultBodyLimit::max(MAX_CHECK_BODY_BYTES)),
        );
    }
    if let Some(view) = s.view.clone() {
        let api = AccountsApi {
            view,
            metrics: s.metrics.clone(),
        };
        app = app.merge(
            OpenApiRouter::new()
                .routes(guarded(&s, routes!(accounts::latest)))
                .routes(guarded(&s, routes!(accounts::at)))
                .routes(guarded(&s, routes!(accounts::versions)))
                .routes(guarded(&s, routes!(tenants::latest)))
                .routes(guarded(&s, routes!(tenants::at)))
                .routes(guarded(&s, routes!(tenants::versions)))
                .routes(guarded(&s, routes!(accounts::check_withdrawal)))
                .with_state(api)
                .layer(DefaultBodyLimit::max(MAX_CHECK_BODY_BYTES)),
        );
    }
    let (app, doc) = app.split_for_parts();
    let max_batch = s.events.as_ref().map(|e| e.max_batch_events);
    let doc = Arc::new(openapi::document(doc, max_batch));
    document
        .set(Arc::clone(&doc))
        .expect("the document is set once");
    let app = app
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed);
    (app, doc)
}

/// Builds the router ([`router_and_document`]).
pub fn router(s: Services) -> Router {
    router_and_document(s).0
}

async fn no_route(uri: axum::http::Uri) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "nothing is served at {}; GET /api/v1/openapi.json lists the routes",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take {method}; GET /api/v1/openapi.json lists its methods",
            uri.path()
        ),
    )
}

/// `app` with every request limited to `limit`, body included: a request
/// still unanswered then is answered 503 (what it had started, such as a
/// produce, may still complete; an event sent again is a duplicate, which
/// the screen stage drops by its id).
pub fn with_request_timeout(app: Router, limit: std::time::Duration) -> Router {
    app.layer(axum::middleware::from_fn_with_state(limit, time_limit))
}

async fn time_limit(
    State(limit): State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%method, path, limit_ms = limit.as_millis() as u64, "request timed out");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request took longer than {} ms", limit.as_millis()),
            )
        }
    }
}

#[derive(Clone)]
struct Health {
    metrics: Metrics,
    view: Option<Arc<View>>,
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    summary = "Liveness: 200 while the process serves (no key)",
    responses((status = 200, description = "the process serves", body = String, content_type = "text/plain"))
)]
async fn healthz(State(h): State<Health>) -> impl IntoResponse {
    h.metrics.http_request("/healthz", 200);
    "ok\n"
}

/// Readiness.
#[utoipa::path(
    get,
    path = "/healthz/ready",
    tag = "health",
    operation_id = "ready",
    summary = "Readiness: 200 once this copy can answer (no key)",
    description = "503 while the view stage rebuilds the account index from Kafka (at start, and after the broker went back).",
    responses(
        (status = 200, description = "this copy answers", body = String, content_type = "text/plain"),
        (status = 503, description = "the view is still rebuilding", body = String, content_type = "text/plain"),
    )
)]
async fn ready(State(h): State<Health>) -> impl IntoResponse {
    let ready = h.view.as_ref().is_none_or(|v| v.is_ready());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    h.metrics.http_request("/healthz/ready", status.as_u16());
    (
        status,
        if ready {
            "ready\n"
        } else {
            "rebuilding the view from Kafka\n"
        },
    )
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Every counter and histogram, in the OpenMetrics text format",
    description = "docs/metrics.md lists them. Keys bound to a tenant are refused: the figures cover every tenant.",
    responses((status = 200, description = "the metrics", body = String, content_type = "application/openmetrics-text"))
)]
async fn metrics_text(State(metrics): State<Metrics>) -> impl IntoResponse {
    metrics.http_request("/metrics", 200);
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

#[derive(Clone)]
struct Contract {
    document: Arc<OnceLock<Arc<serde_json::Value>>>,
    metrics: Metrics,
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    summary = "This API's OpenAPI 3.1 document: the routes this process serves",
    responses((status = 200, description = "the document", body = Object, content_type = "application/json"))
)]
async fn openapi_json(State(c): State<Contract>) -> Response {
    c.metrics.http_request("/api/v1/openapi.json", 200);
    match c.document.get() {
        Some(doc) => axum::Json(doc.as_ref()).into_response(),
        None => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the document is being built; retry".into(),
        ),
    }
}

#[cfg(test)]
mod tests;
