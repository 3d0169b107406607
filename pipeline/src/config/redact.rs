//! Secrets in a topology, and the topology as TOML without them
//! (`kusanagi check-config`).
//!
//! A topology may hold secrets in two maps: librdkafka properties
//! (`[kafka.properties]`: `sasl.password`, `ssl.key.password`, ...) and the
//! S3 options (`[archive.s3]`: `secret_access_key`, `token`), and as the
//! password of a URL (`https://user:pass@host`). The API keys are kept as
//! their SHA-256 and the LLM key and the erasure secrets are named by
//! environment variable or file, so none of those is a secret here.
//! [`Topology::redacted`] replaces every secret with [`REDACTED`];
//! [`Topology::to_toml`] prints what a file would hold to load this
//! topology back, secrets replaced.

use std::collections::BTreeMap;

use super::Topology;

pub use kusanagi_connectors::secrets::{REDACTED, is_secret};

/// `map` with every secret value replaced, and URL passwords in the rest.
fn redact_map(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    kusanagi_connectors::secrets::redact_map(map)
        .into_iter()
        .map(|(k, v)| (k, redact_url(&v)))
        .collect()
}

/// `text` with the password of a URL replaced; anything else unchanged.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) if u.password().is_some() => {
            // Only fails for URLs that cannot have a password.
            let _ = u.set_password(Some(REDACTED));
            u.to_string()
        }
        _ => text.to_owned(),
    }
}

impl Topology {
    /// This topology with every secret replaced by [`REDACTED`].
    pub fn redacted(&self) -> Topology {
        let mut t = self.clone();
        t.kafka.properties = redact_map(&self.kafka.properties);
        t.kafka.bootstrap = redact_url(&self.kafka.bootstrap);
        t.archive.s3 = redact_map(&self.archive.s3);
        for url in [
            &mut t.archive.catalog,
            &mut t.archive.hot,
            &mut t.archive.warm,
            &mut t.archive.cold,
            &mut t.telemetry.otlp_endpoint,
        ] {
            *url = redact_url(url);
        }
        if let Some(m) = t.stages.analyze.model.as_mut() {
            m.base_url = redact_url(&m.base_url);
        }
        t
    }

    /// The topology as TOML, every key written out (defaults included) and
    /// every secret replaced by [`REDACTED`]: loading it gives this
    /// topology back, but for the secrets.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(&self.redacted())
    }
}

impl std::fmt::Debug for super::KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &redact_url(&self.bootstrap))
            .field("client_id", &self.client_id)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("message_max_bytes", &self.message_max_bytes)
            .field("static_membership", &self.static_membership)
            .field("properties", &redact_map(&self.properties))
            .finish()
    }
}

impl std::fmt::Debug for super::ArchiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveConfig")
            .field("catalog", &redact_url(&self.catalog))
            .field("hot", &redact_url(&self.hot))
            .field("warm", &redact_url(&self.warm))
            .field("cold", &redact_url(&self.cold))
            .field("warm_after_days", &self.warm_after_days)
            .field("cold_after_days", &self.cold_after_days)
            .field("s3", &redact_map(&self.s3))
            .field("subject_filter_fpp", &self.subject_filter_fpp)
            .finish()
    }
}

impl std::fmt::Debug for super::TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("traces", &self.traces)
            .field("otlp_endpoint", &redact_url(&self.otlp_endpoint))
            .field("sample_ratio", &self.sample_ratio)
            .field("service_name", &self.service_name)
            .finish()
    }
}

impl std::fmt::Debug for super::stages::analyze::ModelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelConfig")
            .field("provider", &self.provider)
            .field("base_url", &redact_url(&self.base_url))
            .field("model", &self.model)
            .field("api_key_env", &self.api_key_env)
            .field("requests_per_second", &self.requests_per_second)
            .field("burst", &self.burst)
            .field("max_concurrency", &self.max_concurrency)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_retries", &self.max_retries)
            .field("backoff_ms", &self.backoff_ms)
            .field("max_output_tokens", &self.max_output_tokens)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const WITH_SECRETS: &str = r#"
[kafka]
bootstrap = "broker-1:9092"
[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanisms" = "PLAIN"
"sasl.username" = "kusanagi"
"sasl.password" = "kafka-pass-4f9c2e"
"ssl.key.password" = "key-pass-77a1"

[archive]
hot = "s3://lake/hot"
[archive.s3]
endpoint = "http://minio:9000"
access_key_id = "AKIAEXAMPLE"
secret_access_key = "s3-secret-b81d0c"

[telemetry]
otlp_endpoint = "https://otel:otel-pass-19ce@collector:4318/v1/traces"

[stages.screen.thresholds]
r1_total_received = 5000000

[stages.analyze.model]
provider = "openai"
base_url = "https://llm:llm-pass-d00d@llm.internal/v1"
model = "m"
"#;

    const SECRETS: [&str; 5] = [
        "kafka-pass-4f9c2e",
        "key-pass-77a1",
        "s3-secret-b81d0c",
        "otel-pass-19ce",
        "llm-pass-d00d",
    ];

    fn topology() -> Topology {
        Topology::from_toml(WITH_SECRETS, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn check_config_prints_toml_that_loads_back_the_same_but_for_the_secrets() {
        let t = topology();
        let printed = t.to_toml().unwrap();
        let back = Topology::from_toml(&printed, Path::new("printed.toml")).unwrap();
        assert_eq!(back, t.redacted());
        assert_eq!(back.stages.screen.thresholds.r1_total_received, 5_000_000);
        assert_eq!(back.kafka.properties["sasl.username"], "kusanagi");
        assert_eq!(back.kafka.properties["sasl.password"], REDACTED);
        assert_eq!(back.archive.s3["secret_access_key"], REDACTED);
        assert_eq!(back.archive.s3["access_key_id"], "AKIAEXAMPLE");
        // Printed again, it is the same text: a fixed point.
        assert_eq!(back.to_toml().unwrap(), printed);
        // Every default is written out.
        assert!(printed.contains("batch_max_records = 5000"), "{printed}");
    }

    #[test]
    fn no_secret_is_printed_as_toml_or_by_debug() {
        let t = topology();
        for text in [t.to_toml().unwrap(), format!("{t:?}"), format!("{t:#?}")] {
            for secret in SECRETS {
                assert!(!text.contains(secret), "{secret} printed in:\n{text}");
            }
            assert!(text.contains(REDACTED));
        }
    }

    #[test]
    fn the_default_topology_prints_and_loads_back_unchanged() {
        let t = Topology::default();
        let back = Topology::from_toml(&t.to_toml().unwrap(), Path::new("printed.toml")).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn a_urls_password_is_replaced_and_the_rest_kept() {
        assert_eq!(
            redact_url("https://u:p@host:4318/v1"),
            "https://u:%3Credacted%3E@host:4318/v1"
        );
        assert_eq!(redact_url("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(redact_url("data/archive/hot"), "data/archive/hot");
    }
}
