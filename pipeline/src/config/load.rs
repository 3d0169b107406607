//! Loading a topology: read the file, apply the environment, validate.
//!
//! Parsing is strict (`deny_unknown_fields`), and every error names the
//! file, the key path, the line, what was found and what was expected.
//! Validation is pure and collects every problem before failing, so an
//! operator fixes a file in one pass.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::Topology;

/// The longest `embedded_broker.group_initial_rebalance_delay_ms` taken.
const MAX_INITIAL_REBALANCE_DELAY_MS: u64 = 300_000;

/// One problem with a topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path (`stages.ingest.batch_max_records`).
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// A topology that cannot be used: the user's to fix; a retry does not help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read the topology file: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message already, so not a `source`: a
        /// report of the whole chain would say it twice).
        error: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{path}:{line}: key `{key}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending value (0 when unknown).
        line: usize,
        /// Dotted key path.
        key: String,
        /// What was found and what was expected.
        message: String,
    },
    /// The values parse but do not make a working topology.
    #[error("{source_name}: invalid topology:\n{}", render(.problems))]
    Invalid {
        /// The file, or `environment` for an override.
        source_name: String,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
}

fn render(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - key `{}`: {}", p.key, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

impl Topology {
    /// Reads `path`, applies environment overrides and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_toml(&raw, path)?.finish(path.display().to_string())
    }

    /// The built-in default topology (embedded broker), with environment
    /// overrides, validated.
    pub fn default_with_env() -> Result<Self, ConfigError> {
        Self::default().finish("built-in defaults".into())
    }

    /// Applies the environment overrides, then validates.
    fn finish(mut self, source_name: String) -> Result<Self, ConfigError> {
        self.apply_env(|k| std::env::var(k).ok());
        let problems = self.validate();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid {
                source_name,
                problems,
            })
        }
    }

    /// Parses TOML text; `path` is only used in error messages.
    pub fn from_toml(raw: &str, path: &Path) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(raw).map_err(|e| parse_error(path, raw, "", &e))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            parse_error(path, raw, &key, e.inner())
        })
    }

    /// Applies `KAFKA_BOOTSTRAP`, `KUSANAGI_INSTANCE_ID`, `KUSANAGI_HTTP_LISTEN`,
    /// `KUSANAGI_DATA_DIR`, `KUSANAGI_KEYS_FILE`, `KUSANAGI_TRACES`,
    /// `KUSANAGI_GDPR_SALT_FILE`, `KUSANAGI_GDPR_SIGNING_KEY_FILE`,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` and `RUST_LOG`, read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(v) = var("KAFKA_BOOTSTRAP") {
            self.kafka.bootstrap = v;
        }
        if let Some(v) = var("KUSANAGI_INSTANCE_ID") {
            self.instance.id = v;
        }
        if let Some(v) = var("KUSANAGI_HTTP_LISTEN") {
            self.http.listen = v;
        }
        if let Some(v) = var("KUSANAGI_DATA_DIR") {
            self.embedded_broker.data_dir = PathBuf::from(&v).join("broker");
            self.archive.relocate_defaults(Path::new(&v));
            self.gdpr.relocate_defaults(Path::new(&v));
        }
        if let Some(v) = var("KUSANAGI_KEYS_FILE") {
            self.http.auth.keys_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            self.telemetry.otlp_endpoint = v;
        }
        if let Some(v) = var("KUSANAGI_TRACES") {
            self.telemetry.traces = matches!(v.trim(), "1" | "true" | "yes" | "on");
        }
        if let Some(v) = var("KUSANAGI_GDPR_SALT_FILE") {
            self.gdpr.salt_file = PathBuf::from(v);
        }
        if let Some(v) = var("KUSANAGI_GDPR_SIGNING_KEY_FILE") {
            self.gdpr.signing_key_file = PathBuf::from(v);
        }
        if let Some(v) = var("RUST_LOG") {
            self.log.filter = v;
        }
    }

    /// Every problem with this topology (empty when it is usable).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut p: Vec<(String, String)> = Vec::new();
        self.validate_topics(&mut p);
        self.validate_endpoints(&mut p);
        let sections = [
            (
                "stages.ingest",
                self.stages.ingest.validate(&self.kafka, &self.topics),
            ),
            ("stages.screen", self.stages.screen.validate()),
            ("stages.decide", self.stages.decide.validate()),
            (
                "stages.analyze",
                self.stages.analyze.validate(|k| std::env::var(k).ok()),
            ),
            ("stages.archive", self.stages.archive.validate()),
            ("stages.tier", self.stages.tier.validate()),
            ("stages.view", self.stages.view.validate()),
            ("stages.compact", self.stages.compact.validate()),
            ("gdpr", self.gdpr.validate()),
            ("telemetry", self.telemetry.validate()),
            ("http.auth", self.http.auth.validate()),
            ("archive", self.archive.validate()),
        ];
        for (section, problems) in sections {
            for (key, problem) in problems {
                p.push((format!("{section}.{key}"), problem));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            p.push((
                "log.filter".into(),
                format!("expected a tracing filter such as `info`: {e}"),
            ));
        }
        p.into_iter()
            .map(|(key, message)| ConfigProblem { key, message })
            .collect()
    }

    /// `[topics]`: counts, names (valid, one topic each), retentions.
    fn validate_topics(&self, p: &mut Vec<(String, String)>) {
        let mut bad = |key: &str, message: String| p.push((key.into(), message));
        let t = &self.topics;
        if t.partitions < 1 {
            bad(
                "topics.partitions",
                format!("expected at least 1, found {}", t.partitions),
            );
        }
        if t.replication_factor < 1 {
            bad(
                "topics.replication_factor",
                format!("expected at least 1, found {}", t.replication_factor),
            );
        }
        let names = [
            ("topics.raw", &t.raw),
            ("topics.events", &t.events),
            ("topics.dead_letter", &t.dead_letter),
            ("topics.screenings", &t.screenings),
            ("topics.l2_requests", &t.l2_requests),
            ("topics.l2_verdicts", &t.l2_verdicts),
            ("topics.accounts", &t.accounts),
            ("topics.transitions", &t.transitions),
            ("topics.erasures", &t.erasures),
            ("topics.audit", &t.audit),
        ];
        for (key, name) in names {
            if let Some(why) = topic_name_problem(name) {
                bad(key, why);
            }
        }
        for (i, (key, name)) in names.iter().enumerate() {
            if let Some((other, _)) = names[..i].iter().find(|(_, n)| n == name) {
                bad(
                    key,
                    format!("expected a topic of its own, found {name:?}, the name of {other}"),
                );
            }
        }
        for (key, ms) in [
            (
                "topics.transitions_retention_ms",
                t.transitions_retention_ms,
            ),
            ("topics.evidence_retention_ms", t.evidence_retention_ms),
        ] {
            if ms < 3_600_000 && ms != -1 {
                bad(
                    key,
                    format!("expected at least 3600000 (an hour) or -1 (forever), found {ms}"),
                );
            }
        }
    }

    /// `[kafka]`, `[embedded_broker]`, `[http]`: timeouts, addresses, limits.
    fn validate_endpoints(&self, p: &mut Vec<(String, String)>) {
        let mut bad = |key: &str, message: String| p.push((key.into(), message));
        if self.kafka.session_timeout_ms < 1_000 {
            bad(
                "kafka.session_timeout_ms",
                format!(
                    "expected at least 1000, found {}",
                    self.kafka.session_timeout_ms
                ),
            );
        }
        if self.kafka.bootstrap.is_empty()
            && self.embedded_broker.listen.parse::<SocketAddr>().is_err()
        {
            bad(
                "embedded_broker.listen",
                format!(
                    "expected an address such as 127.0.0.1:9092, found {:?}",
                    self.embedded_broker.listen
                ),
            );
        }
        if self.embedded_broker.group_initial_rebalance_delay_ms > MAX_INITIAL_REBALANCE_DELAY_MS {
            bad(
                "embedded_broker.group_initial_rebalance_delay_ms",
                format!(
                    "expected 0..={MAX_INITIAL_REBALANCE_DELAY_MS} (up to 5 minutes), found {}",
                    self.embedded_broker.group_initial_rebalance_delay_ms
                ),
            );
        }
        if self.http.enabled && self.http.listen.parse::<SocketAddr>().is_err() {
            bad(
                "http.listen",
                format!(
                    "expected an address such as 127.0.0.1:8080, found {:?}",
                    self.http.listen
                ),
            );
        }
        if self.http.max_batch_events == 0 {
            bad(
                "http.max_batch_events",
                "expected at least 1, found 0".into(),
            );
        }
        if !(100..=3_600_000).contains(&self.http.request_timeout_ms) {
            bad(
                "http.request_timeout_ms",
                format!(
                    "expected 100..=3600000 (0.1 s to an hour), found {}",
                    self.http.request_timeout_ms
                ),
            );
        }
    }

    /// The instance id, or the host name when none is set.
    pub fn instance_id(&self) -> String {
        if !self.instance.id.is_empty() {
            return self.instance.id.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".into())
    }
}

/// What is wrong with `name` as a Kafka topic name, if anything.
fn topic_name_problem(name: &str) -> Option<String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let bad = name.is_empty()
        || name.len() > 249
        || !name.chars().all(legal)
        || name == "."
        || name == "..";
    bad.then(|| format!("expected a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -), found {name:?}"))
}

fn parse_error(path: &Path, raw: &str, key: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| raw[..s.start.min(raw.len())].matches('\n').count() + 1)
        .unwrap_or(0);
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        key: if key.is_empty() || key == "." {
            "(document)".into()
        } else {
            key.into()
        },
        message: e.message().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Topology, ConfigError> {
        Topology::from_toml(raw, Path::new("topo.toml"))
    }

    #[test]
    fn an_empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), Topology::default());
        assert!(Topology::default().validate().is_empty());
    }

    #[test]
    fn wrong_types_name_file_key_and_expectation() {
        let err = parse("[stages.ingest]\nbatch_max_records = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("topo.toml:2:"), "{err}");
        assert!(err.contains("stages.ingest.batch_max_records"), "{err}");
        assert!(err.contains("expected"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("[kafka]\nbootstrp = \"x:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bootstrp"), "{err}");
        assert!(
            err.contains("bootstrap"),
            "{err} should list the expected keys"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("[kafka]\nbootstrap = \n").unwrap_err().to_string();
        assert!(err.starts_with("topo.toml:2:"), "{err}");
    }

    #[test]
    fn validation_collects_every_problem() {
        let t = parse(
            "[topics]\npartitions = 0\nraw = \"bad name!\"\n[http]\nlisten = \"nope\"\n\
             [embedded_broker]\ngroup_initial_rebalance_delay_ms = 300001\n",
        )
        .unwrap();
        let problems = t.validate();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "topics.partitions",
                "topics.raw",
                "embedded_broker.group_initial_rebalance_delay_ms",
                "http.listen"
            ]
        );
        assert!(problems[2].message.contains("found 300001"), "{problems:?}");
    }

    #[test]
    fn http_limits_out_of_range_are_named() {
        let t = parse(
            "[http]\nrequest_timeout_ms = 5\n[http.auth]\nrequests_per_second_per_key = 10\nburst_per_key = 0\n",
        )
        .unwrap();
        let keys: Vec<String> = t.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["http.request_timeout_ms", "http.auth.burst_per_key"]);
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut t = Topology::default();
        t.apply_env(|k| match k {
            "KAFKA_BOOTSTRAP" => Some("kafka:9092".into()),
            "KUSANAGI_DATA_DIR" => Some("/var/lib/k".into()),
            _ => None,
        });
        assert_eq!(t.kafka.bootstrap, "kafka:9092");
        assert_eq!(
            t.embedded_broker.data_dir,
            PathBuf::from("/var/lib/k/broker")
        );
    }
}
