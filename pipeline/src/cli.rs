//! The `kusanagi` command line: its commands and their arguments, as clap
//! parses them (`main.rs` carries them out).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kusanagi_pipeline::catalog::Tier;
use kusanagi_pipeline::config::Role;
use kusanagi_pipeline::stages::archive::Table;
use kusanagi_pipeline::stages::registry;

/// Kusanagi: real-time screening and archiving of game-economy events over Kafka.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// The topology file. Without one, the built-in defaults (embedded broker).
    #[arg(long, short, global = true, env = "KUSANAGI_TOPOLOGY")]
    pub topology: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run every enabled stage and the HTTP API in this process; with no
    /// broker configured, start the embedded one.
    Run {
        /// Also generate synthetic game traffic, show a live status line and
        /// print a summary at the end.
        #[arg(long)]
        demo: bool,
        /// Records the demo generates.
        #[arg(long, default_value_t = 20_000, requires = "demo")]
        demo_events: u64,
        /// Records per second the demo generates.
        #[arg(long, default_value_t = 2_000, requires = "demo")]
        demo_rate: u64,
        /// Keep running after the demo's summary (Ctrl-C stops).
        #[arg(long, requires = "demo")]
        keep_running: bool,
    },
    /// Run one stage against a Kafka cluster (`KAFKA_BOOTSTRAP`). Start as
    /// many copies as the input topic has partitions, each with its own
    /// `KUSANAGI_INSTANCE_ID`.
    Stage {
        /// The stage.
        #[arg(value_parser = stage_names())]
        name: String,
    },
    /// Run only the embedded Kafka-protocol broker.
    Broker {
        /// Address to listen on (overrides `embedded_broker.listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Where to keep its data (overrides `embedded_broker.data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check a topology file and print it with every default filled in.
    CheckConfig,
    /// Prints the OpenAPI 3.1 document of the HTTP API (every route; what
    /// `GET /api/v1/openapi.json` serves), for generating clients.
    Openapi,
    /// The archive catalog: every Parquet file, its tier and contents.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Run one tiering pass: move archive files hot -> warm -> cold by the
    /// age of their newest event, merging each hour's files.
    Tier {
        /// Take this RFC 3339 time as now.
        #[arg(long)]
        now: Option<String>,
        /// Print the moves without making them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-read every archive file and check its size, SHA-256 and rows
    /// against the catalog; exits non-zero on any mismatch.
    Verify {
        /// Only this table (events, screenings, transitions, audit).
        #[arg(long, value_parser = parse_table)]
        table: Option<Table>,
        /// Only this tier.
        #[arg(long, value_parser = parse_tier)]
        tier: Option<Tier>,
    },
    /// Return a table's rows of a time range from whatever tiers hold
    /// them, in event-time order.
    Restore {
        /// First day (2026-11-01) or instant (RFC 3339) included.
        #[arg(long)]
        from: String,
        /// Last day included, or first instant excluded.
        #[arg(long)]
        to: String,
        /// The table.
        #[arg(long, default_value = "events", value_parser = parse_table)]
        table: Table,
        /// Produce the events (Avro, keyed by target_id) to this topic.
        #[arg(long, conflicts_with = "out", required_unless_present = "out")]
        to_topic: Option<String>,
        /// Write `<table>.jsonl` into this folder.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Archive size and compression per table and tier.
    Stats {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask for the erasure of a data subject (an account id): publishes
    /// the request to `erasures`; the view answers 410 for it at once.
    Erase {
        /// The account id.
        subject: String,
        /// Who asks (recorded with the request).
        #[arg(long, default_value_t = default_requester())]
        by: String,
    },
    /// The erasures the archive recorded.
    Erasures {
        #[command(subcommand)]
        command: ErasuresCommand,
    },
    /// Deletion certificates: the signing key, fetching and checking them.
    Certificate {
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// API keys for the HTTP API.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a new random key: prints the key (once; nothing keeps it) and
    /// the `[[keys]]` entry, holding only its SHA-256, for the keys file.
    New {
        /// Who will hold it (shown in logs).
        #[arg(long)]
        name: String,
        /// A role it has (repeat for several).
        #[arg(long = "role", value_enum, required = true)]
        roles: Vec<Role>,
        /// The only tenant it sees (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Append the entry to this keys file (a running server picks it
        /// up within `http.auth.reload_seconds`); only the key is printed.
        #[arg(long)]
        keys_file: Option<PathBuf>,
    },
    /// Print the SHA-256 of a key read from standard input (to list an
    /// existing key).
    Hash,
}

#[derive(Subcommand)]
pub enum ErasuresCommand {
    /// One line per erasure: request, subject hash, status, files, rows,
    /// certificate.
    Ls {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CertificateCommand {
    /// Print the public key that verifies this deployment's certificates.
    Pubkey,
    /// Print the certificate of an erasure request, as stored.
    Get {
        /// The request id (`kusanagi erasures ls`).
        request_id: String,
    },
    /// Check a certificate file; exits non-zero if any byte was changed or
    /// another key signed it.
    Verify {
        /// The certificate file.
        file: PathBuf,
        /// The public key expected (64 hex digits); by default this
        /// deployment's (`gdpr.signing_key_file`).
        #[arg(long)]
        public_key: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum CatalogCommand {
    /// List the files.
    Ls {
        /// Only this table (events, screenings, transitions, audit).
        #[arg(long, value_parser = parse_table)]
        table: Option<Table>,
        /// Only this tier.
        #[arg(long, value_parser = parse_tier)]
        tier: Option<Tier>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a partition's archived offset back to the broker's log end,
    /// after the broker lost records it had acknowledged (the archive
    /// stage refuses the partition and logs `log_end`; docs/operators.md,
    /// "The broker went backwards"). The records the broker holds from
    /// there on are then archived, beside the lost ones already archived.
    Rewind {
        /// The topic (`events`, `screenings`, `accounts.transitions`, `audit`).
        #[arg(long)]
        topic: String,
        /// The partition.
        #[arg(long)]
        partition: i32,
        /// The new next offset to archive: the partition's log end.
        #[arg(long)]
        to: i64,
        /// Why (kept in the catalog's history).
        #[arg(long)]
        reason: String,
        /// Skip the check that the broker's log ends below the archived
        /// offset (for a partition the archive refused whose log has grown
        /// past that offset again since).
        #[arg(long)]
        force: bool,
    },
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    Tier::ALL
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| format!("expected hot, warm or cold, found {s:?}"))
}

fn parse_table(s: &str) -> Result<Table, String> {
    Table::from_name(s)
        .ok_or_else(|| format!("expected events, screenings, transitions or audit, found {s:?}"))
}

/// The registry's stages, each with what it does, for `kusanagi stage`.
fn stage_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        registry::STAGES
            .iter()
            .map(|s| clap::builder::PossibleValue::new(s.name).help(s.about)),
    )
}

fn default_requester() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    )
}
