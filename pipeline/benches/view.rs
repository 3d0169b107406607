//! The state API's cost per request, in process (no sockets): the view
//! stage's router answering `GET /api/v1/accounts/{id}` over an index of
//! 1,000,000 accounts, against `GET /healthz` (no key, no index) through
//! the same router in the same run. The difference is what a lookup adds
//! on the server: the API-key check, the tenant check, the shared index,
//! the JSON answer. `kusanagi-loadtest view` measures it over the network.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use kusanagi_pipeline::api::{Keys, Services, auth, router};
use kusanagi_pipeline::config::{KeyConfig, Role};
use kusanagi_pipeline::runtime::Metrics;
use kusanagi_pipeline::stages::view::View;
use kusanagi_schemas::{Account, AccountState, EventTime};
use tower::ServiceExt;

const ACCOUNTS: usize = 1_000_000;
const KEY: &str = "bench-key";

fn app() -> axum::Router {
    let view = Arc::new(View::new(1_000));
    {
        let mut index = view.write();
        let at = EventTime::from_micros(1_795_000_000_000_000);
        for i in 0..ACCOUNTS {
            let id = format!("acct-{i:07}");
            let mut a = Account::new(&id, "game-a", at);
            if i % 10 == 0 {
                a.state = AccountState::RestrictedWithdrawal;
                a.version = 1;
            }
            let key = kusanagi_schemas::AccountKey::new("game-a", id).kafka_key();
            index.apply_account(&key, Some(a));
        }
    }
    view.set_ready(true);
    router(Services {
        metrics: Metrics::new(),
        keys: Arc::new(Keys::of(vec![KeyConfig {
            name: "bench".into(),
            sha256: auth::hash_key(KEY),
            roles: vec![Role::Viewer],
            tenant: None,
        }])),
        events: None,
        view: Some(view),
        erasures: None,
        overrides: None,
        max_body_bytes: 1 << 20,
    })
}

fn lookups(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let app = app();
    let call = |uri: String| {
        let app = app.clone();
        async move {
            let req = Request::get(uri)
                .header("x-api-key", KEY)
                .body(Body::empty())
                .expect("a request");
            let resp = app.oneshot(req).await.expect("an answer");
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.expect("a body").to_bytes()
        }
    };
    let mut g = c.benchmark_group("state_api");
    g.bench_function("healthz", |b| {
        b.iter(|| rt.block_on(call("/healthz".to_owned())))
    });
    let mut i = 0usize;
    g.bench_function("latest_of_1m_accounts", |b| {
        b.iter(|| {
            // A stride that walks the whole index, not a cached corner.
            i = (i + 7_919) % ACCOUNTS;
            rt.block_on(call(format!("/api/v1/accounts/acct-{i:07}")))
        })
    });
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
