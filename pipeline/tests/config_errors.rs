//! A malformed topology fails at start, naming the file, the key and what
//! was expected.

mod common;

use std::process::Command;

use common::tempdir::TempDir;

fn check(content: &str) -> (bool, String, String) {
    let dir = TempDir::new("config");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, content).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .arg("--topology")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

#[test]
fn a_wrong_type_names_file_line_key_and_expectation() {
    let (ok, err, path) = check("[stages.ingest]\nbatch_max_records = \"lots\"\n");
    assert!(!ok);
    assert!(err.contains(&format!("{path}:2")), "{err}");
    assert!(err.contains("stages.ingest.batch_max_records"), "{err}");
    assert!(err.contains("expected"), "{err}");
}

#[test]
fn an_unknown_key_lists_the_known_ones() {
    let (ok, err, path) = check("[kafka]\nbootstrp = \"kafka:9092\"\n");
    assert!(!ok);
    assert!(
        err.contains(&path) && err.contains("bootstrp") && err.contains("bootstrap"),
        "{err}"
    );
}

#[test]
fn invalid_values_are_all_reported_at_once() {
    let (ok, err, path) = check("[topics]\npartitions = 0\nevents = \"no spaces allowed\"\n");
    assert!(!ok);
    assert!(err.contains(&path), "{err}");
    assert!(
        err.contains("topics.partitions") && err.contains("topics.events"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .args(["--topology", "/nonexistent/topology.toml", "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/topology.toml"), "{err}");
}

#[test]
fn the_shipped_topologies_are_valid() {
    for name in ["local.toml", "production.toml", "compose.toml"] {
        let path = common::workspace().join("topologies").join(name);
        let out = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
            .arg("--topology")
            .arg(&path)
            .arg("check-config")
            .env_remove("KAFKA_BOOTSTRAP")
            // production.toml names the analyze stage's key variable.
            .env("OPENAI_API_KEY", "sk-test")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_missing_model_key_fails_at_start_naming_the_variable() {
    let path = common::workspace().join("topologies/production.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .arg("--topology")
        .arg(&path)
        .arg("check-config")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("production.toml"), "{err}");
    assert!(err.contains("stages.analyze.model.api_key_env"), "{err}");
    assert!(err.contains("OPENAI_API_KEY"), "{err}");
}

#[test]
fn bad_api_keys_are_named_and_a_cluster_stage_without_keys_does_not_start() {
    let (ok, err, path) =
        check("[[http.auth.keys]]\nname = \"ops\"\nsha256 = \"abc\"\nroles = [\"operator\"]\n");
    assert!(!ok);
    assert!(
        err.contains(&path) && err.contains("http.auth.keys[0].sha256"),
        "{err}"
    );
    let (ok, err, _) =
        check("[[http.auth.keys]]\nname = \"ops\"\nsha256 = \"abc\"\nroles = [\"root\"]\n");
    assert!(!ok && err.contains("root"), "{err}");

    // Against a cluster, no key configured is refused before any connection.
    let dir = TempDir::new("nokeys");
    let out = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .args(["stage", "view"])
        .current_dir(dir.path())
        .env("KAFKA_BOOTSTRAP", "127.0.0.1:1")
        .env_remove("KUSANAGI_KEYS_FILE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no API keys are configured") && err.contains("kusanagi keys new"),
        "{err}"
    );
    // A keys file that does not exist is named.
    let out = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .args(["stage", "view"])
        .current_dir(dir.path())
        .env("KAFKA_BOOTSTRAP", "127.0.0.1:1")
        .env("KUSANAGI_KEYS_FILE", "missing-keys.toml")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("missing-keys.toml"),
        "{err}"
    );
}

#[test]
fn check_config_prints_loadable_toml_without_the_secrets() {
    let dir = TempDir::new("secrets");
    let path = dir.path().join("secret.toml");
    std::fs::write(
        &path,
        "[kafka.properties]\n\"sasl.username\" = \"kusanagi\"\n\"sasl.password\" = \"kafka-pass-5e1d\"\n\
         [archive.s3]\nsecret_access_key = \"s3-secret-a7c3\"\n",
    )
    .unwrap();
    let print = |path: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
            .arg("--topology")
            .arg(path)
            .arg("check-config")
            .env_remove("KAFKA_BOOTSTRAP")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(out.status.success(), "{}", text(&out.stderr));
        (text(&out.stdout), text(&out.stderr))
    };
    let (printed, err) = print(&path);
    for secret in ["kafka-pass-5e1d", "s3-secret-a7c3"] {
        assert!(
            !printed.contains(secret) && !err.contains(secret),
            "{secret}: {printed}{err}"
        );
    }
    assert!(
        printed.contains("\"sasl.username\" = \"kusanagi\""),
        "{printed}"
    );
    assert!(printed.contains("<redacted>"), "{printed}");
    // The output is a topology: checked again, it prints the same.
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    assert_eq!(print(&again).0, printed);
}
