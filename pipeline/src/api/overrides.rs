//! `POST /api/v1/accounts/{id}/verdict` (operator): an analyst's verdict
//! on an account, applied by the state machine like a model's.
//!
//! The verdict goes to `l2.verdicts`, keyed by the account (so it reaches
//! the decide copy that owns the account), with `analyzer =
//! "operator:<key name>"`; decide applies it with the same rules as any
//! verdict (legal moves only, `BANNED` is final: a refused move is
//! recorded, not applied) and writes a `STATE_OVERRIDE` audit record of
//! what it did. The request itself is audited here as an `ADMIN_ACTION`.
//! Audit records name the verdict, never the account.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kusanagi_schemas::{
    AccountState, AuditKind, AuditRecord, EventTime, FraudType, RecordCodec, Verdict,
};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};

use super::accounts::{erased, not_found, not_ready, problem, visible_account};
use super::auth::Caller;
use super::erasures::deliver;
use super::error::AccountId;
use super::openapi::{AccountStateName, FraudTypeName};
use super::{InvalidRequest, Problem};
use crate::runtime::Metrics;
use crate::stages::view::View;

/// Longest reason accepted, in bytes.
const MAX_REASON_BYTES: usize = 2_000;

/// What the verdict route needs.
pub struct OverridesApi {
    /// Publishes verdicts and audit records.
    pub producer: FutureProducer,
    /// `l2.verdicts`.
    pub verdicts: String,
    /// `audit`.
    pub audit: String,
    /// The accounts (to check the account and learn its tenant).
    pub view: Arc<View>,
    /// Counters.
    pub metrics: Metrics,
}

impl std::fmt::Debug for OverridesApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverridesApi")
            .field("verdicts", &self.verdicts)
            .finish_non_exhaustive()
    }
}

/// The body of an operator's verdict.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerdictBody {
    /// `NORMAL` (release), `UNDER_SURVEILLANCE` or `BANNED`.
    #[schema(value_type = AccountStateName)]
    action: AccountState,
    /// Why, for the audit trail.
    reason: String,
    /// The kind of fraud found (`LEGITIMATE` for a release).
    #[schema(value_type = Option<FraudTypeName>)]
    fraud_type: Option<FraudType>,
}

/// A verdict taken for the decide stage.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = VerdictAccepted)]
pub(super) struct Accepted<'a> {
    /// The id of the request, in `l2.verdicts` and `audit`.
    request_id: &'a str,
    account_id: &'a str,
    #[schema(value_type = AccountStateName)]
    action: AccountState,
    /// The account's state when the verdict was asked.
    #[schema(value_type = AccountStateName)]
    from_state: AccountState,
}

/// The verdict an operator's body makes, or why it cannot be one.
fn verdict(
    id: &str,
    tenant: &str,
    body: &VerdictBody,
    by: &str,
    now: EventTime,
) -> Result<Verdict, InvalidRequest> {
    if body.reason.trim().is_empty() || body.reason.len() > MAX_REASON_BYTES {
        return Err(InvalidRequest::new(
            "reason",
            format!("1 to {MAX_REASON_BYTES} bytes (it is kept with the move)"),
        ));
    }
    let (risk_score, fraud_type) = match (body.action, body.fraud_type) {
        (AccountState::Normal, None | Some(FraudType::Legitimate)) => (0, FraudType::Legitimate),
        (AccountState::Normal, Some(_)) => {
            return Err(InvalidRequest::new(
                "fraud_type",
                "LEGITIMATE (or none) with a NORMAL verdict",
            ));
        }
        (AccountState::UnderSurveillance, Some(f)) if f != FraudType::Legitimate => (50, f),
        (AccountState::Banned, Some(f)) if f != FraudType::Legitimate => (100, f),
        (AccountState::UnderSurveillance | AccountState::Banned, _) => {
            return Err(InvalidRequest::new(
                "fraud_type",
                "RMT_SMURFING, RMT_DIRECT or MONEY_LAUNDERING for this action",
            ));
        }
        (AccountState::RestrictedWithdrawal, _) => {
            return Err(InvalidRequest::new(
                "action",
                "NORMAL, UNDER_SURVEILLANCE or BANNED (RESTRICTED_WITHDRAWAL comes from L1 rules only)",
            ));
        }
    };
    Ok(Verdict {
        request_id: format!(
            "op-{}-{:08x}",
            now.to_datetime()
                .unwrap_or_default()
                .format("%Y%m%dT%H%M%S%.6fZ"),
            rand::random::<u32>()
        ),
        event_time: now,
        tenant_id: tenant.to_owned(),
        target_id: id.to_owned(),
        is_fraud: body.action != AccountState::Normal,
        risk_score,
        fraud_type,
        recommended_action: body.action,
        reasoning: body.reason.trim().to_owned(),
        evidence_event_ids: Vec::new(),
        confidence: 1.0,
        analyzer: format!("operator:{by}"),
        fallback_reason: None,
    })
}

/// The handler.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{id}/verdict",
    tag = "accounts",
    operation_id = "post_verdict",
    summary = "An operator's verdict on an account: release, surveil or ban",
    description = "Published to `l2.verdicts` (and `audit`); the decide stage applies it if the move is legal (SCREENING.md: `BANNED` is final). 202 means published, not applied: read the account's versions to see the move.",
    params(("id" = String, Path, description = "the account id", example = "player-42")),
    request_body = VerdictBody,
    responses(
        (status = 202, description = "the verdict was published", body = Accepted),
        (status = 400, description = "the body is not a verdict (`invalid_request`)", body = Problem),
        (status = 404, description = "no account of this id is known (`not_found`)", body = Problem),
        (status = 409, description = "a key of every tenant named an id several tenants hold (`ambiguous_account`)", body = Problem),
        (status = 410, description = "the account was erased on request (`erased`)", body = Problem),
        (status = 422, description = "a verdict the account's state does not allow (`invalid_verdict`)", body = Problem),
        (status = 503, description = "this copy is still reading the account topics (`not_ready`), or the verdict could not be published (`unavailable`)", body = Problem),
    )
)]
pub async fn post_verdict(
    State(api): State<Arc<OverridesApi>>,
    Extension(caller): Extension<Arc<Caller>>,
    named: AccountId,
    body: Result<Json<VerdictBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let r = handle(&api, &caller, named.tenant.as_deref(), &named.id, body).await;
    let route = named.route(
        "/api/v1/accounts/{id}/verdict",
        "/api/v1/tenants/{tenant}/accounts/{id}/verdict",
    );
    api.metrics.http_request(route, r.status().as_u16());
    r
}

async fn handle(
    api: &OverridesApi,
    caller: &Caller,
    named_tenant: Option<&str>,
    id: &str,
    body: Result<Json<VerdictBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!(
                    "expected {{\"action\": \"NORMAL|UNDER_SURVEILLANCE|BANNED\", \"reason\": \"...\", \"fraud_type\": \"...\"}}: {}",
                    e.body_text()
                ),
            );
        }
    };
    let (tenant, from_state) = {
        let Some(index) = api.view.read_ready() else {
            return not_ready();
        };
        match visible_account(&index, caller, named_tenant, id) {
            Ok(Some(a)) => (a.tenant_id.clone(), a.state),
            Ok(None) => {
                return erased(&index, caller, named_tenant, id).unwrap_or_else(|| not_found(id));
            }
            Err(refused) => return refused.into_response(),
        }
    };
    let now = EventTime::from_micros(chrono::Utc::now().timestamp_micros());
    let v = match verdict(id, &tenant, &body, &caller.name, now) {
        Ok(v) => v,
        Err(why) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_verdict",
                why.to_string(),
            );
        }
    };
    let audit = AuditRecord {
        audit_id: format!("{}:asked", v.request_id),
        at: now,
        kind: AuditKind::AdminAction,
        subject_hash: None,
        actor: caller.name.clone(),
        request_id: Some(v.request_id.clone()),
        detail: format!(
            "operator verdict {} asked (tenant {tenant}, account then {})",
            body.action.as_str(),
            from_state.as_str()
        ),
    };
    let payload = RecordCodec::<Verdict>::new().encode(&v);
    let sent = match deliver(&api.producer, &api.verdicts, id.as_bytes(), &payload).await {
        Ok(()) => {
            let audit_payload = RecordCodec::<AuditRecord>::new().encode(&audit);
            deliver(
                &api.producer,
                &api.audit,
                v.request_id.as_bytes(),
                &audit_payload,
            )
            .await
        }
        Err(e) => Err(e),
    };
    if let Err(why) = sent {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the verdict could not be published ({why}); retry"),
        );
    }
    tracing::info!(request_id = %v.request_id, by = %caller.name, action = body.action.as_str(), "operator verdict");
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            request_id: &v.request_id,
            account_id: id,
            action: body.action,
            from_state,
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(action: AccountState, fraud: Option<FraudType>, reason: &str) -> VerdictBody {
        VerdictBody {
            action,
            reason: reason.into(),
            fraud_type: fraud,
        }
    }

    #[test]
    fn an_operator_body_makes_a_verdict_or_a_clear_refusal() {
        let now = EventTime::from_micros(1_700_000_000_000_000);
        let v = verdict(
            "bob",
            "t",
            &body(
                AccountState::Banned,
                Some(FraudType::RmtDirect),
                " sold gold ",
            ),
            "alice",
            now,
        )
        .unwrap();
        assert_eq!(
            (v.risk_score, v.analyzer.as_str(), v.reasoning.as_str()),
            (100, "operator:alice", "sold gold")
        );
        assert!(v.request_id.starts_with("op-20231114T"));
        let ok = verdict(
            "bob",
            "t",
            &body(AccountState::Normal, None, "false alarm"),
            "a",
            now,
        );
        assert_eq!(ok.unwrap().fraud_type, FraudType::Legitimate);
        for (b, word) in [
            (body(AccountState::Banned, None, "x"), "fraud_type"),
            (
                body(AccountState::Normal, Some(FraudType::RmtDirect), "x"),
                "LEGITIMATE",
            ),
            (
                body(AccountState::RestrictedWithdrawal, None, "x"),
                "L1 rules",
            ),
            (
                body(AccountState::Banned, Some(FraudType::RmtDirect), " "),
                "reason",
            ),
        ] {
            let err = verdict("bob", "t", &b, "a", now).unwrap_err().to_string();
            assert!(err.contains(word), "{err}");
        }
    }
}
