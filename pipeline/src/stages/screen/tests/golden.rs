//! The 12 Susanoh L1 boundary cases of `tests/golden/`, read as they are,
//! and the vendored copy checked against the shared reference.

use std::path::PathBuf;

use kusanagi_schemas::{AccountState, Rule, parse_event};

use crate::stages::screen::{PartitionWindows, ScreenConfig};

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/susanoh-rule-boundaries.json")
}

#[test]
fn golden_copy_is_the_shared_reference_byte_for_byte() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/susanoh-rule-boundaries.json");
    let Ok(reference) = std::fs::read(&shared) else {
        eprintln!(
            "{} is not here; checking the vendored copy only",
            shared.display()
        );
        return;
    };
    assert_eq!(
        std::fs::read(golden_path()).unwrap(),
        reference,
        "pipeline/tests/golden/ differs from ../shared/reference/"
    );
}

#[test]
fn all_twelve_golden_boundary_cases_pass() {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden_path()).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), doc["case_count"].as_u64().unwrap() as usize);
    assert_eq!(cases.len(), 12);
    let config = ScreenConfig::default();
    let mut passed = 0;
    for case in cases {
        let name = format!("{} {}", case["rule_id"], case["variant"]);
        let mut windows = PartitionWindows::new(config.window_spec());
        let mut last = None;
        for (offset, raw) in case["events"].as_array().unwrap().iter().enumerate() {
            let event = parse_event(&serde_json::to_vec(raw).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            last = windows.observe(
                offset as i64,
                &event,
                config.thresholds_for(&event.tenant_id),
            );
        }
        let s = last.unwrap_or_else(|| panic!("{name}: no screening"));
        let expected: Vec<&str> = case["expected_triggered_rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let got: Vec<&str> = s.triggered_rules.iter().map(Rule::as_str).collect();
        assert_eq!(got, expected, "{name}: triggered_rules");
        assert_eq!(
            s.screened,
            case["expected_screened"].as_bool().unwrap(),
            "{name}: screened"
        );
        assert_eq!(
            s.needs_l2,
            case["expected_needs_l2"].as_bool().unwrap(),
            "{name}: needs_l2"
        );
        let action = if s.screened {
            AccountState::RestrictedWithdrawal
        } else {
            AccountState::Normal
        };
        assert_eq!(s.recommended_action, action, "{name}: recommended_action");
        passed += 1;
    }
    assert_eq!(passed, 12);
}
