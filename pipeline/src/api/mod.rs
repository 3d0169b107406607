//! The HTTP API: event intake, health and metrics.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/events` | one event or a batch; 202 with the accepted ids, 400 (not JSON) or 422 (invalid, with the fields) |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /metrics` | Prometheus text format |

mod events;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};

pub use events::EventsApi;

use crate::runtime::Metrics;

/// Builds the router; `events` is `None` when this process does not ingest.
pub fn router(metrics: Metrics, events: Option<Arc<EventsApi>>, max_body_bytes: usize) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics);
    if let Some(events) = events {
        app = app.merge(
            Router::new()
                .route("/api/v1/events", post(events::post_events))
                .with_state(events)
                .layer(DefaultBodyLimit::max(max_body_bytes)),
        );
    }
    app
}

async fn healthz(State(metrics): State<Metrics>) -> impl IntoResponse {
    metrics.http_request("/healthz", 200);
    "ok\n"
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
