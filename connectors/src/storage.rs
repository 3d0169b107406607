//! Object storage tiers: one `object_store` per tier, named by a URL.
//!
//! | URL | store |
//! |---|---|
//! | `memory://` | in memory (tests, throw-away runs) |
//! | `file:///abs/dir` or a plain path `data/hot` | a local folder (created if missing) |
//! | `s3://bucket/prefix` | S3 or any S3-protocol server; options below |
//!
//! S3 options (`endpoint`, `region`, `access_key_id`, `secret_access_key`,
//! `allow_http`, ...) are object_store's `AmazonS3ConfigKey` names; unset
//! ones come from the usual `AWS_*` environment variables.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::ConnectorError;

/// One storage tier (hot, warm or cold): a store and the URL it came from.
#[derive(Debug, Clone)]
pub struct TierStore {
    url: String,
    store: Arc<dyn ObjectStore>,
}

fn invalid(url: &str, detail: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Storage {
        url: url.to_owned(),
        operation: "open".into(),
        detail: detail.to_string(),
    }
}

impl TierStore {
    /// Opens the store a tier URL names, with `options` for S3.
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Self, ConnectorError> {
        let store: Arc<dyn ObjectStore> = if url == "memory://" {
            Arc::new(InMemory::new())
        } else if let Some(bucket_and_prefix) = url.strip_prefix("s3://") {
            let (bucket, prefix) = bucket_and_prefix
                .split_once('/')
                .unwrap_or((bucket_and_prefix, ""));
            if bucket.is_empty() {
                return Err(invalid(url, "expected s3://bucket[/prefix]"));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (key, value) in options {
                let key = key
                    .parse()
                    .map_err(|e| invalid(url, format!("unknown S3 option `{key}`: {e}")))?;
                builder = builder.with_config(key, value);
            }
            let s3 = builder.build().map_err(|e| invalid(url, e))?;
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
        } else {
            let dir = match url.strip_prefix("file://") {
                Some(path) => std::path::PathBuf::from(path),
                None if url.contains("://") => {
                    return Err(invalid(
                        url,
                        "expected memory://, file:///dir, a folder path, or s3://bucket/prefix",
                    ));
                }
                None => std::path::PathBuf::from(url),
            };
            std::fs::create_dir_all(&dir)
                .map_err(|e| invalid(url, format!("cannot create {}: {e}", dir.display())))?;
            Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(|e| invalid(url, e))?)
        };
        Ok(Self {
            url: url.to_owned(),
            store,
        })
    }

    /// The URL this tier was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn fail(&self, operation: &str, path: &str, e: object_store::Error) -> ConnectorError {
        if let object_store::Error::NotFound { .. } = e {
            return ConnectorError::NotFound {
                url: self.url.clone(),
                path: path.to_owned(),
            };
        }
        ConnectorError::Storage {
            url: self.url.clone(),
            operation: format!("{operation} {path}"),
            detail: e.to_string(),
        }
    }

    /// Writes `bytes` at `path` (whole object, atomically).
    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<(), ConnectorError> {
        self.store
            .put(&Path::from(path), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.fail("put", path, e))
    }

    /// Writes `bytes` at `path` only if nothing is there yet, atomically:
    /// `Ok(false)` when an object already exists (another writer won).
    /// S3 needs `If-None-Match` support (AWS since 2024, MinIO, R2).
    pub async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<bool, ConnectorError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&Path::from(path), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.fail("create", path, e)),
        }
    }

    /// Reads the whole object at `path`.
    pub async fn get(&self, path: &str) -> Result<Bytes, ConnectorError> {
        let read = async { self.store.get(&Path::from(path)).await?.bytes().await };
        read.await.map_err(|e| self.fail("get", path, e))
    }

    /// Every object under `prefix`, as (path, size in bytes), sorted by path.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ConnectorError> {
        self.list_as(prefix, |m| m.size).await
    }

    /// Every object under `prefix`, as (path, `what` of its metadata),
    /// sorted by path.
    async fn list_as<T: Ord>(
        &self,
        prefix: &str,
        what: impl Fn(&object_store::ObjectMeta) -> T,
    ) -> Result<Vec<(String, T)>, ConnectorError> {
        let prefix = (!prefix.is_empty()).then(|| Path::from(prefix));
        let mut listed: Vec<(String, T)> = self
            .store
            .list(prefix.as_ref())
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| self.fail("list", "", e))?
            .iter()
            .map(|m| (m.location.to_string(), what(m)))
            .collect();
        listed.sort();
        Ok(listed)
    }

    /// Every object under `prefix`, as (path, last modified in
    /// milliseconds since the epoch), sorted by path.
    pub async fn list_modified(&self, prefix: &str) -> Result<Vec<(String, i64)>, ConnectorError> {
        self.list_as(prefix, |m| m.last_modified.timestamp_millis())
            .await
    }

    /// The objects under `prefix` whose paths sort after `after`, as
    /// (path, size in bytes), sorted by path (S3 lists from `after` on, so
    /// this reads only what is new).
    pub async fn list_after(
        &self,
        prefix: &str,
        after: &str,
    ) -> Result<Vec<(String, u64)>, ConnectorError> {
        let prefix = (!prefix.is_empty()).then(|| Path::from(prefix));
        let mut listed: Vec<(String, u64)> = self
            .store
            .list_with_offset(prefix.as_ref(), &Path::from(after))
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| self.fail("list", after, e))?
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect();
        listed.sort();
        Ok(listed)
    }

    /// Moves the object at `from` to `to` (replacing what is there): a
    /// rename on a local folder, a copy then a delete on S3.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), ConnectorError> {
        self.store
            .rename(&Path::from(from), &Path::from(to))
            .await
            .map_err(|e| self.fail("rename", &format!("{from} -> {to}"), e))
    }

    /// Whether an object exists at `path`.
    pub async fn exists(&self, path: &str) -> Result<bool, ConnectorError> {
        match self.store.head(&Path::from(path)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.fail("head", path, e)),
        }
    }

    /// Deletes the object at `path`; deleting what is not there is no error.
    pub async fn delete(&self, path: &str) -> Result<(), ConnectorError> {
        match self.store.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail("delete", path, e)),
        }
    }
}
