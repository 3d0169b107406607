//! `kusanagi`: run the pipeline, one stage, or the embedded broker; and the
//! operator commands over the archive (catalog, tier, verify, restore, stats).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod cli;
mod commands;

use anyhow::{Context, bail};
use clap::Parser;
use cli::{CatalogCommand, CertificateCommand, Cli, Command, ErasuresCommand, KeysCommand};
use commands::{RestoreTarget, erasures};
use kusanagi_pipeline::api::auth;
use kusanagi_pipeline::config::{KeyConfig, LogFormat, Topology};
use kusanagi_pipeline::demo::{self, DemoOptions};
use kusanagi_pipeline::run::{self, Brokers};
use kusanagi_pipeline::runtime::trace::Telemetry;
use kusanagi_pipeline::runtime::{Metrics, Shutdown};
use kusanagi_pipeline::stages::archive::Table;
use kusanagi_pipeline::stages::registry::{self, StageSpec};
use kusanagi_pipeline::stages::view::View;
use kusanagi_pipeline::stages::{archive, ingest, view};

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

/// jemalloc, not glibc's malloc: the stages allocate and free small
/// buffers for every record (decoded events, window entries, encoded
/// records) on one thread each, and glibc's allocator was about a fifth of
/// their CPU in the drain benchmark. With jemalloc the stages take about a
/// fifth less CPU per event; mimalloc made the screen cheaper but the
/// archive and the broker's large buffers dearer (docs/loadtest.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
            print!(
                "{}",
                topology.to_toml().context("writing the topology as TOML")?
            );
            Ok(())
        }
        Command::Openapi => {
            let doc = kusanagi_pipeline::api::full_document(topology.http.max_batch_events);
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).context("writing the document")?
            );
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
        Command::Certificate { command } => certificate_cmd(&topology, command).await,
        Command::Keys { command } => keys_cmd(command),
        Command::Erase { subject, by } => {
            init_logs(&topology, true);
            erase_cmd(&topology, &subject, &by).await
        }
        Command::Broker { listen, data_dir } => broker_cmd(topology, listen, data_dir).await,
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
            let demo = demo.then_some((
                DemoOptions {
                    events: demo_events,
                    rate: demo_rate.max(1),
                    seed: 20_261_124,
                },
                keep_running,
            ));
            run_cmd(&topology, demo).await
        }
    }
}

/// `kusanagi run`: every enabled stage, on the configured brokers or the
/// embedded one.
async fn run_cmd(topology: &Topology, demo: Option<(DemoOptions, bool)>) -> anyhow::Result<()> {
    init_logs(topology, demo.is_some());
    let brokers = Brokers::connect_or_embed(topology)?;
    if let Some(b) = &brokers.embedded {
        println!(
            "embedded Kafka-protocol broker listening on {} (data in {}); any Kafka client can connect",
            b.addr(),
            topology.embedded_broker.data_dir.display()
        );
    }
    serve(topology, brokers, &registry::enabled(topology), demo).await
}

/// `kusanagi broker`: only the embedded broker, until a signal.
async fn broker_cmd(
    mut topology: Topology,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    init_logs(&topology, false);
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

/// `kusanagi certificate ...`.
async fn certificate_cmd(topology: &Topology, command: CertificateCommand) -> anyhow::Result<()> {
    match command {
        CertificateCommand::Pubkey => {
            println!("{}", erasures::public_key(topology)?);
            Ok(())
        }
        CertificateCommand::Get { request_id } => {
            let bytes = erasures::certificate_bytes(topology, &request_id).await?;
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
            Ok(())
        }
        CertificateCommand::Verify { file, public_key } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            erasures::verify_cmd(
                topology,
                &file.display().to_string(),
                &bytes,
                public_key.as_deref(),
            )
        }
    }
}

/// Publishes an erasure request/// Publishes an erasure request to the configured brokers, or to a local
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
            let key = auth::new_key()?;
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
        let (addr, task) = run::serve_http(
            topology,
            &settings,
            &metrics,
            &shutdown,
            keys,
            with_events,
            serves_view.clone(),
        )
        .await?;
        print_routes(
            addr,
            with_events,
            serves_view.is_some(),
            local_key.as_deref(),
        );
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
    join_stages(handles).await?;
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

/// Says where the HTTP API listens, what it serves, and where the local
/// admin key is.
fn print_routes(
    addr: std::net::SocketAddr,
    with_events: bool,
    with_view: bool,
    local_key: Option<&std::path::Path>,
) {
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
}

/// Waits for every stage thread; the first error (or panic) is returned.
async fn join_stages(
    handles: Vec<(
        &'static StageSpec,
        std::thread::JoinHandle<Result<(), kusanagi_pipeline::runtime::RuntimeError>>,
    )>,
) -> anyhow::Result<()> {
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
    first_error.map_or(Ok(()), Err)
}
