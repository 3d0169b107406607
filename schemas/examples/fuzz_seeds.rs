//! Writes the fuzz targets' seed inputs: one valid record of each topic's
//! type, as the stages write them (`fuzz/corpus/avro_records/seed-*`, the
//! first byte picking the type as `fuzz_targets/avro_records.rs` reads
//! it). Without them the fuzzer would have to guess a schema fingerprint
//! before it reached any decoder.
//!
//! `cargo run -p kusanagi-schemas --example fuzz_seeds -- fuzz/corpus/avro_records`

use std::path::PathBuf;

use kusanagi_schemas::{
    Account, AccountState, ActionDetails, AuditKind, AuditRecord, ContextMetadata, ErasureRequest,
    EventTime, EvidenceEvent, FraudType, GameEvent, GameEventCodec, L2Request, RecordCodec, Rule,
    RuleSet, Screening, Transition, Trigger, Verdict, WindowProfile,
};

const AT: i64 = 4_070_908_800_000_000;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: fuzz_seeds <folder>");
        std::process::exit(2)
    }));
    std::fs::create_dir_all(&dir).expect("the seed folder");
    let at = EventTime::from_micros(AT);
    let rules: RuleSet = [Rule::R3, Rule::R4].into_iter().collect();
    let window = WindowProfile {
        total_received: 1_000_000,
        transaction_count: 2,
        distinct_senders: 2,
    };
    let evidence = vec![EvidenceEvent {
        event_id: "e7".into(),
        event_time: at,
        amount: 1_000_000,
        market_avg_price: Some(5_000),
        item_id: Some("gem-pack".into()),
        sender_id: "mule_3".into(),
        sender_level: 3,
        sender_account_age_days: 2,
        chat: Some("1000k gems, PayPal ok?".into()),
    }];
    let event = GameEvent {
        event_id: "e7".into(),
        timestamp: at,
        event_type: "TRADE".into(),
        actor_id: "mule_3".into(),
        target_id: "bob".into(),
        action_details: ActionDetails {
            currency_amount: 1_000_000,
            item_id: Some("gem-pack".into()),
            market_avg_price: Some(5_000),
        },
        context_metadata: ContextMetadata {
            recent_chat_log: Some("1000k gems, PayPal ok?".into()),
            ..ContextMetadata::default()
        },
        tenant_id: "default".into(),
    };
    let screening = Screening {
        event_id: "e7".into(),
        event_time: at,
        tenant_id: "default".into(),
        target_id: "bob".into(),
        actor_id: "mule_3".into(),
        screened: true,
        triggered_rules: rules,
        recommended_action: AccountState::RestrictedWithdrawal,
        needs_l2: true,
        window,
        window_rules: rules,
        evidence_event_ids: vec!["e7".into()],
        evidence_events: evidence.clone(),
        late: false,
    };
    let request = L2Request {
        request_id: "e7".into(),
        event_time: at,
        tenant_id: "default".into(),
        target_id: "bob".into(),
        account_state: AccountState::RestrictedWithdrawal,
        rules,
        window,
        evidence_event_ids: vec!["e7".into()],
        evidence_events: evidence,
        coalesced: 1,
    };
    let verdict = Verdict {
        request_id: "e7".into(),
        event_time: at,
        tenant_id: "default".into(),
        target_id: "bob".into(),
        is_fraud: true,
        risk_score: 92,
        fraud_type: FraudType::RmtDirect,
        recommended_action: AccountState::Banned,
        reasoning: "sold gems for PayPal".into(),
        evidence_event_ids: vec!["e7".into()],
        confidence: 0.9,
        analyzer: "fallback".into(),
        fallback_reason: Some("timeout".into()),
    };
    let account = Account {
        state: AccountState::RestrictedWithdrawal,
        version: 1,
        l2_in_flight: Some("e7".into()),
        ..Account::new("bob", "default", at)
    };
    let transition = Transition {
        account_id: "bob".into(),
        tenant_id: "default".into(),
        version: 1,
        from_state: AccountState::Normal,
        to_state: AccountState::RestrictedWithdrawal,
        trigger: Trigger::L1Screening,
        rule: "R3,R4".into(),
        event_time: at,
        source_id: "e7".into(),
        evidence: "e7".into(),
        applied: true,
        refusal: None,
    };
    let erasure = ErasureRequest {
        request_id: "er-1".into(),
        subject: "bob".into(),
        requested_at: at,
        requested_by: "dpo".into(),
    };
    let audit = AuditRecord {
        audit_id: "au-1".into(),
        at,
        kind: AuditKind::ErasureRequested,
        subject_hash: Some("ab".repeat(32)),
        actor: "dpo".into(),
        request_id: Some("er-1".into()),
        detail: "erasure requested".into(),
    };
    let seeds: [(u8, &str, Vec<u8>); 8] = [
        (0, "event", GameEventCodec::new().encode(&event)),
        (1, "screening", RecordCodec::new().encode(&screening)),
        (2, "l2-request", RecordCodec::new().encode(&request)),
        (3, "verdict", RecordCodec::new().encode(&verdict)),
        (4, "account", RecordCodec::new().encode(&account)),
        (5, "transition", RecordCodec::new().encode(&transition)),
        (6, "erasure", RecordCodec::new().encode(&erasure)),
        (7, "audit", RecordCodec::new().encode(&audit)),
    ];
    for (which, name, payload) in seeds {
        let mut bytes = vec![which];
        bytes.extend(payload);
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, bytes).expect("a seed file");
        println!("{}", path.display());
    }
}
