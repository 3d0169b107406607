//! Every account checked against its script, by one view copy: latest
//! state, state at a time, versions, the withdrawal check, tombstones.

use kusanagi_schemas::AccountState;
use serde_json::Value;

use crate::copies::json;
use crate::history::{Script, t0};

use AccountState::*;

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn state_name(s: AccountState) -> &'static str {
    match s {
        Normal => "NORMAL",
        RestrictedWithdrawal => "RESTRICTED_WITHDRAWAL",
        UnderSurveillance => "UNDER_SURVEILLANCE",
        Banned => "BANNED",
    }
}

/// Every account answered as its script says, by the copy at `addr`.
pub(crate) fn check_all(addr: &str, admin: &str, scripts: &[Script]) {
    for s in scripts {
        let path = format!("/api/v1/accounts/{}", s.id);
        let (status, v) = json(addr, "GET", &path, admin, b"");
        let check = format!(r#"{{"account_id":"{}"}}"#, s.id);
        let (w_status, w) = json(
            addr,
            "POST",
            "/api/v1/withdrawals/check",
            admin,
            check.as_bytes(),
        );
        if s.erased {
            assert_eq!(status, 404, "{}: erased: {v}", s.id);
            assert_eq!(
                (w_status, &w["state"]),
                (200, &Value::from("NORMAL")),
                "{}",
                s.id
            );
            continue;
        }
        assert_eq!(status, 200, "{}: {v}", s.id);
        assert_eq!(v["state"], state_name(s.state()), "{}", s.id);
        assert_eq!(v["version"], s.moves.len() as i64, "{}", s.id);
        assert_eq!(v["tenant_id"], s.tenant.as_str());
        let want = match s.state() {
            Normal => 200,
            RestrictedWithdrawal | UnderSurveillance => 423,
            Banned => 403,
        };
        assert_eq!(w_status, want, "{}: {w}", s.id);
        assert_eq!(w["allowed"], want == 200);

        // The state at a time: before the first move, at each, between.
        let mut probes = vec![(t0(), Normal, 0)];
        for (k, (to, at)) in s.moves.iter().enumerate() {
            probes.push((*at - 1, if k == 0 { Normal } else { s.moves[k - 1].0 }, k));
            probes.push((*at, *to, k + 1));
            probes.push((*at + 1_000, *to, k + 1));
        }
        for (t, want, version) in probes {
            let (status, v) = json(
                addr,
                "GET",
                &format!("{path}/at?time={}", rfc3339(t)),
                admin,
                b"",
            );
            assert_eq!(status, 200, "{v}");
            assert_eq!(
                (v["state"].as_str(), v["version"].as_u64()),
                (Some(state_name(want)), Some(version as u64)),
                "{} at {}",
                s.id,
                rfc3339(t)
            );
        }
        // Versions: all of them, then a window holding only the second.
        let (_, v) = json(addr, "GET", &format!("{path}/versions"), admin, b"");
        let got: Vec<_> = v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["to"].as_str().unwrap().to_owned(),
                    x["effective_at"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let want: Vec<_> = s
            .moves
            .iter()
            .map(|(to, at)| (state_name(*to).to_owned(), rfc3339(*at)))
            .collect();
        assert_eq!(got, want, "{}", s.id);
        if s.moves.len() >= 2 {
            let (a, b) = (s.moves[1].1, s.moves[1].1 + 1);
            let q = format!("{path}/versions?from={}&to={b}", rfc3339(a));
            let (_, v) = json(addr, "GET", &q, admin, b"");
            assert_eq!(v["versions"].as_array().unwrap().len(), 1, "{}: {v}", s.id);
            assert_eq!(v["versions"][0]["version"], 2);
        }
    }
}
