//! OpenTelemetry traces of an event's way through the stages: ingest ->
//! screen -> decide -> analyze (-> decide, applying the verdict).
//!
//! The trace context travels in each record's W3C `traceparent` header.
//! A stage marks each record it produces with the [`TraceCause`] of the
//! record that caused it; the runtime ([`link_batch`]) then starts one span
//! per causing record (named after the stage, child of the cause's span),
//! writes the new span's `traceparent` on the outputs, and ends the span
//! when the transaction commits (an aborted one ends in error). New traces
//! start where events enter (the ingest stage, `POST /api/v1/events`),
//! sampled at `telemetry.sample_ratio`, unless the producer sent its own
//! `traceparent`, which is continued.
//!
//! Off by default (`[telemetry] traces = false`): the global tracer is then
//! OpenTelemetry's no-op one, which costs nothing and passes a record's
//! `traceparent` on unchanged, so a trace survives a stage that does not
//! export.

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use super::OutRecord;

/// The header that carries the trace context.
pub const HEADER: &str = "traceparent";

/// Which trace a produced record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TraceCause {
    /// None (dead letters; records of untraced inputs).
    #[default]
    None,
    /// A new trace, sampled at `telemetry.sample_ratio`: an event entering
    /// the pipeline.
    Root,
    /// The trace of the record that caused it: that record's `traceparent`.
    Parent(Vec<u8>),
}

impl TraceCause {
    /// The cause for outputs of a record carrying `traceparent`.
    pub fn of(traceparent: Option<&[u8]>) -> Self {
        traceparent.map_or(TraceCause::None, |t| TraceCause::Parent(t.to_vec()))
    }
}

struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == HEADER).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![HEADER]
    }
}

struct Out(Option<String>);

impl Injector for Out {
    fn set(&mut self, key: &str, value: String) {
        if key == HEADER {
            self.0 = Some(value);
        }
    }
}

/// The context a `traceparent` names (an empty one if it is malformed).
pub fn context_of(traceparent: &[u8]) -> Context {
    let text = std::str::from_utf8(traceparent).unwrap_or_default();
    TraceContextPropagator::new().extract(&One(text))
}

/// The `traceparent` of `cx`'s span, if it is valid and sampled.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    let mut out = Out(None);
    TraceContextPropagator::new().inject_context(cx, &mut out);
    out.0
}

/// A span of one stage handling one record, with the `traceparent` its
/// outputs carry.
pub struct StageSpan {
    span: BoxedSpan,
    traceparent: Option<String>,
}

impl StageSpan {
    /// Starts the span of `stage` for a record caused by `cause`, at `start`.
    pub fn start(stage: &'static str, cause: &TraceCause, start: SystemTime) -> Option<Self> {
        let parent = match cause {
            TraceCause::None => return None,
            TraceCause::Root => Context::new(),
            TraceCause::Parent(p) => context_of(p),
        };
        let tracer = global::tracer("kusanagi");
        let span = tracer
            .span_builder(stage)
            .with_kind(if matches!(cause, TraceCause::Root) {
                SpanKind::Producer
            } else {
                SpanKind::Consumer
            })
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("kusanagi.stage", stage),
            ])
            .start_with_context(&tracer, &parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        let traceparent = traceparent_of(&cx);
        Some(Self { span, traceparent })
    }

    /// The `traceparent` the span's outputs carry (`None`: not sampled).
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// Ends the span: its outputs were committed (`ok`) or not.
    pub fn end(mut self, ok: bool, why: Option<&str>) {
        if !ok {
            self.span
                .set_status(Status::error(why.unwrap_or("aborted").to_owned()));
        }
        self.span.end();
    }
}

/// The spans of one batch: ended together when its transaction ends.
#[derive(Default)]
pub struct BatchSpans(Vec<StageSpan>);

impl BatchSpans {
    /// Ends every span: committed, or aborted for `why`.
    pub fn end(self, committed: bool, why: Option<&str>) {
        for s in self.0 {
            s.end(committed, why);
        }
    }

    /// Spans in the batch.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No span in the batch.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Starts the spans of `stage` for a batch begun at `start`: one per
/// distinct cause (a [`TraceCause::Root`] record is its own cause), and
/// writes each output's `traceparent` header.
pub fn link_batch(stage: &'static str, out: &mut [OutRecord], start: SystemTime) -> BatchSpans {
    let mut spans: Vec<StageSpan> = Vec::new();
    let mut by_parent: HashMap<Vec<u8>, Option<usize>> = HashMap::new();
    for record in out.iter_mut() {
        let index = match &record.trace {
            TraceCause::None => continue,
            TraceCause::Root => StageSpan::start(stage, &record.trace, start).map(|s| {
                spans.push(s);
                spans.len() - 1
            }),
            TraceCause::Parent(p) => *by_parent.entry(p.clone()).or_insert_with(|| {
                StageSpan::start(stage, &record.trace, start).map(|s| {
                    spans.push(s);
                    spans.len() - 1
                })
            }),
        };
        if let Some(tp) = index.and_then(|i| spans[i].traceparent()) {
            record.headers.retain(|(k, _)| k != HEADER);
            record
                .headers
                .push((HEADER.to_owned(), tp.as_bytes().to_vec()));
        }
    }
    BatchSpans(spans)
}

/// The exporter of a process with tracing on; flushes at [`Telemetry::shutdown`].
pub struct Telemetry(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Telemetry").field(&self.0.is_some()).finish()
    }
}

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a bad `telemetry.otlp_endpoint`).
    #[error("telemetry: cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

impl Telemetry {
    /// Installs the global tracer `config` describes: an OTLP/HTTP
    /// exporter (protobuf) in batches, sampling new traces at
    /// `sample_ratio` and following the parent's decision otherwise. Off:
    /// nothing is installed (the no-op tracer).
    pub fn install(config: &crate::config::TelemetryConfig) -> Result<Self, TelemetryError> {
        if !config.traces {
            return Ok(Self(None));
        }
        let (endpoint, ratio, name) = (
            config.otlp_endpoint.clone(),
            config.sample_ratio,
            config.service_name.clone(),
        );
        // The exporter's blocking HTTP client must not be made inside the
        // async runtime: build it on a thread of its own.
        let provider = std::thread::spawn(move || {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint)
                .with_timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            let sampler = opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(ratio),
            ));
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(name)
                .build();
            Ok::<_, TelemetryError>(
                opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_sampler(sampler)
                    .with_resource(resource)
                    .build(),
            )
        })
        .join()
        .map_err(|_| TelemetryError::Exporter("building it panicked".into()))??;
        global::set_tracer_provider(provider.clone());
        global::set_text_map_propagator(TraceContextPropagator::new());
        tracing::info!(endpoint = %config.otlp_endpoint, ratio = config.sample_ratio, "exporting traces over OTLP/HTTP");
        Ok(Self(Some(provider)))
    }

    /// Exports what is left and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.0 {
            let _ = std::thread::spawn(move || {
                if let Err(e) = p.shutdown() {
                    tracing::warn!(error = %e, "telemetry: flushing the last spans failed");
                }
            })
            .join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn out(trace: TraceCause) -> OutRecord {
        OutRecord {
            topic: "t".into(),
            partition: None,
            key: None,
            payload: Some(Vec::new()),
            headers: Vec::new(),
            timestamp_ms: None,
            trace,
        }
    }

    #[test]
    fn with_tracing_off_a_traceparent_passes_through_and_nothing_new_starts() {
        // No provider installed: OpenTelemetry's no-op tracer.
        let mut batch = vec![
            out(TraceCause::Parent(PARENT.as_bytes().to_vec())),
            out(TraceCause::Root),
            out(TraceCause::None),
        ];
        let spans = link_batch("screen", &mut batch, SystemTime::now());
        assert_eq!(
            batch[0].headers,
            [(HEADER.to_owned(), PARENT.as_bytes().to_vec())]
        );
        assert!(batch[1].headers.is_empty(), "no trace is started when off");
        assert!(batch[2].headers.is_empty());
        spans.end(true, None);
    }

    #[test]
    fn a_malformed_traceparent_starts_nothing() {
        let mut batch = vec![out(TraceCause::Parent(b"00-nonsense".to_vec()))];
        link_batch("screen", &mut batch, SystemTime::now()).end(true, None);
        assert!(batch[0].headers.is_empty());
    }
}
