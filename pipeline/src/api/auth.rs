//! API keys: who is calling, and may they call this route.
//!
//! A request names its key in `X-API-KEY` (or `Authorization: Bearer`). The
//! server holds only each key's SHA-256, so a leaked config leaks no key.
//! No key, or an unknown one: `401`. A key over its rate limit
//! (`http.auth.requests_per_second_per_key`): `429` with `Retry-After`. A
//! known key without a role the route accepts: `403`. The route then sees
//! the [`Caller`] (its tenant limits what it sees). Keys from a keys file
//! are re-read when the file changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::TryRngCore;
use sha2::{Digest, Sha256};

use super::error::Problem;
use crate::config::auth::{KeysError, read_keys_file};
use crate::config::{AuthConfig, KeyConfig, Role};
use crate::runtime::{Metrics, Shutdown};

/// Who is calling: the holder of a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key holder's name.
    pub name: String,
    /// What the key may do.
    pub roles: Vec<Role>,
    /// The only tenant it sees; `None`: every tenant.
    pub tenant: Option<String>,
}

impl Caller {
    /// Whether the key holds one of `roles` (an admin holds all).
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles
            .iter()
            .any(|r| *r == Role::Admin || roles.contains(r))
    }

    /// Whether the key sees data of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }
}

/// The SHA-256 of a key, as 64 hex digits (what config stores).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key: `ksk_` and 256 bits from the operating system.
pub fn new_key() -> Result<String, KeysError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| KeysError::Random(e.to_string()))?;
    Ok(format!("ksk_{}", hex::encode(bytes)))
}

type Ring = HashMap<[u8; 32], Arc<Caller>>;

/// Requests per key over time, by key name (a rotated key keeps its
/// holder's budget).
type KeyLimiter = governor::RateLimiter<
    String,
    governor::state::keyed::HashMapStateStore<String>,
    governor::clock::DefaultClock,
>;

/// A limiter of `per_second` requests a second per key, `burst` at once
/// (`burst` 0: as many as `per_second`); `None` when `per_second` is 0.
fn limiter(per_second: u32, burst: u32) -> Option<KeyLimiter> {
    let rate = std::num::NonZeroU32::new(per_second)?;
    let burst = std::num::NonZeroU32::new(burst).unwrap_or(rate);
    let quota = governor::Quota::per_second(rate).allow_burst(burst);
    Some(KeyLimiter::hashmap_with_clock(
        quota,
        governor::clock::DefaultClock::default(),
    ))
}

fn digest(hex_sha: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_sha, &mut out).ok()?;
    Some(out)
}

fn ring(entries: impl IntoIterator<Item = KeyConfig>) -> Ring {
    entries
        .into_iter()
        .filter_map(|k| {
            let d = digest(&k.sha256.to_ascii_lowercase())?;
            Some((
                d,
                Arc::new(Caller {
                    name: k.name,
                    roles: k.roles,
                    tenant: k.tenant,
                }),
            ))
        })
        .collect()
}

/// The keys a server accepts, and how often each may be used.
pub struct Keys {
    fixed: Vec<KeyConfig>,
    file: Option<PathBuf>,
    reload: Duration,
    current: RwLock<(Arc<Ring>, Option<SystemTime>)>,
    /// `None`: no rate limit. With the limit, in requests per second.
    limit: Option<(KeyLimiter, u32)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("fixed", &self.fixed.len())
            .field("file", &self.file)
            .field("accepted", &self.len())
            .field(
                "requests_per_second_per_key",
                &self.limit.as_ref().map(|l| l.1),
            )
            .finish()
    }
}

impl Keys {
    /// The keys of `config` (and its keys file), plus `extra` ones.
    pub fn load(config: &AuthConfig, extra: Vec<KeyConfig>) -> Result<Self, KeysError> {
        let mut fixed = config.keys.clone();
        fixed.extend(extra);
        let keys = Self {
            fixed,
            file: config.keys_file.clone(),
            reload: Duration::from_secs(config.reload_seconds),
            current: RwLock::new((Arc::new(Ring::new()), None)),
            limit: None,
        }
        .with_rate_limit(config.requests_per_second_per_key, config.burst_per_key);
        let (ring, modified) = keys.read()?;
        *keys.current.write().unwrap_or_else(PoisonError::into_inner) = (ring, modified);
        Ok(keys)
    }

    /// Keys of a fixed list (tests, benches).
    pub fn of(entries: Vec<KeyConfig>) -> Self {
        Self {
            current: RwLock::new((Arc::new(ring(entries.clone())), None)),
            fixed: entries,
            file: None,
            reload: Duration::from_secs(3_600),
            limit: None,
        }
    }

    /// These keys, each limited to `per_second` requests a second
    /// sustained and `burst` at once (`per_second` 0: no limit).
    pub fn with_rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.limit = limiter(per_second, burst).map(|l| (l, per_second));
        self
    }

    /// `Err(wait)` when `caller` is over its rate limit: how long until it
    /// may call again.
    pub fn admit(&self, caller: &Caller) -> Result<(), Duration> {
        let Some((limiter, _)) = &self.limit else {
            return Ok(());
        };
        limiter.check_key(&caller.name).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()))
        })
    }

    /// The limit in requests per second per key, if any.
    pub fn rate_limit(&self) -> Option<u32> {
        self.limit.as_ref().map(|l| l.1)
    }

    /// Reads the keys; the file's modification time is taken before it is
    /// read, so a write that lands during the read is seen at the next check.
    fn read(&self) -> Result<(Arc<Ring>, Option<SystemTime>), KeysError> {
        let mut entries = self.fixed.clone();
        let mut modified = None;
        if let Some(path) = &self.file {
            modified = mtime(path);
            let from_file = read_keys_file(path)?;
            // An emptied file is far likelier a write caught half-way (or
            // a mistake) than a wish to lock every holder out.
            if from_file.is_empty() && self.held_from_file() > 0 {
                return Err(KeysError::file(
                    path,
                    "no [[keys]] entry; the keys in use are kept (remove entries one by one, or restart to start empty)",
                ));
            }
            entries.extend(from_file);
        }
        let mut seen = std::collections::HashSet::new();
        for e in &entries {
            if !seen.insert(e.sha256.to_ascii_lowercase()) {
                return Err(KeysError::Duplicate {
                    name: e.name.clone(),
                });
            }
        }
        Ok((Arc::new(ring(entries)), modified))
    }

    /// Keys in use that came from the keys file.
    fn held_from_file(&self) -> usize {
        let ring = self.current.read().unwrap_or_else(PoisonError::into_inner);
        ring.0.len().saturating_sub(self.fixed.len())
    }

    /// How many keys are accepted now.
    pub fn len(&self) -> usize {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .len()
    }

    /// No key is accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The caller holding `key`, if it is accepted.
    pub fn find(&self, key: &str) -> Option<Arc<Caller>> {
        let d: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let ring = Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .0,
        );
        ring.get(&d).cloned()
    }

    /// Re-reads the keys file if it changed; a file that no longer reads
    /// keeps the keys as they were (and says why).
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.file else { return };
        let seen = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1;
        if mtime(path) == seen {
            return;
        }
        match self.read() {
            Ok((ring, modified)) => {
                tracing::info!(keys = ring.len(), file = %path.display(), "API keys reloaded");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = (ring, modified);
            }
            Err(e) => {
                tracing::error!(error = %e, "the keys file changed but cannot be used; keeping the keys in use");
                // Do not log it again until the file changes once more.
                self.current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .1 = mtime(path);
            }
        }
    }

    /// Re-reads the keys file when it changes, until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: Shutdown) {
        if self.file.is_none() {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.reload) => self.reload_if_changed(),
            }
        }
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The admin key of a local (embedded) run with no keys configured: read
/// from `<data_dir>/admin.key`, created there (mode 0600) the first time.
pub fn local_admin_key(data_dir: &Path) -> Result<(String, PathBuf), KeysError> {
    let path = data_dir.join("admin.key");
    if let Ok(k) = std::fs::read_to_string(&path) {
        let k = k.trim().to_owned();
        if !k.is_empty() {
            return Ok((k, path));
        }
    }
    let key = new_key()?;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| KeysError::file(data_dir, format!("cannot create the folder: {e}")))?;
    // A fresh file (an empty or odd one is replaced, never written through
    // a link), readable by its owner only.
    let _ = std::fs::remove_file(&path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{key}\n").as_bytes()))
        .map_err(|e| KeysError::file(&path, format!("cannot write: {e}")))?;
    Ok((key, path))
}

/// What a route's guard checks.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The accepted keys.
    pub keys: Arc<Keys>,
    /// The roles the route accepts (an admin is always accepted).
    pub roles: &'static [Role],
    /// The route, for metrics.
    pub route: &'static str,
    /// The route shows every tenant's data (`/metrics`): keys bound to a
    /// tenant are refused.
    pub all_tenants: bool,
    /// Counters.
    pub metrics: Metrics,
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key") {
        return k.to_str().ok();
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    auth.strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
}

/// The middleware: `401`, `403`, or the route with the [`Caller`] in its
/// request extensions.
pub async fn require(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let caller = presented_key(request.headers()).and_then(|k| guard.keys.find(k.trim()));
    let Some(caller) = caller else {
        guard.metrics.http_request(guard.route, 401);
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(Problem {
                error: "unauthorized",
                message: "a valid API key is required in the X-API-KEY header".into(),
            }),
        )
            .into_response();
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("ApiKey"));
        return r;
    };
    if let Err(wait) = guard.keys.admit(&caller) {
        guard.metrics.http_request(guard.route, 429);
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(Problem {
                error: "rate_limited",
                message: format!(
                    "the key `{}` is over its {} requests per second; retry in {seconds} s",
                    caller.name,
                    guard.keys.rate_limit().unwrap_or_default()
                ),
            }),
        )
            .into_response();
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
        return r;
    }
    if !caller.has_any(guard.roles) {
        guard.metrics.http_request(guard.route, 403);
        tracing::info!(key = %caller.name, route = guard.route, "request refused: role missing");
        let wanted: Vec<&str> = guard.roles.iter().map(|r| r.as_str()).collect();
        let held: Vec<&str> = caller.roles.iter().map(|r| r.as_str()).collect();
        return (
            StatusCode::FORBIDDEN,
            Json(Problem {
                error: "forbidden",
                message: format!(
                    "the key `{}` has the roles [{}]; this route needs one of [admin, {}]",
                    caller.name,
                    held.join(", "),
                    wanted.join(", ")
                ),
            }),
        )
            .into_response();
    }
    if guard.all_tenants && caller.tenant.is_some() {
        guard.metrics.http_request(guard.route, 403);
        return (
            StatusCode::FORBIDDEN,
            Json(Problem {
                error: "forbidden",
                message: format!(
                    "the key `{}` is bound to a tenant; this route shows every tenant's figures",
                    caller.name
                ),
            }),
        )
            .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, key: &str, roles: &[Role], tenant: Option<&str>) -> KeyConfig {
        KeyConfig {
            name: name.into(),
            sha256: hash_key(key),
            roles: roles.to_vec(),
            tenant: tenant.map(str::to_owned),
        }
    }

    #[test]
    fn keys_are_found_by_their_hash_only() {
        let keys = Keys::of(vec![entry("ops", "k-ops", &[Role::Operator], None)]);
        assert_eq!(keys.find("k-ops").unwrap().name, "ops");
        assert!(keys.find("k-op").is_none());
        assert!(
            keys.find(&hash_key("k-ops")).is_none(),
            "the hash is not a key"
        );
    }

    #[test]
    fn admin_holds_every_role_and_tenants_limit_what_a_key_sees() {
        let admin = Caller {
            name: "a".into(),
            roles: vec![Role::Admin],
            tenant: None,
        };
        assert!(Role::ALL.iter().all(|r| admin.has_any(&[*r])));
        let viewer = Caller {
            name: "v".into(),
            roles: vec![Role::Viewer],
            tenant: Some("game-a".into()),
        };
        assert!(viewer.has_any(&[Role::Viewer, Role::Operator]));
        assert!(!viewer.has_any(&[Role::Producer]));
        assert!(viewer.sees("game-a") && !viewer.sees("game-b"));
        assert!(admin.sees("game-b"));
    }

    #[test]
    fn new_keys_differ_and_hash_to_64_hex_digits() {
        let (a, b) = (new_key().unwrap(), new_key().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("ksk_") && a.len() == 68);
        let h = hash_key(&a);
        assert_eq!(digest(&h).map(hex::encode), Some(h));
    }

    #[test]
    fn a_changed_keys_file_is_reloaded_and_a_broken_one_keeps_the_old_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("keys.toml");
        let write = |key: &str| {
            std::fs::write(
                &path,
                format!(
                    "[[keys]]\nname = \"svc\"\nsha256 = \"{}\"\nroles = [\"service\"]\n",
                    hash_key(key)
                ),
            )
            .unwrap();
            // Make the change visible even on a coarse-grained clock.
            let later = SystemTime::now() + Duration::from_secs(2);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(later)
                .unwrap();
        };
        write("old");
        let cfg = AuthConfig {
            keys_file: Some(path.clone()),
            reload_seconds: 1,
            ..AuthConfig::default()
        };
        let keys = Keys::load(&cfg, vec![]).unwrap();
        assert!(keys.find("old").is_some());
        std::thread::sleep(Duration::from_millis(20));
        write("new");
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        keys.reload_if_changed();
        assert!(keys.find("new").is_some() && keys.find("old").is_none());
        std::fs::write(&path, "not toml [[").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(9))
            .unwrap();
        keys.reload_if_changed();
        assert!(keys.find("new").is_some(), "kept");
        assert!(
            Keys::load(&cfg, vec![]).is_err(),
            "a missing file at start is an error"
        );
    }
}
