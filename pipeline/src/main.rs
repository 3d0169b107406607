//! `kusanagi`: run the pipeline, one stage, or the embedded broker; and the
//! operator commands over the archive (catalog, tier, verify, restore, stats).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use kusanagi_pipeline::api::auth;
use kusanagi_pipeline::catalog::Tier;
use kusanagi_pipeline::config::{KeyConfig, LogFormat, Role, Topology};
use kusanagi_pipeline::demo::{self, DemoOptions};
use kusanagi_pipeline::ops::commands::{self, RestoreTarget};
use kusanagi_pipeline::ops::erasures;
use kusanagi_pipeline::run::{self, Brokers};
use kusanagi_pipeline::runtime::trace::Telemetry;
use kusanagi_pipeline::runtime::{Metrics, Shutdown};
use kusanagi_pipeline::stages::archive::Table;
use kusanagi_pipeline::stages::registry::{self, StageSpec};
use kusanagi_pipeline::stages::view::View;
use kusanagi_pipeline::stages::{archive, ingest, view};

/// Kusanagi: real-time screening and archiving of game-economy events over Kafka.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The topology file. Without one, the built-in defaults (embedded broker).
    #[arg(long, short, global = true, env = "KUSANAGI_TOPOLOGY")]
    topology: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
enum KeysCommand {
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
enum ErasuresCommand {
    /// One line per erasure: request, subject hash, status, files, rows,
    /// certificate.
    Ls {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CertificateCommand {
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
enum CatalogCommand {
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

fn load_topology(path: Option<&PathBuf>) -> anyhow::Result<Topology> {
    Ok(match path {
        Some(p) => Topology::load(p)?,
        None => Topology::default_with_env()?,
    })
}

fn init_logs(topology: &Topology, quiet_default: bool) {
    let filter = if quiet_default && std::env::var_os("RUST_LOG").is_none() {
        "warn".to_owned()
    } else {
        topology.log.filter.clone()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not in a file, journald or `docker logs`.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match topology.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(dispatch(cli)))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kusanagi: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let topology = load_topology(cli.topology.as_ref())?;
    match cli.command {
        Command::CheckConfig => {
            println!("{topology:#?}");
            Ok(())
        }
        Command::Catalog {
            command: CatalogCommand::Ls { table, tier, json },
        } => commands::catalog_ls(&topology, table.map(Table::name), tier, json).await,
        Command::Catalog {
            command:
                CatalogCommand::Rewind {
                    topic,
                    partition,
                    to,
                    reason,
                    force,
                },
        } => commands::catalog_rewind(&topology, &topic, partition, to, &reason, force).await,
        Command::Tier { now, dry_run } => {
            init_logs(&topology, true);
            commands::tier(&topology, now.as_deref(), dry_run).await
        }
        Command::Verify { table, tier } => {
            init_logs(&topology, true);
            commands::verify_cmd(&topology, table.map(Table::name), tier).await
        }
        Command::Restore {
            from,
            to,
            table,
            to_topic,
            out,
        } => {
            init_logs(&topology, true);
            let target = match (&to_topic, &out) {
                (Some(t), _) => RestoreTarget::Topic(t),
                (None, Some(d)) => RestoreTarget::Dir(d),
                (None, None) => bail!("give --to-topic T or --out DIR"),
            };
            let bootstrap = topology.kafka.bootstrap.clone();
            commands::restore_cmd(&topology, Some(&bootstrap), table, &from, &to, target).await
        }
        Command::Stats { json } => commands::stats_cmd(&topology, json).await,
        Command::Erasures {
            command: ErasuresCommand::Ls { json },
        } => erasures::erasures_ls(&topology, json).await,
        Command::Certificate { command } => match command {
            CertificateCommand::Pubkey => {
                println!("{}", erasures::public_key(&topology)?);
                Ok(())
            }
            CertificateCommand::Get { request_id } => {
                let bytes = erasures::certificate_bytes(&topology, &request_id).await?;
                use std::io::Write;
                std::io::stdout().write_all(&bytes)?;
                Ok(())
            }
            CertificateCommand::Verify { file, public_key } => {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                erasures::verify_cmd(
                    &topology,
                    &file.display().to_string(),
                    &bytes,
                    public_key.as_deref(),
                )
            }
        },
        Command::Keys { command } => keys_cmd(command),
        Command::Erase { subject, by } => {
            init_logs(&topology, true);
            erase_cmd(&topology, &subject, &by).await
        }
        Command::Broker { listen, data_dir } => {
            init_logs(&topology, false);
            let mut topology = topology;
            if let Some(l) = listen {
                topology.embedded_broker.listen = l;
            }
            if let Some(d) = data_dir {
                topology.embedded_broker.data_dir = d;
            }
            let brokers = Brokers::embed(&topology)?;
            println!(
                "embedded Kafka-protocol broker listening on {} (data in {})",
                brokers.bootstrap,
                topology.embedded_broker.data_dir.display()
            );
            let shutdown = Shutdown::new();
            run::shutdown_on_signal(shutdown).await;
            drop(brokers);
            Ok(())
        }
        Command::Stage { name } => {
            init_logs(&topology, false);
            if topology.kafka.bootstrap.is_empty() {
                bail!(
                    "`kusanagi stage` runs against a Kafka cluster: set KAFKA_BOOTSTRAP or kafka.bootstrap \
                     (use `kusanagi run` for the embedded broker)"
                );
            }
            let spec = registry::find(&name).context("clap checked the stage's name")?;
            let brokers = Brokers::connect_or_embed(&topology)?;
            serve(&topology, brokers, &[spec], None).await
        }
        Command::Run {
            demo,
            demo_events,
            demo_rate,
            keep_running,
        } => {
            init_logs(&topology, demo);
            let brokers = Brokers::connect_or_embed(&topology)?;
            if let Some(b) = &brokers.embedded {
                println!(
                    "embedded Kafka-protocol broker listening on {} (data in {}); any Kafka client can connect",
                    b.addr(),
                    topology.embedded_broker.data_dir.display()
                );
            }
            let demo = demo.then_some((
                DemoOptions {
                    events: demo_events,
                    rate: demo_rate.max(1),
                    seed: 20_261_124,
                },
                keep_running,
            ));
            serve(&topology, brokers, &registry::enabled(&topology), demo).await
        }
    }
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

/// Publishes an erasure request to the configured brokers, or to a local
/// `kusanagi run`'s embedded broker.
async fn erase_cmd(topology: &Topology, subject: &str, by: &str) -> anyhow::Result<()> {
    if subject.trim().is_empty() {
        bail!("expected an account id to erase, found \"\"");
    }
    let bootstrap = if topology.kafka.bootstrap.is_empty() {
        topology.embedded_broker.listen.clone()
    } else {
        topology.kafka.bootstrap.clone()
    };
    let settings = topology.kafka_settings(&bootstrap);
    run::prepare_topics(topology, &settings)
        .await
        .with_context(|| format!("reaching the brokers at {bootstrap}"))?;
    let producer: rdkafka::producer::FutureProducer = settings
        .producer_config()
        .create()
        .context("creating the producer")?;
    let request = kusanagi_pipeline::api::erasures::request(subject, by);
    kusanagi_pipeline::api::erasures::publish(&producer, &topology.topics.erasures, &request)
        .await
        .map_err(|e| anyhow::anyhow!("publishing the erasure request: {e}"))?;
    println!(
        "erasure requested: {} for subject {subject:?} at {} (topic `{}`)",
        request.request_id,
        request.requested_at.to_rfc3339(),
        topology.topics.erasures
    );
    Ok(())
}

fn keys_cmd(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New {
            name,
            mut roles,
            tenant,
            keys_file,
        } => {
            roles.sort();
            roles.dedup();
            let key = auth::new_key().map_err(anyhow::Error::msg)?;
            let entry = kusanagi_pipeline::config::auth::entry_toml(&KeyConfig {
                name: name.clone(),
                sha256: auth::hash_key(&key),
                roles,
                tenant,
            })
            .map_err(|e| anyhow::anyhow!("the key's entry: {e}"))?;
            match keys_file {
                Some(path) => {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    f.write_all(format!("\n{entry}").as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "Added `{name}` to {}. The key (shown once; only its hash is kept):",
                        path.display()
                    );
                    println!("{key}");
                }
                None => {
                    eprintln!("The key for {name} (shown once; Kusanagi keeps only its hash):");
                    println!("{key}");
                    eprintln!("\nAdd this entry to the keys file (or under [[http.auth.keys]]):\n");
                    eprint!("{entry}");
                }
            }
            Ok(())
        }
        KeysCommand::Hash => {
            let mut key = String::new();
            std::io::stdin()
                .read_line(&mut key)
                .context("reading the key from standard input")?;
            let key = key.trim();
            if key.is_empty() {
                bail!("expected a key on standard input, found nothing");
            }
            println!("{}", auth::hash_key(key));
            Ok(())
        }
    }
}

/// Runs `stages` and HTTP until a signal (or the demo's end).
async fn serve(
    topology: &Topology,
    brokers: Brokers,
    stages: &[&'static StageSpec],
    demo: Option<(DemoOptions, bool)>,
) -> anyhow::Result<()> {
    // Keys first: a server with no key would leave its routes open.
    let (keys, local_key) = run::load_keys(topology, brokers.embedded.is_some())?;
    let telemetry = Telemetry::install(&topology.telemetry)?;
    let result = serve_with(topology, brokers, stages, demo, keys, local_key).await;
    telemetry.shutdown();
    result
}

async fn serve_with(
    topology: &Topology,
    brokers: Brokers,
    stages: &[&'static StageSpec],
    demo: Option<(DemoOptions, bool)>,
    keys: Arc<kusanagi_pipeline::api::Keys>,
    local_key: Option<PathBuf>,
) -> anyhow::Result<()> {
    let settings = topology.kafka_settings(&brokers.bootstrap);
    run::prepare_topics(topology, &settings).await?;
    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    tokio::spawn(run::shutdown_on_signal(shutdown.clone()));
    let view = Arc::new(View::new(topology.stages.view.max_versions));

    let ctx = run::stage_context(topology, &settings, &metrics, &shutdown, &view);
    let mut handles = Vec::with_capacity(stages.len());
    for spec in stages {
        let handle = run::spawn_stage(spec, &ctx)
            .with_context(|| format!("starting the {} stage's thread", spec.name))?;
        handles.push((*spec, handle));
    }
    let runs = |name: &str| stages.iter().any(|s| s.name == name);
    let with_events = runs(ingest::STAGE);
    let serves_view = runs(view::STAGE).then(|| Arc::clone(&view));
    let http = if topology.http.enabled {
        let with_view = serves_view.is_some();
        let (addr, task) = run::serve_http(
            topology,
            &settings,
            &metrics,
            &shutdown,
            keys,
            with_events,
            serves_view,
        )
        .await?;
        let mut routes = Vec::new();
        if with_events {
            routes.push("POST /api/v1/events");
        }
        if with_view {
            routes.push("GET /api/v1/accounts/{id}[/at|/versions]");
            routes.push("POST /api/v1/withdrawals/check");
        }
        routes.extend(["GET /metrics", "GET /healthz"]);
        println!("HTTP API on http://{addr} ({})", routes.join(", "));
        if let Some(path) = local_key {
            println!(
                "API key (admin) of this local run: in {} (send it as X-API-KEY)",
                path.display()
            );
        }
        Some(task)
    } else {
        None
    };

    let mut failed = None;
    let show_archive = demo.is_some() && runs(archive::STAGE);
    if let Some((options, keep_running)) = demo {
        println!(
            "demo: sending {} records at {}/s to `{}`",
            options.events, options.rate, topology.topics.raw
        );
        let report = demo::run(topology, &settings, &metrics, options, &shutdown).await?;
        println!("{report}");
        if !report.complete {
            failed = Some("the demo did not see every record it sent");
        }
        if !keep_running {
            shutdown.trigger();
        }
    }
    // Run until a signal, the demo's end, or a stage thread ending on its own.
    while !shutdown.is_triggered() {
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
        if handles.iter().any(|(_, h)| h.is_finished()) {
            shutdown.trigger();
        }
    }
    if let Some(task) = http {
        let _ = task.await;
    }
    let mut first_error = None;
    for (spec, handle) in handles {
        match tokio::task::spawn_blocking(move || handle.join()).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                eprintln!("kusanagi: the {} stage stopped: {e}", spec.name);
                first_error.get_or_insert(anyhow::Error::from(e));
            }
            _ => {
                first_error.get_or_insert(anyhow::anyhow!("the {} stage panicked", spec.name));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if show_archive {
        match commands::archive_summary(topology).await {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("kusanagi: cannot read the archive's catalog: {e:#}"),
        }
    }
    drop(brokers);
    if let Some(why) = failed {
        bail!(why);
    }
    Ok(())
}
