//! `kusanagi erasures ls` and `kusanagi certificate pubkey|verify`: the
//! erasures the archive recorded, and their signed certificates.

use anyhow::{Context, bail};
use serde::Serialize;

use kusanagi_pipeline::catalog::Catalog;
use kusanagi_pipeline::config::Topology;
use kusanagi_pipeline::erasure::Secrets;
use kusanagi_pipeline::erasure::certificate::verify;
use kusanagi_pipeline::stages::compact::certificate_path;

/// One line of `erasures ls`.
#[derive(Debug, Clone, Serialize)]
pub struct ErasureLine {
    /// The request.
    pub request_id: String,
    /// The subject's salted hash.
    pub subject_hash: String,
    /// Who asked.
    pub requested_by: String,
    /// When (RFC 3339).
    pub requested_at: String,
    /// `purged` or `marked` (logically deleted, purge not committed yet).
    pub status: &'static str,
    /// Files rewritten.
    pub files: usize,
    /// Rows removed.
    pub rows_removed: u64,
    /// Files its purges opened, of `files_listed` (the rest were ruled out
    /// by their subject filters).
    pub files_opened: u64,
    /// Files the catalog listed when it was purged.
    pub files_listed: u64,
    /// The certificate's place in the catalog store (if purged).
    pub certificate: Option<String>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Every erasure the catalog of `topology` records.
pub async fn erasures(topology: &Topology) -> anyhow::Result<Vec<ErasureLine>> {
    let store = topology
        .archive
        .open_catalog_store()
        .context("opening the catalog")?;
    let catalog = Catalog::open(store, "erasures-ls")
        .await
        .with_context(|| format!("reading the catalog at {}", topology.archive.catalog))?;
    let mut lines: Vec<ErasureLine> = catalog
        .state()
        .erasures()
        .map(|e| ErasureLine {
            request_id: e.erasure.request_id.clone(),
            subject_hash: e.erasure.subject_hash.clone(),
            requested_by: e.erasure.requested_by.clone(),
            requested_at: rfc3339(e.erasure.requested_at_ms),
            status: if e.purged_at_ms.is_some() {
                "purged"
            } else {
                "marked"
            },
            files: e.files.len(),
            rows_removed: e.files.iter().map(|f| f.rows_removed).sum(),
            files_opened: e.files_opened,
            files_listed: e.files_listed,
            certificate: e
                .purged_at_ms
                .map(|_| certificate_path(&e.erasure.request_id)),
        })
        .collect();
    lines.sort_by(|a, b| (&a.requested_at, &a.request_id).cmp(&(&b.requested_at, &b.request_id)));
    Ok(lines)
}

/// `kusanagi erasures ls`.
pub async fn erasures_ls(topology: &Topology, json: bool) -> anyhow::Result<()> {
    let lines = erasures(topology).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    println!(
        "{:<40} {:<16} {:<8} {:>6} {:>8} {:>13}  {:<24}  certificate",
        "request", "subject hash", "status", "files", "rows", "opened/listed", "requested at"
    );
    for l in &lines {
        println!(
            "{:<40} {:<16} {:<8} {:>6} {:>8} {:>13}  {:<24}  {}",
            l.request_id,
            &l.subject_hash[..16.min(l.subject_hash.len())],
            l.status,
            l.files,
            l.rows_removed,
            format!("{}/{}", l.files_opened, l.files_listed),
            l.requested_at,
            l.certificate.as_deref().unwrap_or("-")
        );
    }
    eprintln!(
        "{} erasures; certificates are in the catalog store ({})",
        lines.len(),
        topology.archive.catalog
    );
    Ok(())
}

/// `kusanagi certificate get`: the certificate of `request_id`, as stored.
pub async fn certificate_bytes(topology: &Topology, request_id: &str) -> anyhow::Result<Vec<u8>> {
    let store = topology
        .archive
        .open_catalog_store()
        .context("opening the catalog")?;
    let path = certificate_path(request_id);
    let bytes = store
        .get(&path)
        .await
        .with_context(|| format!("reading {path} in {}", topology.archive.catalog))?;
    Ok(bytes.to_vec())
}

/// The deployment's public key, from its signing key file.
pub fn public_key(topology: &Topology) -> anyhow::Result<String> {
    let secrets = Secrets::load(&topology.gdpr, topology.kafka.bootstrap.is_empty())?;
    Ok(secrets.public_key_hex())
}

/// `kusanagi certificate verify`: checks `bytes` against `expected_key`,
/// or the deployment's own key when none is given.
pub fn verify_cmd(
    topology: &Topology,
    name: &str,
    bytes: &[u8],
    expected_key: Option<&str>,
) -> anyhow::Result<()> {
    let key = match expected_key {
        Some(k) => k.to_owned(),
        None => Secrets::load(&topology.gdpr, false)
            .map(|s| s.public_key_hex())
            .context("no --public-key given, and the deployment's key cannot be read")?,
    };
    match verify(bytes, Some(&key)) {
        Ok(cert) => {
            println!(
                "{name}: valid. Request {} (subject {}), {} files rewritten, {} rows removed, completed {}; signed by {}",
                cert.body.request_id,
                cert.body.subject_hash,
                cert.body.files.len(),
                cert.body.rows_removed,
                cert.body.completed_at,
                cert.public_key
            );
            Ok(())
        }
        Err(e) => bail!("{name}: INVALID: {e}"),
    }
}
