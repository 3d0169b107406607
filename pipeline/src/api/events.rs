//! `POST /api/v1/events`: one event (an object) or a batch (an array).
//!
//! Each event goes through the same validation as the ingest stage
//! (size, then the JSON contract). A batch is all or nothing: if any event
//! is invalid, none is published and the answer lists every invalid one.
//! Valid events are published to `events` (Avro, keyed by `target_id`) and
//! the answer, 202, comes only after the brokers acknowledged all of them.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kusanagi_connectors::ConnectorError;
use kusanagi_connectors::kafka::enqueue;
use kusanagi_schemas::{GameEvent, GameEventCodec, InvalidEvent};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::value::RawValue;

use super::auth::Caller;
use crate::runtime::Metrics;
use crate::runtime::OutRecord;
use crate::runtime::trace;
use crate::stages::ingest::{STAGE, event_record, validate};

/// Most rejections listed in one 422 answer.
const MAX_LISTED_ERRORS: usize = 100;

/// What the events route needs.
pub struct EventsApi {
    /// Publishes to `events`.
    pub producer: FutureProducer,
    /// Encodes events as Avro.
    pub codec: GameEventCodec,
    /// The `events` topic.
    pub topic: String,
    /// Largest event accepted, as in the ingest stage.
    pub max_event_bytes: usize,
    /// Most events per request.
    pub max_batch_events: usize,
    /// Counters.
    pub metrics: Metrics,
}

impl std::fmt::Debug for EventsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsApi")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// The answer to published events.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = EventsAccepted)]
pub(super) struct Accepted {
    /// How many events were published.
    accepted: usize,
    /// Their ids, in the request's order.
    event_ids: Vec<String>,
}

/// Why one event of a request was refused.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct FieldError {
    /// Position in the batch (0 for a single event).
    index: usize,
    /// A stable code: `invalid_json`, `not_an_object`, `missing_field`,
    /// `wrong_type`, `invalid_value`, `too_large`, `foreign_tenant`.
    reason: &'static str,
    /// The field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// What was expected.
    message: String,
}

/// A refused request: a [`super::Problem`] with the events at fault.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = EventsRejected)]
pub(super) struct Rejected {
    /// A stable code: `invalid_json`, `batch_size`, `invalid_event`,
    /// `foreign_tenant`, `unavailable`.
    error: &'static str,
    /// What went wrong.
    message: String,
    /// The events at fault (at most 100 are listed).
    #[schema(required = false)]
    errors: Vec<FieldError>,
}

fn rejected(
    status: StatusCode,
    error: &'static str,
    message: String,
    errors: Vec<FieldError>,
) -> Response {
    (
        status,
        Json(Rejected {
            error,
            message,
            errors,
        }),
    )
        .into_response()
}

fn field_error(index: usize, e: &InvalidEvent) -> FieldError {
    FieldError {
        index,
        reason: e.reason(),
        field: e.field().map(str::to_owned),
        message: e.to_string(),
    }
}

/// Splits the body into one raw JSON text per event.
fn split_body(body: &[u8]) -> Result<Vec<&RawValue>, serde_json::Error> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(body),
        _ => serde_json::from_slice::<&RawValue>(body).map(|one| vec![one]),
    }
}

/// The handler.
#[utoipa::path(
    post,
    path = "/api/v1/events",
    tag = "events",
    operation_id = "post_events",
    summary = "Publish one event or a batch",
    description = "Each event is validated as the ingest stage validates `events.raw` \
        (docs/event-contract.md). A batch is all or nothing: if any event is invalid, \
        none is published and the answer lists the invalid ones. 202 comes once the \
        brokers acknowledged every event; resending the same `event_id` is harmless \
        (the screen stage drops duplicates). A key bound to a tenant publishes that \
        tenant's events only. A `traceparent` header (W3C) puts the events in the caller's trace.",
    params(("traceparent" = Option<String>, Header, description = "W3C trace context of the caller")),
    responses(
        (status = 202, description = "every event was published", body = Accepted),
        (status = 400, description = "the body is not a JSON object or array", body = Rejected),
        (status = 403, description = "an event of another tenant than the key's; none was published", body = Rejected),
        (status = 413, description = "the body is larger than `http.max_body_bytes`", body = String, content_type = "text/plain"),
        (status = 422, description = "an invalid event, or a batch of 0 or more than `http.max_batch_events`; none was published", body = Rejected),
        (status = 503, description = "the brokers did not take the events; retry (`Retry-After`)", body = Rejected,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
    )
)]
pub async fn post_events(
    State(api): State<Arc<EventsApi>>,
    Extension(caller): Extension<Arc<Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let traceparent = headers.get(trace::HEADER).map(|v| v.as_bytes());
    let response = handle(&api, &caller, &body, traceparent).await;
    api.metrics
        .http_request("/api/v1/events", response.status().as_u16());
    response
}

async fn handle(
    api: &EventsApi,
    caller: &Caller,
    body: &[u8],
    traceparent: Option<&[u8]>,
) -> Response {
    let events = match decode_body(body, api.max_event_bytes, api.max_batch_events) {
        Ok(events) => events,
        Err(refused) => {
            if refused.events > 0 {
                api.metrics.http_events("rejected", refused.events as u64);
            }
            return refused.into_response();
        }
    };
    if let Err(response) = own_tenant(api, caller, &events) {
        return *response;
    }
    match publish(api, &events, traceparent).await {
        Ok(()) => {
            api.metrics.http_events("accepted", events.len() as u64);
            (
                StatusCode::ACCEPTED,
                Json(Accepted {
                    accepted: events.len(),
                    event_ids: events.into_iter().map(|e| e.event_id).collect(),
                }),
            )
                .into_response()
        }
        Err(why) => {
            tracing::warn!(error = %why, "publishing HTTP events failed");
            let mut resp = rejected(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!(
                    "the events could not be published ({why}); retry later, the same event_ids are safe to resend"
                ),
                Vec::new(),
            );
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            resp
        }
    }
}

/// A request body refused as a whole: its answer, and how many events it
/// held (0 when it could not be split into events).
#[derive(Debug)]
pub struct Refused {
    status: StatusCode,
    body: Rejected,
    /// Events in the refused body.
    pub events: usize,
}

impl Refused {
    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The events of a request body (one object, or an array of 1 to
/// `max_batch_events`), each validated as the ingest stage validates
/// `events.raw` (`max_event_bytes` each); or why none is taken: a batch
/// is all or nothing. Pure: the fuzz target `json_batch` runs it.
pub fn decode_body(
    body: &[u8],
    max_event_bytes: usize,
    max_batch_events: usize,
) -> Result<Vec<GameEvent>, Refused> {
    let refused = |status, error, message, errors, events| Refused {
        status,
        body: Rejected {
            error,
            message,
            errors,
        },
        events,
    };
    let raws = split_body(body).map_err(|e| {
        refused(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not a JSON object or array of objects: {e}"),
            Vec::new(),
            0,
        )
    })?;
    if raws.is_empty() || raws.len() > max_batch_events {
        return Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "batch_size",
            format!(
                "expected 1 to {max_batch_events} events, found {}",
                raws.len()
            ),
            Vec::new(),
            0,
        ));
    }
    let mut events: Vec<GameEvent> = Vec::with_capacity(raws.len());
    let mut errors = Vec::new();
    let mut invalid = 0usize;
    for (i, raw) in raws.iter().enumerate() {
        match validate(Some(raw.get().as_bytes()), max_event_bytes) {
            Ok(e) => events.push(e),
            Err(e) => {
                invalid += 1;
                if errors.len() < MAX_LISTED_ERRORS {
                    errors.push(field_error(i, &e));
                }
            }
        }
    }
    if invalid > 0 {
        let message = match &errors[..] {
            [one] if raws.len() == 1 => one.message.clone(),
            _ => format!(
                "{invalid} of {} events are invalid; none was published",
                raws.len()
            ),
        };
        return Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            message,
            errors,
            raws.len(),
        ));
    }
    Ok(events)
}

/// Refuses `events` unless every one is of the caller's tenant.
fn own_tenant(api: &EventsApi, caller: &Caller, events: &[GameEvent]) -> Result<(), Box<Response>> {
    let foreign: Vec<FieldError> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| !caller.sees(&e.tenant_id))
        .take(MAX_LISTED_ERRORS)
        .map(|(index, e)| FieldError {
            index,
            reason: "foreign_tenant",
            field: Some("tenant_id".into()),
            message: format!("tenant_id {:?} is not this key's tenant", e.tenant_id),
        })
        .collect();
    if !foreign.is_empty() {
        api.metrics.http_events("rejected", events.len() as u64);
        return Err(Box::new(rejected(
            StatusCode::FORBIDDEN,
            "foreign_tenant",
            format!(
                "the key `{}` may publish events of tenant {:?} only; none was published",
                caller.name,
                caller.tenant.as_deref().unwrap_or_default()
            ),
            foreign,
        )));
    }
    Ok(())
}

/// Publishes `events` in the trace the request names (its `traceparent`
/// header), or each in a new one (sampled), as the ingest stage does.
async fn publish(
    api: &EventsApi,
    events: &[GameEvent],
    traceparent: Option<&[u8]>,
) -> Result<(), ConnectorError> {
    let mut records: Vec<OutRecord> = events
        .iter()
        .map(|e| event_record(&api.codec, &api.topic, e, traceparent))
        .collect();
    let spans = trace::link_batch(STAGE, &mut records, SystemTime::now());
    let result = send_all(api, &records).await;
    let why = result.as_ref().err().map(ToString::to_string);
    spans.end(result.is_ok(), why.as_deref());
    result
}

async fn send_all(api: &EventsApi, records: &[OutRecord]) -> Result<(), ConnectorError> {
    let failed = |source| ConnectorError::Kafka {
        operation: format!("produce to {}", api.topic),
        source,
    };
    let mut deliveries = Vec::with_capacity(records.len());
    for r in records {
        let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&r.topic).headers(r.kafka_headers());
        if let Some(payload) = &r.payload {
            record = record.payload(payload);
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        let delivery = enqueue(&api.producer, record).await.map_err(failed)?;
        deliveries.push(delivery);
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(failed(e)),
            // The producer shut down before it answered.
            Err(_) => return Err(failed(rdkafka::error::KafkaError::Canceled)),
        }
    }
    Ok(())
}
