//! The deterministic local analyzer of SCREENING.md: the analyzer when no
//! model is configured, and the fallback on every model failure.

use kusanagi_schemas::{FraudType, L2Request, Rule, Verdict, action_for_score};

/// The analyzer name fallback verdicts carry.
pub const FALLBACK: &str = "fallback";

/// The fallback's risk score: 30·R1 + 20·R2 + 25·R3 + 30·R4, plus 15 when
/// the window has at least 5 distinct senders, capped at 100.
pub fn fallback_score(request: &L2Request) -> i32 {
    let r = request.rules;
    let mut score = 0;
    for (rule, points) in [
        (Rule::R1, 30),
        (Rule::R2, 20),
        (Rule::R3, 25),
        (Rule::R4, 30),
    ] {
        if r.contains(rule) {
            score += points;
        }
    }
    if request.window.distinct_senders >= 5 {
        score += 15;
    }
    score.min(100)
}

/// The fallback's fraud type for `score`.
pub fn fallback_fraud_type(request: &L2Request, score: i32) -> FraudType {
    if score <= 30 {
        FraudType::Legitimate
    } else if request.window.distinct_senders >= 3 {
        FraudType::RmtSmurfing
    } else if request.rules.contains(Rule::R4) {
        FraudType::RmtDirect
    } else {
        FraudType::MoneyLaundering
    }
}

/// The fallback verdict on `request`; `reason` is the stable code of why
/// the fallback answered (`no_model`, `timeout`, ...), `detail` says more.
pub fn fallback_verdict(request: &L2Request, reason: &str, detail: &str) -> Verdict {
    let score = fallback_score(request);
    let fraud_type = fallback_fraud_type(request, score);
    let w = &request.window;
    Verdict {
        request_id: request.request_id.clone(),
        event_time: request.event_time,
        tenant_id: request.tenant_id.clone(),
        target_id: request.target_id.clone(),
        is_fraud: score > 30,
        risk_score: score,
        fraud_type,
        recommended_action: action_for_score(score),
        reasoning: format!(
            "Deterministic fallback analyzer ({reason}{}): rules {} over a window of {} events, \
             {} received from {} distinct senders; score {score}.",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            },
            request.rules.label(),
            w.transaction_count,
            w.total_received,
            w.distinct_senders,
        ),
        evidence_event_ids: request.evidence_event_ids.clone(),
        confidence: 0.6,
        analyzer: FALLBACK.into(),
        fallback_reason: Some(reason.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use kusanagi_schemas::{AccountState, EventTime, RuleSet, WindowProfile};

    use super::*;

    fn request(rules: &[Rule], senders: i32) -> L2Request {
        L2Request {
            request_id: "e1".into(),
            event_time: EventTime::from_micros(0),
            tenant_id: "default".into(),
            target_id: "bob".into(),
            account_state: AccountState::RestrictedWithdrawal,
            rules: rules.iter().copied().collect::<RuleSet>(),
            window: WindowProfile {
                total_received: 5,
                transaction_count: 12,
                distinct_senders: senders,
            },
            evidence_event_ids: vec!["e1".into()],
            evidence_events: vec![],
            coalesced: 1,
        }
    }

    #[test]
    fn the_score_and_type_follow_screening_md() {
        use AccountState::*;
        let cases = [
            (vec![Rule::R4], 1, 30, FraudType::Legitimate, Normal),
            (
                vec![Rule::R1, Rule::R4],
                1,
                60,
                FraudType::RmtDirect,
                UnderSurveillance,
            ),
            (
                vec![Rule::R1, Rule::R3],
                2,
                55,
                FraudType::MoneyLaundering,
                UnderSurveillance,
            ),
            (
                vec![Rule::R2],
                12,
                35,
                FraudType::RmtSmurfing,
                UnderSurveillance,
            ),
            (
                vec![Rule::R1, Rule::R2, Rule::R4],
                5,
                95,
                FraudType::RmtSmurfing,
                Banned,
            ),
            (
                vec![Rule::R1, Rule::R2, Rule::R3, Rule::R4],
                9,
                100,
                FraudType::RmtSmurfing,
                Banned,
            ),
        ];
        for (rules, senders, score, fraud_type, action) in cases {
            let v = fallback_verdict(&request(&rules, senders), "timeout", "after 20000 ms");
            assert_eq!(
                (v.risk_score, v.fraud_type, v.recommended_action),
                (score, fraud_type, action),
                "{rules:?}"
            );
            assert_eq!(v.is_fraud, score > 30);
            assert_eq!(v.confidence, 0.6);
            assert_eq!(v.fallback_reason.as_deref(), Some("timeout"));
            assert!(
                v.reasoning
                    .starts_with("Deterministic fallback analyzer (timeout: after 20000 ms)"),
                "{}",
                v.reasoning
            );
        }
    }
}
