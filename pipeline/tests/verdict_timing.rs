//! Timing independence of verdicts, proved on the pure core (the screen
//! stage's windows, decide's state machine and the deterministic fallback
//! analyzer; no broker): the same events end in the same account states
//! whether each verdict comes back before the next event (paced), after
//! the last one (a burst: a backlog, a replay, a restart), or anywhere in
//! between (SCREENING.md, "Account states").
//!
//! - The scenarios of `scenarios/rmt.json` end as the file says, paced, in
//!   a burst, and under random verdict delays, each alone and all of them
//!   interleaved as they share a partition.
//! - Generated streams: no interleaving ends an account in a state less
//!   severe than the paced run, and where the account's last screened
//!   window holds the most evidence (every rule of its earlier windows,
//!   and five or more senders if any had them) every interleaving equals
//!   the paced run.

mod scenarios;

use std::collections::BTreeMap;

use kusanagi_schemas::{AccountState, EventTime, GameEvent, RuleSet};
use proptest::prelude::*;
use scenarios::{Core, Delay, Scenario, load, run, severity};

const T0: EventTime = EventTime::from_micros(4_070_908_800_000_000); // 2099-01-01
const PACED: fn(usize) -> Delay = |_| 0;
const BURST: fn(usize) -> Delay = |_| usize::MAX;

/// Every scenario's events in rounds: the first event of each, then the
/// second of each, and so on (as the pipeline suite sends them).
fn in_rounds(scenarios: &[Scenario], run_prefix: &str) -> Vec<GameEvent> {
    let all: Vec<Vec<GameEvent>> = scenarios
        .iter()
        .map(|s| s.game_events(run_prefix, T0))
        .collect();
    let rounds = all.iter().map(Vec::len).max().unwrap_or(0);
    (0..rounds)
        .flat_map(|i| all.iter().filter_map(move |events| events.get(i).cloned()))
        .collect()
}

fn check_expected(scenarios: &[Scenario], core: &Core, how: &str) {
    assert_eq!(
        core.stale_releases, 0,
        "a release while newer evidence was pending, {how}"
    );
    let states = core.states();
    for s in scenarios {
        for (account, want) in &s.accounts {
            let got = states.get(account).copied().unwrap_or(AccountState::Normal);
            assert_eq!(got, want.state, "{}: {account} {how}", s.name);
            let fired = core.fired.get(account).copied().unwrap_or_default();
            let want_rules: RuleSet = want.rules.iter().copied().collect();
            assert_eq!(fired, want_rules, "{}: {account}'s rules", s.name);
        }
    }
}

#[test]
fn the_scenario_file_is_complete() {
    let scenarios = load();
    assert!(scenarios.len() >= 15, "{} scenarios", scenarios.len());
    for kind in [
        "fan_in_smurfing",
        "direct_rmt",
        "layering",
        "bot_farm",
        "market_price_abuse",
        "dormant",
        "gray",
        "legitimate",
    ] {
        assert!(
            scenarios.iter().any(|s| s.kind == kind),
            "no {kind} scenario"
        );
    }
    let mut names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), scenarios.len(), "names are unique");
    for s in &scenarios {
        for e in &s.events {
            assert!(
                s.accounts.contains_key(&e.to),
                "{}: {} receives but has no expectation",
                s.name,
                e.to
            );
        }
        for other in scenarios.iter().filter(|o| o.name != s.name) {
            assert!(
                s.accounts.keys().all(|a| !other.accounts.contains_key(a)),
                "{} and {} share an account",
                s.name,
                other.name
            );
        }
    }
}

#[test]
fn every_scenario_ends_as_written_paced_and_in_a_burst() {
    let scenarios = load();
    for s in &scenarios {
        let events = s.game_events("", T0);
        let one = std::slice::from_ref(s);
        check_expected(one, &run(&events, PACED), "paced");
        let burst = run(&events, BURST);
        check_expected(one, &burst, "in a burst");
        // Judged on the whole burst, a fraudster is not released even for
        // a moment (paced, an early window may have looked harmless).
        for (account, want) in &s.accounts {
            if want.state != AccountState::Normal {
                assert_eq!(
                    burst.releases.get(account),
                    None,
                    "{}: {account} was released during the burst",
                    s.name
                );
            }
        }
    }
    let fan_in = scenarios
        .iter()
        .find(|s| s.name == "fan-in-smurfing")
        .unwrap();
    let paced = run(&fan_in.game_events("", T0), PACED);
    assert_eq!(
        paced.releases.get("fi-boss"),
        Some(&1),
        "paced, R4 alone (30) released the account before the rest came"
    );
    // All at once, sharing one partition, as the pipeline suite sends them.
    let events = in_rounds(&scenarios, "");
    let paced = run(&events, PACED);
    check_expected(&scenarios, &paced, "paced, all scenarios in rounds");
    check_expected(&scenarios, &run(&events, BURST), "in one burst");
    assert!(paced.verdicts > 20, "{} verdicts", paced.verdicts);
}

fn delays() -> impl Strategy<Value = Vec<Delay>> {
    prop::collection::vec(prop_oneof![0..4usize, 4..40usize, Just(usize::MAX)], 1..64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_timing_of_verdicts_ends_the_scenarios_as_written(delays in delays()) {
        let scenarios = load();
        let events = in_rounds(&scenarios, "");
        let core = run(&events, |n| delays[n % delays.len()]);
        check_expected(&scenarios, &core, &format!("with delays {delays:?}"));
    }
}

// ------------------------------------------------------ generated streams

/// One generated trade: (target, sender, seconds after the previous one,
/// amount class, priced far below the amount, chat class).
type Raw = (usize, usize, i64, usize, bool, usize);

fn stream() -> impl Strategy<Value = Vec<GameEvent>> {
    let raw = (
        0..3usize,
        0..8usize,
        0..45i64,
        0..5usize,
        prop::bool::weighted(0.15),
        0..6usize,
    );
    prop::collection::vec(raw, 1..40).prop_map(|raw: Vec<Raw>| {
        let mut at = 0i64;
        raw.into_iter()
            .enumerate()
            .map(|(i, (target, sender, gap, amount, priced, chat))| {
                at += gap;
                let amount = [100, 5_000, 90_000, 400_000, 1_200_000][amount];
                let chat = match chat {
                    0 => Some("口座に送金して".to_owned()),
                    1 => Some("gg".to_owned()),
                    _ => None,
                };
                GameEvent {
                    event_id: format!("g{i}"),
                    timestamp: EventTime::from_micros(T0.as_micros() + at * 1_000_000),
                    event_type: "TRADE".into(),
                    actor_id: format!("sender{sender}"),
                    target_id: format!("target{target}"),
                    action_details: kusanagi_schemas::ActionDetails {
                        currency_amount: amount,
                        item_id: priced.then(|| "gem".to_owned()),
                        market_avg_price: priced.then_some(amount / 200 + 1),
                    },
                    context_metadata: kusanagi_schemas::ContextMetadata {
                        recent_chat_log: chat,
                        ..Default::default()
                    },
                    tenant_id: "default".into(),
                }
            })
            .collect()
    })
}

/// Accounts whose last screened window holds every rule of their earlier
/// windows, and five or more senders if any of them had.
fn last_window_holds_the_most(core: &Core) -> Vec<String> {
    core.windows_seen
        .iter()
        .filter(|(_, windows)| {
            let (union, many) = windows
                .iter()
                .fold((RuleSet::EMPTY, false), |(u, m), (r, f)| {
                    (u.union(*r), m || *f)
                });
            windows.last() == Some(&(union, many))
        })
        .map(|(account, _)| account.clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_timing_of_verdicts_ends_weaker_than_the_paced_run(
        events in stream(),
        delays in delays(),
    ) {
        let paced = run(&events, PACED);
        let burst = run(&events, BURST);
        let any = run(&events, |n| delays[n % delays.len()]);
        prop_assert_eq!(any.stale_releases + burst.stale_releases, 0, "released on stale evidence");
        let (want, in_burst, got): (BTreeMap<_, _>, BTreeMap<_, _>, BTreeMap<_, _>) =
            (paced.states(), burst.states(), any.states());
        prop_assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>());
        for (account, paced_state) in &want {
            prop_assert!(
                severity(got[account]) >= severity(*paced_state),
                "{}: {:?} with delays {:?}, {:?} paced", account, got[account], delays, paced_state
            );
            prop_assert!(severity(in_burst[account]) >= severity(*paced_state));
        }
        for account in last_window_holds_the_most(&paced) {
            prop_assert_eq!(got[&account], want[&account], "{} with delays {:?}", account, delays);
            prop_assert_eq!(in_burst[&account], want[&account], "{} in a burst", account);
        }
    }
}
