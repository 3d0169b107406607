//! `POST /api/v1/erasures` (admin): asks for a data subject's erasure.
//!
//! The request goes to the compacted `erasures` topic, keyed by the
//! subject, and the answer (202) comes once the brokers have it. Every view
//! copy reads that topic and answers 410 for the subject within about a
//! second; the purge of the archive and the certificate follow
//! (`docs/operators.md`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kusanagi_connectors::ConnectorError;
use kusanagi_connectors::kafka::enqueue;
use kusanagi_schemas::{ErasureRequest, EventTime, RecordCodec};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::{Problem, problem};
use crate::runtime::Metrics;

/// Longest subject accepted, in bytes (an account id).
const MAX_SUBJECT_BYTES: usize = 256;

/// What the erasure route needs.
pub struct ErasuresApi {
    /// Publishes to `erasures`.
    pub producer: FutureProducer,
    /// The `erasures` topic.
    pub topic: String,
    /// Counters.
    pub metrics: Metrics,
}

impl std::fmt::Debug for ErasuresApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasuresApi")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// The body of an erasure request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EraseBody {
    /// The data subject: an account id (1 to 256 bytes, not only spaces).
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"\S",
        example = "player-7"
    )]
    subject: String,
}

/// An erasure request taken.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErasureAccepted)]
pub(super) struct Accepted<'a> {
    /// Names the request in `erasures`, `audit` and its certificate.
    request_id: &'a str,
    subject: &'a str,
    /// RFC 3339.
    requested_at: String,
}

/// A new erasure request of `subject` by `by`.
pub fn request(subject: &str, by: &str) -> ErasureRequest {
    let now = chrono::Utc::now();
    ErasureRequest {
        request_id: format!(
            "er-{}-{:08x}",
            now.format("%Y%m%dT%H%M%S%.6fZ"),
            rand::random::<u32>()
        ),
        subject: subject.to_owned(),
        requested_at: EventTime::from_micros(now.timestamp_micros()),
        requested_by: by.to_owned(),
    }
}

/// Publishes `r` to `topic`, keyed by its subject, and waits for the brokers.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    r: &ErasureRequest,
) -> Result<(), ConnectorError> {
    let payload = RecordCodec::<ErasureRequest>::new().encode(r);
    deliver(producer, topic, r.subject.as_bytes(), &payload).await
}

/// Sends one keyed record to `topic` and waits until the brokers have it
/// (the routes that answer only once a request is durable).
pub async fn deliver(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
) -> Result<(), ConnectorError> {
    let failed = |source| ConnectorError::Kafka {
        operation: format!("produce to {topic}"),
        source,
    };
    let record = FutureRecord::to(topic).key(key).payload(payload);
    let delivery = enqueue(producer, record).await.map_err(failed)?;
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(failed(e)),
        // The producer shut down before it answered.
        Err(_) => Err(failed(rdkafka::error::KafkaError::Canceled)),
    }
}

/// The handler.
#[utoipa::path(
    post,
    path = "/api/v1/erasures",
    tag = "erasures",
    operation_id = "post_erasure",
    summary = "Erase a data subject from every topic and archive tier (GDPR)",
    description = "202 once the request is in `erasures`; the compact stage carries it out and writes a deletion certificate (docs/operators.md). Asking again is harmless.",
    request_body = EraseBody,
    responses(
        (status = 202, description = "the request is in `erasures`", body = Accepted),
        (status = 400, description = "the body is not `{\"subject\": \"...\"}` (`invalid_request`)", body = Problem),
        (status = 422, description = "an empty or too long subject (`invalid_subject`)", body = Problem),
        (status = 503, description = "the request could not be published (`unavailable`)", body = Problem),
    )
)]
pub async fn post_erasure(
    State(api): State<Arc<ErasuresApi>>,
    Extension(caller): Extension<Arc<Caller>>,
    body: Result<Json<EraseBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let r = match body {
        Err(e) => problem(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "expected {{\"subject\": \"<account id>\"}}: {}",
                e.body_text()
            ),
        ),
        Ok(Json(b)) if b.subject.trim().is_empty() || b.subject.len() > MAX_SUBJECT_BYTES => {
            problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_subject",
                format!("expected an account id of 1 to {MAX_SUBJECT_BYTES} bytes"),
            )
        }
        Ok(Json(b)) => {
            let r = request(&b.subject, &caller.name);
            match publish(&api.producer, &api.topic, &r).await {
                Ok(()) => {
                    tracing::info!(request_id = %r.request_id, by = %caller.name, "erasure requested");
                    (
                        StatusCode::ACCEPTED,
                        Json(Accepted {
                            request_id: &r.request_id,
                            subject: &r.subject,
                            requested_at: r.requested_at.to_rfc3339(),
                        }),
                    )
                        .into_response()
                }
                Err(why) => problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!(
                        "the request could not be published ({why}); retry: a repeated request is harmless"
                    ),
                ),
            }
        }
    };
    api.metrics
        .http_request("/api/v1/erasures", r.status().as_u16());
    r
}
