//! Every route walked with no key, a wrong key, each role and another
//! tenant's key, against the router a process serves: who may call what
//! (`access`), the history routes (`history`), erased accounts and
//! operators' verdicts (`erased_and_verdicts`), the per-key rate limit and
//! the request time limit (`limits`). Shared here: the keys, a router over
//! a small view, and one call.

mod access;
mod contract;
mod erased_and_verdicts;
mod history;
mod limits;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use kusanagi_connectors::kafka::KafkaSettings;
use kusanagi_schemas::{Account, AccountState, EventTime, GameEventCodec};
use tower::ServiceExt;

use super::auth::hash_key;
use super::{EventsApi, Keys, Services, router};
use crate::config::{KeyConfig, Role};
use crate::runtime::Metrics;
use crate::stages::view::View;

pub(super) fn key(name: &str, roles: &[Role], tenant: Option<&str>) -> KeyConfig {
    KeyConfig {
        name: name.into(),
        sha256: hash_key(&format!("key-{name}")),
        roles: roles.to_vec(),
        tenant: tenant.map(str::to_owned),
    }
}

pub(super) fn moved(account: &str, tenant: &str, version: i64) -> kusanagi_schemas::Transition {
    kusanagi_schemas::Transition {
        account_id: account.into(),
        tenant_id: tenant.into(),
        version,
        from_state: AccountState::Normal,
        to_state: AccountState::RestrictedWithdrawal,
        trigger: kusanagi_schemas::Trigger::L1Screening,
        rule: "R1".into(),
        event_time: EventTime::from_micros(0),
        source_id: format!("e{version}"),
        evidence: String::new(),
        applied: true,
        refusal: None,
    }
}

pub(super) fn app() -> axum::Router {
    app_with_rate_limit(0, 0)
}

/// [`app`] with each key limited to `per_second` requests (0: no limit).
pub(super) fn app_with_rate_limit(per_second: u32, burst: u32) -> axum::Router {
    router(services(per_second, burst))
}

/// What [`app_with_rate_limit`] serves: every part, over a small view.
pub(super) fn services(per_second: u32, burst: u32) -> Services {
    let keys = Keys::of(vec![
        key("admin", &[Role::Admin], None),
        key("operator", &[Role::Operator], None),
        key("viewer", &[Role::Viewer], None),
        key("producer", &[Role::Producer], Some("game-a")),
        key("service", &[Role::Service], Some("game-a")),
        key(
            "other-tenant",
            &[Role::Viewer, Role::Service, Role::Producer],
            Some("game-b"),
        ),
    ])
    .with_rate_limit(per_second, burst);
    let view = Arc::new(View::new(10));
    let mut a = Account::new("acct-1", "game-a", EventTime::from_micros(1_000_000));
    a.state = AccountState::RestrictedWithdrawal;
    a.version = 1;
    view.write().apply_account(b"acct-1", Some(a));
    view.write()
        .apply_transition(moved("acct-1", "game-a", 1), 1_000_000);
    let gone = Account::new("acct-gone", "game-a", EventTime::from_micros(0));
    view.write().apply_account(b"acct-gone", Some(gone));
    view.write().erase("acct-gone", 1_795_000_000_000);
    view.set_ready(true);
    let metrics = Metrics::new();
    // Never reached: every events request below is refused or invalid.
    let producer = KafkaSettings::new("127.0.0.1:1")
        .producer_config()
        .create()
        .unwrap();
    let events = EventsApi {
        producer,
        codec: GameEventCodec::new(),
        topic: "events".into(),
        max_event_bytes: 1 << 20,
        max_batch_events: 10,
        metrics: metrics.clone(),
    };
    Services {
        metrics,
        keys: Arc::new(keys),
        events: Some(Arc::new(events)),
        view: Some(Arc::clone(&view)),
        erasures: Some(Arc::new(super::ErasuresApi {
            producer: KafkaSettings::new("127.0.0.1:1")
                .producer_config()
                .create()
                .unwrap(),
            topic: "erasures".into(),
            metrics: Metrics::new(),
        })),
        overrides: Some(Arc::new(super::OverridesApi {
            producer: KafkaSettings::new("127.0.0.1:1")
                .producer_config()
                .create()
                .unwrap(),
            verdicts: "l2.verdicts".into(),
            audit: "audit".into(),
            view: Arc::clone(&view),
            metrics: Metrics::new(),
        })),
        max_body_bytes: 1 << 20,
    }
}

pub(super) async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
) -> (u16, String) {
    let body = match uri {
        "/api/v1/events" => Body::from("not json"),
        "/api/v1/withdrawals/check" => Body::from(r#"{"account_id":"acct-1"}"#),
        "/api/v1/erasures" => Body::from("not json"),
        _ => Body::empty(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}
