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

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use kusanagi_pipeline::api::{self, Keys, Services, auth};
use kusanagi_pipeline::config::{KeyConfig, Role};
use kusanagi_pipeline::runtime::Metrics;
use kusanagi_pipeline::stages::view::View;
use kusanagi_schemas::{Account, AccountState, EventTime};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// The environment variable the child server reads the key's hash from.
const KEY_HASH_ENV: &str = "KUSANAGI_LOADTEST_KEY_SHA256";

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

/// Kills the child server when the run ends, however it ends.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(args: &ViewArgs, key: &str) -> anyhow::Result<(SocketAddr, Child)> {
    let exe = std::env::current_exe().context("finding this program")?;
    let mut child = Command::new(exe)
        .args([
            "view",
            "--serve",
            "--accounts",
            &args.accounts.to_string(),
            "--server-threads",
            &args.server_threads.to_string(),
        ])
        .env(KEY_HASH_ENV, auth::hash_key(key))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the server process")?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the server's address")?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("the server said {line:?}, not its address"))?;
    Ok((addr, child))
}

/// The child: an index of `--accounts` accounts behind the real router.
fn serve(args: &ViewArgs) -> anyhow::Result<()> {
    let hash = std::env::var(KEY_HASH_ENV).context("the key hash from the parent")?;
    let started = Instant::now();
    let view = Arc::new(View::new(1_000));
    {
        let mut index = view.write();
        let mut rng = SmallRng::seed_from_u64(args.seed);
        let at = EventTime::from_micros(1_795_000_000_000_000);
        for i in 0..args.accounts {
            let id = account_id(i);
            let mut a = Account::new(&id, &format!("game-{}", i % 4), at);
            (a.state, a.version) = match rng.random_range(0..100) {
                0..90 => (AccountState::Normal, 0),
                90..97 => (AccountState::RestrictedWithdrawal, 1),
                97..99 => (AccountState::UnderSurveillance, 2),
                _ => (AccountState::Banned, 3),
            };
            index.apply_account(&id, Some(a));
        }
    }
    view.set_ready(true);
    eprintln!(
        "server: {} accounts indexed in {:.1} s",
        args.accounts,
        started.elapsed().as_secs_f64()
    );
    let keys = Keys::of(vec![KeyConfig {
        name: "loadtest".into(),
        sha256: hash,
        roles: vec![Role::Viewer],
        tenant: None,
    }]);
    let app = api::router(Services {
        metrics: Metrics::new(),
        keys: Arc::new(keys),
        events: None,
        view: Some(view),
        erasures: None,
        overrides: None,
        max_body_bytes: 1 << 20,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .enable_all()
        .build()
        .context("starting the server runtime")?;
    rt.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind("127.0.0.1:0".parse().expect("an address"))?;
        let listener = socket.listen(4_096)?;
        println!("listening {}", listener.local_addr()?);
        axum::serve(listener, app).await
    })
    .context("serving")?;
    Ok(())
}

fn account_id(i: usize) -> String {
    format!("acct-{i:07}")
}

/// What the connections are doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WarmUp,
    Baseline,
    Lookups,
    Done,
}

/// One phase's figures.
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    failed: u64,
    seconds: f64,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            statuses: BTreeMap::new(),
            failed: 0,
            seconds: 0.0,
        }
    }

    fn requests(&self) -> u64 {
        self.latency.len()
    }

    fn per_second(&self) -> f64 {
        self.requests() as f64 / self.seconds.max(1e-9)
    }

    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1_000.0
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "requests": self.requests(),
            "requests_per_second": self.per_second(),
            "failed": self.failed,
            "statuses": self.statuses,
            "latency_ms": {
                "p50": self.ms(0.5), "p90": self.ms(0.9), "p99": self.ms(0.99),
                "p999": self.ms(0.999), "max": self.latency.max() as f64 / 1_000.0,
            },
        })
    }
}

/// The figures of a run.
struct ViewReport {
    connections: usize,
    connect_seconds: f64,
    baseline: Tally,
    lookups: Tally,
}

impl ViewReport {
    fn text(&self, args: &ViewArgs) -> String {
        let line = |name: &str, t: &Tally| {
            format!(
                "  {name:<9} {:>9} requests, {:>8.0} req/s | p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  max {:>8.3} ms | failed {}",
                t.requests(),
                t.per_second(),
                t.ms(0.5),
                t.ms(0.9),
                t.ms(0.99),
                t.ms(0.999),
                t.latency.max() as f64 / 1_000.0,
                t.failed
            )
        };
        let (b, l) = (&self.baseline, &self.lookups);
        format!(
            "Kusanagi view load test: GET /api/v1/accounts/{{id}} over {} accounts, {} connections ({} opened in {:.1} s), {}\n{}\n{}\n  lookups / healthz: p50 x{:.2}, p99 x{:.2}, req/s x{:.2}\n  lookup statuses: {:?}",
            args.accounts,
            args.connections,
            self.connections,
            self.connect_seconds,
            match args.rate {
                0 => "closed loop".to_owned(),
                r => format!("open loop at {r} req/s"),
            },
            line("healthz", b),
            line("lookups", l),
            l.ms(0.5) / b.ms(0.5).max(1e-9),
            l.ms(0.99) / b.ms(0.99).max(1e-9),
            l.per_second() / b.per_second().max(1e-9),
            l.statuses,
        )
    }

    fn json(&self, args: &ViewArgs) -> serde_json::Value {
        json!({
            "accounts": args.accounts,
            "connections": self.connections,
            "rate": args.rate,
            "server_threads": args.server_threads,
            "connect_seconds": self.connect_seconds,
            "baseline_healthz": self.baseline.json(),
            "lookups": self.lookups.json(),
        })
    }
}

/// State the connection tasks share (one client thread: no locks).
struct Shared {
    phase: Cell<Phase>,
    warm_up: RefCell<Tally>,
    baseline: RefCell<Tally>,
    lookups: RefCell<Tally>,
}

impl Shared {
    fn record(&self, phase: Phase, micros: u64, status: Option<u16>) {
        let tally = match phase {
            Phase::WarmUp => &self.warm_up,
            Phase::Baseline => &self.baseline,
            Phase::Lookups => &self.lookups,
            Phase::Done => return,
        };
        let mut t = tally.borrow_mut();
        match status {
            Some(s) => {
                t.latency.saturating_record(micros.max(1));
                *t.statuses.entry(s).or_default() += 1;
                if s != 200 {
                    t.failed += 1;
                }
            }
            None => t.failed += 1,
        }
    }
}

async fn drive(args: &ViewArgs, addr: SocketAddr, key: &str) -> anyhow::Result<ViewReport> {
    let shared = Rc::new(Shared {
        phase: Cell::new(Phase::WarmUp),
        warm_up: RefCell::new(Tally::new()),
        baseline: RefCell::new(Tally::new()),
        lookups: RefCell::new(Tally::new()),
    });
    let started = Instant::now();
    let mut senders = Vec::with_capacity(args.connections);
    for batch in (0..args.connections).collect::<Vec<_>>().chunks(500) {
        let mut connecting = Vec::with_capacity(batch.len());
        for _ in batch {
            connecting.push(tokio::task::spawn_local(connect(addr)));
        }
        for c in connecting {
            senders.push(c.await.context("a connect task")??);
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "client: {} connections open in {connect_seconds:.1} s",
        senders.len()
    );
    // Each connection's share of the rate: one request every `interval`.
    let interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64));
    let host = addr.to_string();
    let key: Rc<str> = Rc::from(key);
    let mut tasks = Vec::with_capacity(senders.len());
    for (i, sender) in senders.into_iter().enumerate() {
        let shared = Rc::clone(&shared);
        let (host, key) = (host.clone(), Rc::clone(&key));
        let accounts = args.accounts;
        let rng = SmallRng::seed_from_u64(args.seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
        // Spread the connections' first sends over one interval.
        let offset = interval.map(|iv| iv.mul_f64(i as f64 / args.connections as f64));
        tasks.push(tokio::task::spawn_local(connection_loop(
            sender, shared, host, key, accounts, rng, interval, offset,
        )));
    }
    let phases = [
        (Phase::WarmUp, Duration::from_secs(args.warm_up)),
        (Phase::Baseline, Duration::from_secs(args.duration)),
        (Phase::Lookups, Duration::from_secs(args.duration)),
    ];
    for (phase, length) in phases {
        shared.phase.set(phase);
        let t = Instant::now();
        tokio::time::sleep(length).await;
        let seconds = t.elapsed().as_secs_f64();
        match phase {
            Phase::Baseline => shared.baseline.borrow_mut().seconds = seconds,
            Phase::Lookups => shared.lookups.borrow_mut().seconds = seconds,
            _ => {}
        }
    }
    shared.phase.set(Phase::Done);
    for t in tasks {
        let _ = t.await;
    }
    let shared = Rc::try_unwrap(shared).map_err(|_| anyhow::anyhow!("tasks still running"))?;
    Ok(ViewReport {
        connections: args.connections,
        connect_seconds,
        baseline: shared.baseline.into_inner(),
        lookups: shared.lookups.into_inner(),
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let mut tries = 0;
    let stream = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if tries < 20 => {
                tries += 1;
                backoff(e, tries).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {addr}")),
        }
    };
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn backoff(e: std::io::Error, tries: u32) {
    if tries == 1 {
        eprintln!("client: connect failed ({e}); retrying");
    }
    tokio::time::sleep(Duration::from_millis(50 * u64::from(tries))).await;
}

#[allow(clippy::too_many_arguments)]
async fn connection_loop(
    mut sender: Sender,
    shared: Rc<Shared>,
    host: String,
    key: Rc<str>,
    accounts: usize,
    mut rng: SmallRng,
    interval: Option<Duration>,
    offset: Option<Duration>,
) {
    let mut next = offset.map(|o| tokio::time::Instant::now() + o);
    loop {
        let phase = shared.phase.get();
        if phase == Phase::Done {
            return;
        }
        // Open loop: wait for this request's slot, and count its latency
        // from the slot (a late send is the server's delay too).
        let scheduled = match (next, interval) {
            (Some(at), Some(iv)) => {
                tokio::time::sleep_until(at).await;
                next = Some(at + iv);
                at.into_std()
            }
            _ => Instant::now(),
        };
        let phase = shared.phase.get();
        let path = match phase {
            Phase::Baseline => "/healthz".to_owned(),
            Phase::Done => return,
            _ => format!(
                "/api/v1/accounts/{}",
                account_id(rng.random_range(0..accounts))
            ),
        };
        let req = Request::get(path)
            .header("host", &host)
            .header("x-api-key", &*key)
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let status = match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.into_body().collect().await {
                    Ok(_) => Some(status),
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        let micros = scheduled.elapsed().as_micros() as u64;
        shared.record(phase, micros, status);
        if status.is_none() {
            // The connection is gone: stop this one, the others go on.
            return;
        }
    }
}
