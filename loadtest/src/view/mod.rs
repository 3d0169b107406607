//! `kusanagi-loadtest view`: latest-state lookups (`GET
//! /api/v1/accounts/{id}`) over many concurrent keep-alive connections.
//!
//! By default the server is a child process of the load test (`view
//! --serve`, its own file-descriptor budget) serving the view stage's real
//! router (API-key check, tenant check, the shared index) over an index of
//! `--accounts` synthetic accounts, so only the lookup path is measured:
//! the Kafka feed that fills the index in production is not on it. With
//! `--url` it drives a running deployment instead.
//!
//! Phases, on the same connections: a warm-up of lookups; a baseline of
//! `GET /healthz` (the HTTP path alone: no key, no index); then the
//! measured lookups of random accounts. The report gives both, and their
//! ratio. `--rate 0` (the default) is a closed loop, each connection
//! sending its next request when the answer comes (the most requests per
//! second, latency under saturation); `--rate R` is an open loop of R
//! requests per second over all connections, latency counted from each
//! request's scheduled time (no coordinated omission).
//!
//! The child server is in [`server`], the connections in [`client`], the
//! figures in [`report`].

mod client;
mod report;
mod server;

use std::path::PathBuf;

use anyhow::{Context, bail};
use kusanagi_pipeline::api::auth;

use client::drive;
use server::{ServerGuard, serve, start_server};

/// Options of `kusanagi-loadtest view`.
#[derive(clap::Args, Debug)]
pub struct ViewArgs {
    /// Accounts in the served index (ids `acct-0000000`..).
    #[arg(long, default_value_t = 1_000_000)]
    accounts: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Seconds of measured lookups (the baseline runs as long).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of warm-up lookups, not measured.
    #[arg(long, default_value_t = 3)]
    warm_up: u64,
    /// Requests per second over all connections; 0: as many as answered.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// A running view (http://host:port) to drive instead of a child server.
    #[arg(long, requires = "key")]
    url: Option<String>,
    /// The API key for `--url` (a key with viewer, operator, service or admin).
    #[arg(long, env = "KUSANAGI_API_KEY")]
    key: Option<String>,
    /// Worker threads of the child server.
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seed of the account picks.
    #[arg(long, default_value_t = 20_261_124)]
    seed: u64,
    /// Internal: be the child server.
    #[arg(long, hide = true)]
    serve: bool,
}

/// Runs `kusanagi-loadtest view`; `Ok(false)` when some lookups failed.
pub fn run(args: &ViewArgs) -> anyhow::Result<bool> {
    if args.serve {
        serve(args)?;
        return Ok(true);
    }
    if args.connections == 0 || args.accounts == 0 {
        bail!("--connections and --accounts must be at least 1");
    }
    let (addr, key, child) = match &args.url {
        Some(url) => {
            let hostport = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
                .with_context(|| format!("resolving {url}"))?
                .next()
                .with_context(|| format!("{url} resolves to no address"))?;
            (addr, args.key.clone().unwrap_or_default(), None)
        }
        None => {
            let key = auth::new_key()?;
            let (addr, child) = start_server(args, &key)?;
            (addr, key, Some(ServerGuard(child)))
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, drive(args, addr, &key));
    drop(child);
    let report = result?;
    println!("{}", report.text(args));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.json(args))? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.lookups.failed == 0 && report.baseline.failed == 0)
}

fn account_id(i: usize) -> String {
    format!("acct-{i:07}")
}
