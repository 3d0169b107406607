//! The child server of `kusanagi-loadtest view`: started (and killed at
//! the end) by the load test, an index of `--accounts` synthetic accounts
//! behind the view stage's real router.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use kusanagi_pipeline::api::{self, Keys, Services, auth};
use kusanagi_pipeline::config::{KeyConfig, Role};
use kusanagi_pipeline::runtime::Metrics;
use kusanagi_pipeline::stages::view::View;
use kusanagi_schemas::{Account, AccountState, EventTime};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{ViewArgs, account_id};

/// The environment variable the child server reads the key's hash from.
const KEY_HASH_ENV: &str = "KUSANAGI_LOADTEST_KEY_SHA256";

/// Kills the child server when the run ends, however it ends.
pub(super) struct ServerGuard(pub(super) Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn start_server(args: &ViewArgs, key: &str) -> anyhow::Result<(SocketAddr, Child)> {
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
pub(super) fn serve(args: &ViewArgs) -> anyhow::Result<()> {
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
            let key = kusanagi_schemas::AccountKey::new(a.tenant_id.clone(), id).kafka_key();
            index.apply_account(&key, Some(a));
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
