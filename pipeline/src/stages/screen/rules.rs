//! The L1 rules R1-R4 (SCREENING.md): pure functions of one event, its
//! target's window and the tenant's thresholds.

use std::sync::OnceLock;

use kusanagi_schemas::{GameEvent, Rule, RuleSet, WindowProfile};
use regex::Regex;

pub use crate::config::stages::screen::Thresholds;

/// The RMT slang pattern of R4, as in the Susanoh prototype.
pub const SLANG_PATTERN: &str =
    r"振[り込]?込|D[でにて]確認|[0-9]+[kK千万]|りょ[。.]|PayPa[ly]|銀行|口座|送金|入金確認";

fn slang() -> &'static Regex {
    static SLANG: OnceLock<Regex> = OnceLock::new();
    SLANG.get_or_init(|| Regex::new(SLANG_PATTERN).expect("the slang pattern is a valid regex"))
}

/// Whether `text` holds RMT slang (R4's pattern).
pub fn has_slang(text: &str) -> bool {
    slang().is_match(text)
}

/// The rules `event` fires over `window` (its target's window, the event
/// included).
pub fn evaluate(t: &Thresholds, event: &GameEvent, window: &WindowProfile) -> RuleSet {
    let mut rules = RuleSet::EMPTY;
    if window.total_received >= t.r1_total_received {
        rules.insert(Rule::R1);
    }
    if window.transaction_count >= t.r2_transaction_count {
        rules.insert(Rule::R2);
    }
    let a = &event.action_details;
    if let Some(price) = a.market_avg_price.filter(|p| *p > 0)
        && i128::from(a.currency_amount) >= i128::from(price) * i128::from(t.r3_price_multiplier)
    {
        rules.insert(Rule::R3);
    }
    if t.r4_slang
        && event
            .context_metadata
            .recent_chat_log
            .as_deref()
            .is_some_and(has_slang)
    {
        rules.insert(Rule::R4);
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slang_matches_the_prototypes_markers() {
        for yes in [
            "振込で",
            "振り込み",
            "Dで確認",
            "5k",
            "3万",
            "りょ。",
            "PayPal",
            "PayPay",
            "銀行",
            "口座",
            "送金",
            "入金確認",
        ] {
            assert!(has_slang(yes), "{yes}");
        }
        for no in ["hello", "k", "りょ", "Paypal", "ok thanks", "万"] {
            assert!(!has_slang(no), "{no}");
        }
    }
}
