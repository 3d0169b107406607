//! `[http.auth]`: the API keys the HTTP server accepts, each stored as the
//! SHA-256 of the key (never the key itself), with its roles and tenant.
//! Keys come from the topology and from a keys file that is re-read when
//! it changes, so keys rotate without a restart (`docs/operators.md`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, ConfigProblem};

/// What a key may do. `admin` may do everything.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Deserialize,
    Serialize,
    PartialOrd,
    Ord,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including erasures and key administration.
    Admin,
    /// Operates the pipeline: metrics, account lookups, withdrawal checks.
    Operator,
    /// Reads: metrics and account lookups.
    Viewer,
    /// A game server publishing events (`POST /api/v1/events`).
    Producer,
    /// A game backend asking about accounts and withdrawals.
    Service,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Viewer,
        Role::Producer,
        Role::Service,
    ];

    /// The role's name in config and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Producer => "producer",
            Role::Service => "service",
        }
    }
}

/// One accepted key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Who holds it (logged with each request; never secret).
    pub name: String,
    /// The SHA-256 of the key, 64 hex digits (`kusanagi keys new` prints it).
    pub sha256: String,
    /// What it may do.
    pub roles: Vec<Role>,
    /// The only tenant whose accounts and events it sees; absent: every tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// `[http.auth]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Keys listed in the topology (`[[http.auth.keys]]`).
    pub keys: Vec<KeyConfig>,
    /// A TOML file of more keys (`[[keys]]` entries, same fields), re-read
    /// within `reload_seconds` of a change. Env: `KUSANAGI_KEYS_FILE`.
    pub keys_file: Option<PathBuf>,
    /// Seconds between two checks of the keys file.
    pub reload_seconds: u64,
    /// Requests per second each key may make, sustained; over it a request
    /// is answered 429 with `Retry-After`. 0: no limit.
    pub requests_per_second_per_key: u32,
    /// Requests a key may make at once after a quiet spell.
    pub burst_per_key: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            keys_file: None,
            reload_seconds: 10,
            requests_per_second_per_key: 5_000,
            burst_per_key: 10_000,
        }
    }
}

/// The keys file's form.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyConfig>,
}

/// `entry` as a `[[keys]]` table of a keys file, after checking it; the
/// error lists every problem of the entry.
///
/// # Panics
///
/// Never for a checked entry: it is strings and roles, all plain TOML.
pub fn entry_toml(entry: &KeyConfig) -> Result<String, ConfigError> {
    let problems: Vec<ConfigProblem> = entry
        .validate()
        .into_iter()
        .map(|(key, message)| ConfigProblem { key, message })
        .collect();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            source_name: format!("key `{}`", entry.name),
            problems,
        });
    }
    Ok(toml::to_string(&KeysFile {
        keys: vec![entry.clone()],
    })
    .expect("a key entry is plain TOML"))
}

impl KeyConfig {
    /// Problems with this entry, as (key relative to the entry, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.name.trim().is_empty() {
            p.push((
                "name".into(),
                "expected the key holder's name, found \"\"".into(),
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            p.push((
                "sha256".into(),
                format!(
                    "expected 64 hex digits (the SHA-256 of the key, as `kusanagi keys new` prints), found {:?}",
                    self.sha256
                ),
            ));
        }
        if self.roles.is_empty() {
            p.push((
                "roles".into(),
                "expected at least one of admin, operator, viewer, producer, service".into(),
            ));
        }
        if self.tenant.as_deref().is_some_and(|t| t.trim().is_empty()) {
            p.push((
                "tenant".into(),
                "expected a tenant id, or no `tenant` for every tenant".into(),
            ));
        }
        p
    }
}

impl AuthConfig {
    /// Problems as (key under `http.auth`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            for (key, m) in k.validate() {
                p.push((format!("keys[{i}].{key}"), m));
            }
        }
        if !(1..=3_600).contains(&self.reload_seconds) {
            p.push((
                "reload_seconds".into(),
                format!("expected 1..=3600, found {}", self.reload_seconds),
            ));
        }
        if self.requests_per_second_per_key > 0 && self.burst_per_key == 0 {
            p.push((
                "burst_per_key".into(),
                "expected at least 1 with a rate limit, found 0".into(),
            ));
        }
        p
    }
}

/// Reads a keys file: every entry checked, problems named with the file
/// and the entry.
pub fn read_keys_file(path: &Path) -> Result<Vec<KeyConfig>, KeysError> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| KeysError::file(path, format!("cannot read the keys file: {e}")))?;
    parse_keys_file(&raw, path)
}

/// A keys file's text (`path` names it in errors): every entry checked.
pub fn parse_keys_file(raw: &str, path: &Path) -> Result<Vec<KeyConfig>, KeysError> {
    let file: KeysFile = toml::from_str(raw).map_err(|e| {
        KeysError::file(
            path,
            format!(
                "expected `[[keys]]` entries with name, sha256, roles and an optional tenant: {e}"
            ),
        )
    })?;
    let problems: Vec<String> = file
        .keys
        .iter()
        .enumerate()
        .flat_map(|(i, k)| {
            k.validate()
                .into_iter()
                .map(move |(key, m)| format!("key `keys[{i}].{key}`: {m}"))
        })
        .collect();
    if problems.is_empty() {
        Ok(file.keys)
    } else {
        Err(KeysError::file(path, problems.join("; ")))
    }
}

/// Why API keys cannot be loaded or made (the deployment's to fix, but for
/// a failing random source).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// A keys file, or a local run's admin key file, cannot be read,
    /// written or used.
    #[error("{}: {problem}", path.display())]
    File {
        /// The file (or its folder).
        path: PathBuf,
        /// What is wrong, and what was expected.
        problem: String,
    },
    /// Two entries hold the same key (the same SHA-256).
    #[error("the key of `{name}` is listed twice (same sha256); each key must have one entry")]
    Duplicate {
        /// The second entry's name.
        name: String,
    },
    /// The operating system gave no random bytes for a new key.
    #[error("the operating system gave no random bytes: {0}")]
    Random(String),
}

impl KeysError {
    /// A problem with the file at `path`.
    pub fn file(path: &Path, problem: impl Into<String>) -> Self {
        KeysError::File {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sha: &str) -> KeyConfig {
        KeyConfig {
            name: "game-eu".into(),
            sha256: sha.into(),
            roles: vec![Role::Producer],
            tenant: Some("game-a".into()),
        }
    }

    #[test]
    fn an_entry_is_written_as_toml_that_reads_back_and_a_bad_one_is_refused() {
        let e = KeyConfig {
            name: "ops \"eu\" \u{1b}".into(),
            ..key(&"ab".repeat(32))
        };
        let text = entry_toml(&e).unwrap();
        let back: KeysFile = toml::from_str(&text).unwrap();
        assert_eq!(back.keys, [e]);
        let bad = KeyConfig {
            tenant: Some(String::new()),
            ..key(&"ab".repeat(32))
        };
        assert!(entry_toml(&bad).unwrap_err().to_string().contains("tenant"));
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(AuthConfig::default().validate().is_empty());
    }

    #[test]
    fn a_key_entry_names_what_is_wrong() {
        assert!(key(&"ab".repeat(32)).validate().is_empty());
        let keys: Vec<_> = key("not-a-hash")
            .validate()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["sha256"]);
        let bad = KeyConfig {
            name: " ".into(),
            roles: vec![],
            tenant: Some(String::new()),
            ..key(&"0".repeat(64))
        };
        let keys: Vec<_> = bad.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["name", "roles", "tenant"]);
        let cfg = AuthConfig {
            keys: vec![key(&"0".repeat(64)), key("x")],
            ..AuthConfig::default()
        };
        assert_eq!(cfg.validate()[0].0, "keys[1].sha256");
    }

    #[test]
    fn a_keys_file_is_read_and_its_problems_name_the_file_and_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("keys.toml");
        std::fs::write(
            &path,
            format!(
                "[[keys]]\nname = \"ops\"\nsha256 = \"{}\"\nroles = [\"operator\"]\n",
                "a".repeat(64)
            ),
        )
        .unwrap();
        let keys = read_keys_file(&path).unwrap();
        assert_eq!(keys[0].roles, [Role::Operator]);
        assert_eq!(keys[0].tenant, None);
        std::fs::write(
            &path,
            "[[keys]]\nname = \"ops\"\nsha256 = \"x\"\nroles = [\"operator\"]\n",
        )
        .unwrap();
        let e = read_keys_file(&path).unwrap_err().to_string();
        assert!(
            e.contains("keys.toml") && e.contains("keys[0].sha256"),
            "{e}"
        );
        std::fs::write(&path, "[[keys]]\nname = \"ops\"\nroles = [\"root\"]\n").unwrap();
        let e = read_keys_file(&path).unwrap_err().to_string();
        assert!(e.contains("keys.toml") && e.contains("root"), "{e}");
    }
}
