//! The client side of `kusanagi-loadtest view`: the keep-alive connections
//! on one thread, each sending lookups (or, in the baseline phase,
//! `GET /healthz`) in a closed or an open loop, timed into the phase's
//! `Tally`.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::report::{Tally, ViewReport};
use super::{ViewArgs, account_id};

/// What the connections are doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WarmUp,
    Baseline,
    Lookups,
    Done,
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

pub(super) async fn drive(
    args: &ViewArgs,
    addr: SocketAddr,
    key: &str,
) -> anyhow::Result<ViewReport> {
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
