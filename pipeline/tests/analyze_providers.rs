//! The analyze stage against a local HTTP server that speaks the
//! OpenAI-compatible and Gemini protocols and injects every fault kind: a
//! timeout, 429, 5xx, malformed JSON, schema-violating JSON, the context
//! length and the token limit. Every request gets a verdict; a fault gets
//! the fallback's, which says why. Under a provider limited to N
//! requests/s, the stage never sends more than N in any second. A tenant
//! flooding a batch takes turns with the others by weight.
//!
//! The provider records every request body it receives, so the tests also
//! show what a model is told: events screened and decided by the real
//! screen and decide stages (in this process, no broker) reach it as the
//! case's `recent_events`, with the senders' chat, and with no chat at all
//! when the tenant's `include_chat` is off.

#[path = "analyze_providers/fan_in.rs"]
mod fan_in;
#[path = "analyze_providers/provider.rs"]
mod provider;
#[path = "analyze_providers/stages.rs"]
mod stages;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fan_in::{INNOCENT, SLANG, TARGET, TENANT, as_recent_event, fan_in, fan_in_through_the_stages};
use kusanagi_pipeline::runtime::{InRecord, Stage};
use kusanagi_pipeline::stages::analyze::{AnalyzeStage, Analyzer, ProviderKind};
use kusanagi_pipeline::stages::screen::{ScreenConfig, TenantEvidence};
use kusanagi_schemas::{AccountState, FraudType, L2Request, RecordCodec, Verdict};
use provider::{Provider, serve};
use serde_json::{Value, json};
use stages::{analyse, model, model_stage, request, runtime};

fn every_fault_gets_a_fallback_that_says_why(kind: ProviderKind) {
    let provider = Arc::new(Provider::default());
    let addr = serve(provider.clone());
    let mut stage = model_stage(&model(kind, addr, 1_000, 1_000), 0);
    let faults = [
        ("timeout", "timeout"),
        ("429", "rate_limited"),
        ("500", "server_error"),
        ("malformed", "malformed_json"),
        ("schema", "schema_violation"),
        ("context", "context_length"),
        ("tokens", "token_limit"),
    ];
    let mut requests: Vec<L2Request> = faults
        .iter()
        .enumerate()
        .map(|(i, (f, _))| request(&format!("fault-{f}-{i}"), i as i32))
        .collect();
    requests.push(request("acct-ok", 99));
    let verdicts = analyse(&mut stage, &requests);
    for ((fault, reason), v) in faults.iter().zip(&verdicts) {
        assert_eq!(
            v.fallback_reason.as_deref(),
            Some(*reason),
            "{kind:?} {fault}: {}",
            v.reasoning
        );
        assert_eq!(v.analyzer, "fallback");
        assert!(v.reasoning.contains(reason), "{}", v.reasoning);
        // R2 + R4 with 12 senders: 20 + 30 + 15.
        assert_eq!(
            (v.risk_score, v.fraud_type, v.recommended_action),
            (65, FraudType::RmtSmurfing, AccountState::UnderSurveillance)
        );
    }
    let ok = verdicts.last().unwrap();
    let name = match kind {
        ProviderKind::Openai => "openai:fake-model",
        ProviderKind::Gemini => "gemini:fake-model",
    };
    assert_eq!(
        (ok.analyzer.as_str(), ok.fallback_reason.as_deref()),
        (name, None)
    );
    assert_eq!(
        (ok.risk_score, ok.recommended_action),
        (88, AccountState::Banned)
    );
    assert_eq!(
        ok.evidence_event_ids,
        ["e1"],
        "an invented evidence id is dropped"
    );
    // 429 and 500 were retried twice each: 3 attempts; the rest once.
    assert_eq!(provider.calls(), 3 + 3 + 6, "{kind:?} attempts");
    // Every attempt told the model the request's evidence events.
    let received = provider.received();
    assert_eq!(received.len(), provider.calls());
    for r in &received {
        let events = r.recent_events();
        let ids: Vec<&str> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["e1", "e2"], "{kind:?}: {}", r.user);
        assert_eq!(events[0]["market_avg_price"], 1_000);
        assert_eq!(events[1]["chat"], "gem pack for 5k?");
    }
}

#[test]
fn every_fault_gets_a_fallback_that_says_why_openai() {
    every_fault_gets_a_fallback_that_says_why(ProviderKind::Openai);
}

#[test]
fn every_fault_gets_a_fallback_that_says_why_gemini() {
    every_fault_gets_a_fallback_that_says_why(ProviderKind::Gemini);
}

/// One tenant floods the model while another sends a few, in one batch,
/// to a model taking one request at a time: the few reach the model among
/// the first starts (turns by weight, `tenant_shares`), not after the
/// flood, and every verdict is the model's, in request order.
fn a_flooding_tenant_takes_turns_with_the_others(kind: ProviderKind) {
    let mut requests: Vec<L2Request> = (0..20)
        .map(|i| L2Request {
            tenant_id: "flood".into(),
            ..request(&format!("flood-{i}"), i)
        })
        .collect();
    requests.extend((0..2).map(|i| L2Request {
        tenant_id: "calm".into(),
        ..request(&format!("calm-{i}"), 50 + i)
    }));
    let tenant_order = |shares: &[(&str, u32)]| {
        let provider = Arc::new(Provider::default());
        let addr = serve(provider.clone());
        let mut config = model(kind, addr, 1_000, 1_000);
        config.max_concurrency = 1;
        let shares = shares.iter().map(|(t, w)| ((*t).to_owned(), *w)).collect();
        let mut stage = model_stage(&config, 0).with_shares(shares);
        let verdicts = analyse(&mut stage, &requests);
        for (r, v) in requests.iter().zip(&verdicts) {
            assert_eq!(
                v.target_id, r.target_id,
                "{kind:?}: verdicts in request order"
            );
            assert_eq!(
                v.fallback_reason, None,
                "{kind:?} {}: {}",
                r.target_id, v.reasoning
            );
        }
        provider
            .received()
            .iter()
            .map(|r| r.case()["tenant_id"].as_str().unwrap().to_owned())
            .collect::<Vec<String>>()
    };
    let equal = tenant_order(&[]);
    assert_eq!(equal.len(), 22);
    assert_eq!(&equal[..4], ["flood", "calm", "flood", "calm"], "{kind:?}");
    // The flood's tenant given three shares: calm's turn comes every fourth.
    let weighted = tenant_order(&[("flood", 3)]);
    let calm: Vec<usize> = (0..weighted.len())
        .filter(|&i| weighted[i] == "calm")
        .collect();
    assert_eq!(calm, [2, 6], "{kind:?}: {weighted:?}");
}

#[test]
fn a_flooding_tenant_takes_turns_with_the_others_openai() {
    a_flooding_tenant_takes_turns_with_the_others(ProviderKind::Openai);
}

#[test]
fn a_flooding_tenant_takes_turns_with_the_others_gemini() {
    a_flooding_tenant_takes_turns_with_the_others(ProviderKind::Gemini);
}

#[test]
fn similar_profiles_are_answered_from_the_cache() {
    let provider = Arc::new(Provider::default());
    let addr = serve(provider.clone());
    let mut stage = model_stage(&model(ProviderKind::Openai, addr, 1_000, 1_000), 100);
    let first = analyse(&mut stage, &[request("acct-a", 1)]);
    // Another account, same rules and counts, a total within two significant digits.
    let mut similar = request("acct-b", 1);
    similar.window.total_received += 400;
    let second = analyse(&mut stage, &[similar]);
    assert_eq!(
        provider.calls(),
        1,
        "the second request was not re-analysed"
    );
    assert_eq!(second[0].target_id, "acct-b");
    assert_eq!(second[0].request_id, "acct-b-req");
    assert_eq!(second[0].risk_score, first[0].risk_score);
    assert_eq!(stage.stats().cache_hits, 1);
    analyse(&mut stage, &[request("acct-c", 7)]);
    assert_eq!(provider.calls(), 2, "a different profile is analysed");
}

#[test]
fn chat_written_before_a_tenant_turned_it_off_does_not_reach_the_model() {
    // A request already on `l2.requests` with chat, for a tenant whose
    // include_chat is now off: the analyze stage leaves the chat out.
    let provider = Arc::new(Provider::default());
    let addr = serve(provider.clone());
    let mut off = kusanagi_pipeline::stages::screen::EvidenceConfig::default();
    off.tenants.insert(
        "default".into(),
        TenantEvidence {
            include_chat: false,
        },
    );
    let mut stage =
        model_stage(&model(ProviderKind::Openai, addr, 1_000, 1_000), 0).with_evidence(off);
    let with_chat = request("acct-old", 1);
    assert!(with_chat.evidence_events.iter().any(|e| e.chat.is_some()));
    analyse(&mut stage, &[with_chat]);
    let received = provider.received();
    assert_eq!(received.len(), 1);
    assert!(
        !received[0].body.contains("gem pack for 5k"),
        "{}",
        received[0].body
    );
    assert_eq!(
        received[0].recent_events().len(),
        2,
        "the events are still there"
    );
}

#[test]
fn the_stage_never_exceeds_the_providers_rate_and_loses_no_request() {
    const N: u32 = 5;
    let provider = Arc::new(Provider {
        limit_per_second: Some(N as usize),
        ..Provider::default()
    });
    let addr = serve(provider.clone());
    let mut stage = model_stage(&model(ProviderKind::Openai, addr, N, 1), 0);
    // Open the connection first, so that its setup does not delay one
    // request into the next one's second; then count from a clean slate.
    analyse(&mut stage, &[request("acct-warm", 99)]);
    std::thread::sleep(Duration::from_millis(1_100));
    provider.arrivals.lock().unwrap().clear();
    let requests: Vec<L2Request> = (0..15).map(|i| request(&format!("acct-{i}"), i)).collect();
    let started = Instant::now();
    let verdicts = analyse(&mut stage, &requests);
    let took = started.elapsed();
    assert_eq!(verdicts.len(), 15);
    assert!(
        provider.peak_per_second() <= N as usize,
        "peak {} requests in one second",
        provider.peak_per_second()
    );
    assert!(
        verdicts.iter().all(|v| v.fallback_reason.is_none()),
        "paced at the provider's rate, nothing was refused"
    );
    assert!(
        took >= Duration::from_millis(2_500),
        "15 requests at 5/s take about 3 s, took {took:?}"
    );
    eprintln!(
        "15 requests at {N}/s: {took:?}, peak {} per second",
        provider.peak_per_second()
    );

    // A stage configured faster than the provider allows: the provider
    // refuses the excess, the stage retries, and what still fails gets the
    // fallback, which says why. Nothing is lost.
    let provider = Arc::new(Provider {
        limit_per_second: Some(2),
        ..Provider::default()
    });
    let addr = serve(provider.clone());
    let mut config = model(ProviderKind::Openai, addr, 50, 50);
    config.max_retries = 1;
    let mut stage = model_stage(&config, 0);
    let verdicts = analyse(&mut stage, &requests);
    let limited = verdicts
        .iter()
        .filter(|v| v.fallback_reason.as_deref() == Some("rate_limited"))
        .count();
    let answered = verdicts
        .iter()
        .filter(|v| v.fallback_reason.is_none())
        .count();
    assert_eq!(limited + answered, 15, "every request has a verdict");
    assert!(
        limited > 0 && answered > 0,
        "{limited} rate limited, {answered} answered"
    );
}

#[test]
fn an_undecodable_request_is_dead_lettered_and_the_rest_answered() {
    let mut stage = AnalyzeStage::new(Analyzer::Fallback, "l2.verdicts", "events.dlq", runtime());
    let good = RecordCodec::<L2Request>::new().encode(&request("acct-1", 1));
    let batch = [
        InRecord {
            topic: "l2.requests",
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(b"junk"),
            timestamp_ms: None,
            trace: None,
        },
        InRecord {
            topic: "l2.requests",
            partition: 0,
            offset: 1,
            key: None,
            payload: Some(&good),
            timestamp_ms: None,
            trace: None,
        },
    ];
    let mut out = Vec::new();
    stage.process(&batch, &mut out).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].topic, "events.dlq");
    let reason = out[0]
        .headers
        .iter()
        .find(|(k, _)| k == "kusanagi.dlq.reason")
        .unwrap();
    assert_eq!(reason.1, b"undecodable");
    let v = RecordCodec::<Verdict>::new()
        .decode(out[1].payload.as_deref().unwrap())
        .unwrap();
    assert_eq!(
        (v.target_id.as_str(), v.fallback_reason.as_deref()),
        ("acct-1", Some("no_model"))
    );
}

fn the_provider_receives_the_windows_events_and_chat(kind: ProviderKind) {
    // Another tenant keeps its chat out; this one lets it in (the default).
    let mut config = ScreenConfig::default();
    config.evidence.tenants.insert(
        "other-game".into(),
        TenantEvidence {
            include_chat: false,
        },
    );
    let received = fan_in_through_the_stages(kind, config);
    let events = fan_in();

    // fanin-04's request: its window so far, itself last.
    let first = received[0].case();
    assert_eq!(
        (&first["tenant_id"], &first["account_id"]),
        (&json!(TENANT), &json!(TARGET))
    );
    assert_eq!(first["rules_fired"], json!(["R4"]));
    let expected: Vec<Value> = events[..4]
        .iter()
        .map(|e| as_recent_event(e, true))
        .collect();
    assert_eq!(received[0].recent_events(), expected, "{kind:?}");

    // The request fanin-04's verdict released: the newest trigger's
    // (fanin-12), over the union of the window's rules and its whole
    // profile, with the newest 10 of the window's 12 events, itself last.
    let second = received[1].case();
    assert_eq!(second["rules_fired"], json!(["R2", "R4"]));
    assert_eq!(
        second["window"],
        json!({"minutes": 5, "total_received": 67_800, "transaction_count": 12, "distinct_senders": 12})
    );
    assert_eq!(
        second["evidence_event_ids"],
        json!(["fanin-04", "fanin-10", "fanin-11", "fanin-12"])
    );
    assert_eq!(second["triggers_coalesced"], 3);
    let recent = received[1].recent_events();
    let expected: Vec<Value> = events[2..]
        .iter()
        .map(|e| as_recent_event(e, true))
        .collect();
    assert_eq!(recent, expected, "{kind:?}");
    // The same, spelled out.
    assert_eq!(recent.len(), 10);
    assert_eq!(
        recent[9],
        json!({"event_id": "fanin-12", "time": "2099-01-01T00:01:50Z", "amount": 6_200,
               "market_avg_price": 1_200, "item_id": "gem-pack", "sender_id": "mule-12",
               "sender_level": 1, "sender_account_age_days": 12})
    );
    assert_eq!(
        recent[0],
        json!({"event_id": "fanin-03", "time": "2099-01-01T00:00:20Z", "amount": 5_300,
               "sender_id": "mule-03", "sender_level": 1, "sender_account_age_days": 3})
    );
    assert_eq!(
        (recent[1]["event_id"].as_str(), recent[1]["chat"].as_str()),
        (Some("fanin-04"), Some(SLANG))
    );
    assert_eq!(
        (recent[6]["event_id"].as_str(), recent[6]["chat"].as_str()),
        (Some("fanin-09"), Some(INNOCENT))
    );
    assert_eq!(recent.iter().filter(|e| e.get("chat").is_some()).count(), 2);
    // And on the wire.
    assert!(received[1].body.contains(SLANG) && received[1].body.contains(INNOCENT));
}

fn no_chat_reaches_the_provider_when_the_tenant_keeps_it_out(kind: ProviderKind) {
    let mut config = ScreenConfig::default();
    config.evidence.tenants.insert(
        TENANT.into(),
        TenantEvidence {
            include_chat: false,
        },
    );
    let received = fan_in_through_the_stages(kind, config);
    let events = fan_in();
    // The rules still read the chat (R4 fired), the model gets none of it.
    assert_eq!(received[0].case()["rules_fired"], json!(["R4"]));
    for (r, window) in received.iter().zip([&events[..4], &events[2..]]) {
        for text in [SLANG, INNOCENT] {
            assert!(
                !r.body.contains(text) && !r.user.contains(text),
                "{kind:?}: {text} reached the provider: {}",
                r.body
            );
        }
        assert!(
            !r.user.contains("chat"),
            "{kind:?}: no chat key in the case: {}",
            r.user
        );
        let recent = r.recent_events();
        assert!(recent.iter().all(|e| e.get("chat").is_none()));
        // Every event is still there, with all but its chat.
        let expected: Vec<Value> = window.iter().map(|e| as_recent_event(e, false)).collect();
        assert_eq!(recent, expected, "{kind:?}");
    }
    assert_eq!(received[1].recent_events().len(), 10);
}

#[test]
fn the_provider_receives_the_windows_events_and_chat_openai() {
    the_provider_receives_the_windows_events_and_chat(ProviderKind::Openai);
}

#[test]
fn the_provider_receives_the_windows_events_and_chat_gemini() {
    the_provider_receives_the_windows_events_and_chat(ProviderKind::Gemini);
}

#[test]
fn no_chat_reaches_the_provider_when_the_tenant_keeps_it_out_openai() {
    no_chat_reaches_the_provider_when_the_tenant_keeps_it_out(ProviderKind::Openai);
}

#[test]
fn no_chat_reaches_the_provider_when_the_tenant_keeps_it_out_gemini() {
    no_chat_reaches_the_provider_when_the_tenant_keeps_it_out(ProviderKind::Gemini);
}
