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
//! | `POST /api/v1/erasures` | admin: erase a data subject; 202 once the request is in `erasures` |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /healthz` | 200 while the process serves (no key) |
//! | `GET /healthz/ready` | 200 once this copy can answer (the view caught up), else 503 (no key) |

pub mod accounts;
pub mod auth;
pub mod erasures;
mod error;
mod events;
pub mod overrides;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};

pub use accounts::AccountsApi;
pub use auth::{Caller, Keys};
pub use erasures::ErasuresApi;
pub use error::InvalidRequest;
pub use events::EventsApi;
pub use overrides::OverridesApi;

use crate::config::Role;
use crate::runtime::Metrics;
use crate::stages::view::View;

/// One route and the roles it accepts.
#[derive(Debug, Clone, Copy)]
pub struct RouteAccess {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path, with `{id}` for an account id.
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
        method: "POST",
        path: "/api/v1/erasures",
        roles: &[],
        all_tenants: true,
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

/// `method` behind the guard of `path` (its roles in [`ROUTES`]).
fn guarded<S>(
    s: &Services,
    verb: &'static str,
    path: &'static str,
    method: MethodRouter<S>,
) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let access = ROUTES
        .iter()
        .find(|r| r.method == verb && r.path == path)
        .expect("every guarded route is listed in ROUTES");
    method.route_layer(from_fn_with_state(
        auth::Guard {
            keys: Arc::clone(&s.keys),
            roles: access.roles,
            route: access.path,
            all_tenants: access.all_tenants,
            metrics: s.metrics.clone(),
        },
        auth::require,
    ))
}

/// Builds the router.
pub fn router(s: Services) -> Router {
    let mut app = Router::new()
        .route(
            "/metrics",
            guarded(&s, "GET", "/metrics", get(metrics_text)),
        )
        .with_state(s.metrics.clone())
        .merge(
            Router::new()
                .route("/healthz", get(healthz))
                .route("/healthz/ready", get(ready))
                .with_state(Health {
                    metrics: s.metrics.clone(),
                    view: s.view.clone(),
                }),
        );
    if let Some(events) = s.events.clone() {
        app = app.merge(
            Router::new()
                .route(
                    "/api/v1/events",
                    guarded(&s, "POST", "/api/v1/events", post(events::post_events)),
                )
                .with_state(events)
                .layer(DefaultBodyLimit::max(s.max_body_bytes)),
        );
    }
    if let Some(erasures) = s.erasures.clone() {
        app = app.merge(
            Router::new()
                .route(
                    "/api/v1/erasures",
                    guarded(&s, "POST", "/api/v1/erasures", post(erasures::post_erasure)),
                )
                .with_state(erasures)
                .layer(DefaultBodyLimit::max(MAX_CHECK_BODY_BYTES)),
        );
    }
    if let Some(overrides) = s.overrides.clone() {
        app = app.merge(
            Router::new()
                .route(
                    "/api/v1/accounts/{id}/verdict",
                    guarded(
                        &s,
                        "POST",
                        "/api/v1/accounts/{id}/verdict",
                        post(overrides::post_verdict),
                    ),
                )
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
            Router::new()
                .route(
                    "/api/v1/accounts/{id}",
                    guarded(&s, "GET", "/api/v1/accounts/{id}", get(accounts::latest)),
                )
                .route(
                    "/api/v1/accounts/{id}/at",
                    guarded(&s, "GET", "/api/v1/accounts/{id}/at", get(accounts::at)),
                )
                .route(
                    "/api/v1/accounts/{id}/versions",
                    guarded(
                        &s,
                        "GET",
                        "/api/v1/accounts/{id}/versions",
                        get(accounts::versions),
                    ),
                )
                .route(
                    "/api/v1/withdrawals/check",
                    guarded(
                        &s,
                        "POST",
                        "/api/v1/withdrawals/check",
                        post(accounts::check_withdrawal),
                    ),
                )
                .with_state(api)
                .layer(DefaultBodyLimit::max(MAX_CHECK_BODY_BYTES)),
        );
    }
    app
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
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({
                    "error": "timeout",
                    "message": format!("the request took longer than {} ms", limit.as_millis()),
                })),
            )
                .into_response()
        }
    }
}

#[derive(Clone)]
struct Health {
    metrics: Metrics,
    view: Option<Arc<View>>,
}

async fn healthz(State(h): State<Health>) -> impl IntoResponse {
    h.metrics.http_request("/healthz", 200);
    "ok\n"
}

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

#[cfg(test)]
mod tests;
