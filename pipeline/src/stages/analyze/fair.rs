//! The order in which a batch's requests reach the model: tenants share
//! the model's budget by weight.
//!
//! Design. A batch's requests are started in this order, at most
//! `max_concurrency` at a time and paced by the model's rate limit, until
//! the batch's deadline; whatever is not answered by then gets the
//! fallback. Started in arrival order, a tenant flooding the batch would
//! take every early slot and push another tenant's few requests to the end,
//! and so to the fallback. Here tenants take turns by smooth weighted
//! round-robin (nginx's): while tenants wait, each gets its `share` of the
//! starts, interleaved; a tenant with nothing left drops out, and its turns
//! go to those still waiting (the order wastes no slot). Each tenant's own
//! requests keep their arrival order. Verdicts are still produced in
//! request order; only the starts are reordered.

use std::collections::{HashMap, VecDeque};

/// The order to start requests of `tenants` (one entry per request, in
/// arrival order) in, as indices into `tenants`; `share(t)` is tenant
/// `t`'s weight (at least 1).
pub fn fair_order(tenants: &[&str], share: impl Fn(&str) -> u32) -> Vec<usize> {
    // Each tenant's queue of request indices, tenants in order of first
    // arrival (which breaks ties).
    let mut queues: Vec<Turns> = Vec::new();
    let mut slot: HashMap<&str, usize> = HashMap::new();
    for (i, t) in tenants.iter().enumerate() {
        let q = *slot.entry(t).or_insert_with(|| {
            queues.push(Turns {
                weight: i64::from(share(t).max(1)),
                current: 0,
                queue: VecDeque::new(),
            });
            queues.len() - 1
        });
        queues[q].queue.push_back(i);
    }
    let mut order = Vec::with_capacity(tenants.len());
    while order.len() < tenants.len() {
        let mut total = 0;
        let mut best: Option<(usize, i64)> = None;
        for (k, q) in queues.iter_mut().enumerate() {
            if q.queue.is_empty() {
                continue;
            }
            q.current += q.weight;
            total += q.weight;
            if best.is_none_or(|(_, c)| q.current > c) {
                best = Some((k, q.current));
            }
        }
        let (b, _) = best.expect("a tenant with requests left");
        let q = &mut queues[b];
        q.current -= total;
        order.push(q.queue.pop_front().expect("not empty"));
    }
    order
}

/// One tenant's turn-taking state.
struct Turns {
    weight: i64,
    current: i64,
    queue: VecDeque<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_flood_does_not_push_another_tenant_to_the_end() {
        let mut tenants = vec!["a"; 50];
        tenants.extend(["b", "b"]);
        let order = fair_order(&tenants, |_| 1);
        // b's two requests start second and fourth, not 51st and 52nd.
        assert_eq!(&order[..4], &[0, 50, 1, 51]);
        assert_eq!(order.len(), 52);
        // Weighted: a's share 3 to b's 1 while both wait.
        let order = fair_order(&tenants, |t| if t == "a" { 3 } else { 1 });
        let firsts: Vec<&str> = order[..8].iter().map(|&i| tenants[i]).collect();
        assert_eq!(firsts, ["a", "a", "b", "a", "a", "a", "b", "a"]);
        assert!(fair_order(&[], |_| 1).is_empty());
    }

    proptest! {
        /// Every request starts once; a tenant's keep their order; while
        /// every tenant still waits, each has had its share of the starts
        /// (within one).
        #[test]
        fn starts_are_a_fair_interleaving(
            picks in prop::collection::vec(0..4usize, 0..200),
            weights in prop::collection::vec(1..5u32, 4),
        ) {
            const NAMES: [&str; 4] = ["a", "b", "c", "d"];
            let tenants: Vec<&str> = picks.iter().map(|&p| NAMES[p]).collect();
            let share = |t: &str| weights[NAMES.iter().position(|n| *n == t).unwrap()];
            let order = fair_order(&tenants, share);
            let mut seen = order.clone();
            seen.sort();
            prop_assert_eq!(seen, (0..tenants.len()).collect::<Vec<_>>());
            for name in NAMES {
                let mine: Vec<usize> = order.iter().copied().filter(|&i| tenants[i] == name).collect();
                prop_assert!(mine.windows(2).all(|w| w[0] < w[1]), "{} out of order", name);
            }
            let present: Vec<&str> = NAMES.iter().copied().filter(|n| tenants.contains(n)).collect();
            let total: u32 = present.iter().map(|t| share(t)).sum();
            let count = |t: &str| tenants.iter().filter(|x| **x == t).count();
            let mut started: HashMap<&str, usize> = HashMap::new();
            for (k, &i) in order.iter().enumerate() {
                // Fairness holds while every present tenant still waits.
                if present.iter().any(|t| started.get(t).copied().unwrap_or(0) == count(t)) {
                    break;
                }
                *started.entry(tenants[i]).or_default() += 1;
                let k = (k + 1) as f64;
                for t in &present {
                    let due = k * f64::from(share(t)) / f64::from(total);
                    let got = started.get(t).copied().unwrap_or(0) as f64;
                    prop_assert!((got - due).abs() <= 1.0 + 1e-9, "{} started {} of {} starts, due {:.2}", t, got, k, due);
                }
            }
        }
    }
}
