//! The state API, served from the view stage's index:
//!
//! - `GET /api/v1/accounts/{id}`: the latest state.
//! - `GET /api/v1/accounts/{id}/at?time=T`: the state in effect at `T`.
//! - `GET /api/v1/accounts/{id}/versions?from=A&to=B[&after_version=N]`: the
//!   moves in `[A, B)`, paged by version.
//! - `POST /api/v1/withdrawals/check` `{"account_id": ..}`: 200 allowed,
//!   423 restricted, 403 banned (`SCREENING.md`).
//!
//! Times are RFC 3339 or milliseconds since the epoch. A key bound to a
//! tenant sees only that tenant's accounts: another tenant's account is
//! answered as an unknown one (404, or allowed for a withdrawal check, as
//! for an account never screened), so nothing leaks across tenants. Until
//! the view has caught up with Kafka every route answers 503.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, SecondsFormat, Utc};
use kusanagi_schemas::{Account, AccountState, Trigger};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
pub(super) use super::error::problem;
use super::error::{AccountId, ApiQuery};
use super::openapi::{AccountStateName, TriggerName, WithdrawalName};
use super::{InvalidRequest, Problem};
use crate::runtime::Metrics;
use crate::stages::view::{AccountIndex, Version, View, Withdrawal};

/// What the state routes need.
#[derive(Debug, Clone)]
pub struct AccountsApi {
    /// The index.
    pub view: Arc<View>,
    /// Counters.
    pub metrics: Metrics,
}

pub(super) fn not_ready() -> Response {
    let mut r = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "this copy is still reading the account topics from Kafka; retry shortly".into(),
    );
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

pub(super) fn not_found(id: &str) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no account `{id}` is known"),
    )
}

fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A time given as RFC 3339 or as milliseconds since the epoch.
fn parse_time(name: &'static str, raw: &str) -> Result<i64, InvalidRequest> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            InvalidRequest::new(
                name,
                format!(
                    "RFC 3339 (2026-11-29T10:00:00Z) or milliseconds since the epoch, found {raw:?} ({e})"
                ),
            )
        })
}

fn invalid_time(invalid: InvalidRequest) -> Response {
    problem(StatusCode::BAD_REQUEST, "invalid_time", invalid.to_string())
}

/// The latest state of the account `id` a request means, if `caller` may
/// see it. `tenant`: the tenant the request names (its path, or a check's
/// `tenant_id`), which a key bound to another tenant may not name. Without
/// one, a key bound to a tenant means its own tenant's account, and a key
/// of every tenant that of the one tenant holding the id (`Err`: 409
/// `ambiguous_account` when several do). Only accounts with a state are
/// answered: an erased one (a tombstone) is gone even if moves of it are
/// still retained.
pub(super) fn visible_account<'a>(
    index: &'a AccountIndex,
    caller: &Caller,
    tenant: Option<&str>,
    id: &str,
) -> Result<Option<&'a Account>, NotNamed> {
    if let Some(named) = tenant {
        if !caller.sees(named) {
            return Err(NotNamed::ForeignTenant {
                named: named.to_owned(),
            });
        }
        return Ok(index.latest(named, id));
    }
    if let Some(own) = caller.tenant.as_deref() {
        return Ok(index.latest(own, id));
    }
    let mut held: Vec<&Account> = index
        .tenants_of(id)
        .filter_map(|t| index.latest(t, id))
        .collect();
    if held.len() > 1 {
        let mut tenants: Vec<String> = held.iter().map(|a| a.tenant_id.clone()).collect();
        tenants.sort();
        return Err(NotNamed::Ambiguous {
            id: id.to_owned(),
            tenants,
        });
    }
    Ok(held.pop())
}

/// Why a request does not name one account its key may see.
#[derive(Debug)]
pub(super) enum NotNamed {
    /// Several tenants hold the id a key of every tenant named: 409
    /// `ambiguous_account`, naming them.
    Ambiguous { id: String, tenants: Vec<String> },
    /// A key bound to one tenant named another: 403 `foreign_tenant`.
    ForeignTenant { named: String },
}

impl IntoResponse for NotNamed {
    fn into_response(self) -> Response {
        match self {
            NotNamed::Ambiguous { id, tenants } => problem(
                StatusCode::CONFLICT,
                "ambiguous_account",
                format!(
                    "`{id}` is an account of several tenants ({}); name one: \
                     /api/v1/tenants/{{tenant}}/accounts/{id}, or `tenant_id` in a \
                     withdrawal check",
                    tenants.join(", ")
                ),
            ),
            NotNamed::ForeignTenant { named } => problem(
                StatusCode::FORBIDDEN,
                "foreign_tenant",
                format!("this key is bound to another tenant; it cannot name tenant `{named}`"),
            ),
        }
    }
}

/// `410 Gone` if `id` was erased on request and `caller` may know it
/// (a tenant key learns of its own tenant's erasures only; `tenant`: the
/// tenant the request names, if any).
pub(super) fn erased(
    index: &AccountIndex,
    caller: &Caller,
    tenant: Option<&str>,
    id: &str,
) -> Option<Response> {
    let g = index.gone(id)?;
    let concerns = |t: &str| caller.sees(t) && tenant.is_none_or(|n| n == t);
    let known = if g.tenants.is_empty() {
        tenant.is_none_or(|n| caller.sees(n))
    } else {
        g.tenants.iter().any(|t| concerns(t))
    };
    if !known {
        return None;
    }
    Some(problem(
        StatusCode::GONE,
        "erased",
        format!(
            "`{id}` was erased on request at {}; nothing about it is kept",
            rfc3339_ms(g.requested_ms)
        ),
    ))
}

fn history_expired(id: &str, first: Option<i64>) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "history_expired",
        match first {
            Some(ms) => format!(
                "the moves of `{id}` before {} are past the retention of accounts.transitions; the archive's transitions table holds them",
                rfc3339_ms(ms)
            ),
            None => format!(
                "the moves of `{id}` are past the retention of accounts.transitions; the archive's transitions table holds them"
            ),
        },
    )
}

/// An account's latest state.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AccountLatest)]
pub(super) struct AccountBody<'a> {
    account_id: &'a str,
    tenant_id: &'a str,
    #[schema(value_type = AccountStateName)]
    state: AccountState,
    /// Moves so far (0: never moved).
    version: i64,
    /// RFC 3339.
    updated_at: String,
    #[schema(value_type = WithdrawalName)]
    withdrawal: &'static str,
}

pub(super) fn withdrawal_name(w: Withdrawal) -> &'static str {
    match w {
        Withdrawal::Allowed => "allowed",
        Withdrawal::Restricted => "restricted",
        Withdrawal::Banned => "banned",
    }
}

fn account_body(a: &Account) -> AccountBody<'_> {
    AccountBody {
        account_id: &a.account_id,
        tenant_id: &a.tenant_id,
        state: a.state,
        version: a.version,
        updated_at: a.updated_at.to_rfc3339(),
        withdrawal: withdrawal_name(Withdrawal::for_state(Some(a.state))),
    }
}

/// `GET /api/v1/accounts/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{id}",
    tag = "accounts",
    operation_id = "account_latest",
    summary = "An account's latest state",
    description = "A key bound to a tenant sees its own tenant's accounts only: another's is answered as unknown.",
    params(("id" = String, Path, description = "the account id (`target_id` of its events)", example = "player-42")),
    responses(
        (status = 200, description = "the latest state", body = AccountBody),
        (status = 404, description = "no account of this id is known (`not_found`)", body = Problem),
        (status = 409, description = "a key of every tenant named an id several tenants hold (`ambiguous_account`)", body = Problem),
        (status = 410, description = "the account was erased on request (`erased`)", body = Problem),
        (status = 503, description = "this copy is still reading the account topics (`not_ready`, `Retry-After`)", body = Problem,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
    )
)]
pub async fn latest(
    State(api): State<AccountsApi>,
    Extension(caller): Extension<Arc<Caller>>,
    named: AccountId,
) -> Response {
    let (tenant, id) = (named.tenant.as_deref(), named.id.as_str());
    let r = match api.view.read_ready() {
        None => not_ready(),
        Some(index) => match visible_account(&index, &caller, tenant, id) {
            Ok(Some(account)) => Json(account_body(account)).into_response(),
            Ok(None) => erased(&index, &caller, tenant, id).unwrap_or_else(|| not_found(id)),
            Err(refused) => refused.into_response(),
        },
    };
    let route = named.route(
        "/api/v1/accounts/{id}",
        "/api/v1/tenants/{tenant}/accounts/{id}",
    );
    api.metrics.http_request(route, r.status().as_u16());
    r
}

/// The query of `/at`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtQuery {
    /// The time: RFC 3339, or milliseconds since the epoch.
    #[param(required = true, schema_with = super::openapi::time_schema)]
    time: Option<String>,
}

/// An account's state at a time.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AccountAt)]
pub(super) struct AtBody<'a> {
    account_id: &'a str,
    /// The time asked, RFC 3339.
    time: String,
    #[schema(value_type = AccountStateName)]
    state: AccountState,
    /// The version in effect then (0: none yet).
    version: i64,
    #[schema(value_type = WithdrawalName)]
    withdrawal: &'static str,
}

/// `GET /api/v1/accounts/{id}/at?time=T`.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{id}/at",
    tag = "accounts",
    operation_id = "account_at",
    summary = "The state of an account in effect at a time",
    params(("id" = String, Path, description = "the account id", example = "player-42"), AtQuery),
    responses(
        (status = 200, description = "the state then", body = AtBody),
        (status = 400, description = "`time` missing (`missing_time`) or not a time (`invalid_time`)", body = Problem),
        (status = 404, description = "no such account (`not_found`), or its moves before the time are past retention (`history_expired`)", body = Problem),
        (status = 409, description = "a key of every tenant named an id several tenants hold (`ambiguous_account`)", body = Problem),
        (status = 410, description = "the account was erased on request (`erased`)", body = Problem),
        (status = 503, description = "this copy is still reading the account topics (`not_ready`)", body = Problem,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
    )
)]
pub async fn at(
    State(api): State<AccountsApi>,
    Extension(caller): Extension<Arc<Caller>>,
    named: AccountId,
    ApiQuery(q): ApiQuery<AtQuery>,
) -> Response {
    let (named_tenant, id) = (named.tenant.as_deref(), named.id.as_str());
    let r = (|| {
        let Some(raw) = q.time.as_deref() else {
            return problem(
                StatusCode::BAD_REQUEST,
                "missing_time",
                "expected ?time=T (RFC 3339 or milliseconds since the epoch)".into(),
            );
        };
        let time_ms = match parse_time("time", raw) {
            Ok(t) => t,
            Err(m) => return invalid_time(m),
        };
        let Some(index) = api.view.read_ready() else {
            return not_ready();
        };
        let account = match visible_account(&index, &caller, named_tenant, id) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return erased(&index, &caller, named_tenant, id).unwrap_or_else(|| not_found(id));
            }
            Err(refused) => return refused.into_response(),
        };
        let tenant = account.tenant_id.as_str();
        let history = index.versions(tenant, id, i64::MIN, i64::MAX);
        // Retention removes the oldest moves first: before the first one
        // held, the state is unknown unless the history is whole.
        let whole = history
            .first()
            .map_or(account.version == 0, |v| v.version == 1);
        let first = history.first().map(|v| v.effective_ms);
        if !whole && first.is_none_or(|f| time_ms < f) {
            return history_expired(id, first);
        }
        let v = index.version_at(tenant, id, time_ms).flatten();
        let (state, version) = v.map_or((AccountState::Normal, 0), |v| (v.to, v.version));
        Json(AtBody {
            account_id: id,
            time: rfc3339_ms(time_ms),
            state,
            version,
            withdrawal: withdrawal_name(Withdrawal::for_state(Some(state))),
        })
        .into_response()
    })();
    let route = named.route(
        "/api/v1/accounts/{id}/at",
        "/api/v1/tenants/{tenant}/accounts/{id}/at",
    );
    api.metrics.http_request(route, r.status().as_u16());
    r
}

/// The query of `/versions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// The range's start, RFC 3339 or milliseconds since the epoch (default: the first move).
    #[param(schema_with = super::openapi::time_schema)]
    from: Option<String>,
    /// The range's end, excluded (default: no end).
    #[param(schema_with = super::openapi::time_schema)]
    to: Option<String>,
    /// Only versions after this one (the next page).
    after_version: Option<i64>,
}

/// One move of an account.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AccountVersion)]
pub(super) struct VersionBody<'a> {
    version: i64,
    /// When the move took effect, RFC 3339.
    effective_at: String,
    #[schema(value_type = AccountStateName)]
    from: AccountState,
    #[schema(value_type = AccountStateName)]
    to: AccountState,
    #[schema(value_type = TriggerName)]
    trigger: Trigger,
    rule: &'a str,
    event_time: String,
    source_id: &'a str,
    evidence: &'a str,
}

fn version_body(v: &Version) -> VersionBody<'_> {
    VersionBody {
        version: v.version,
        effective_at: rfc3339_ms(v.effective_ms),
        from: v.from,
        to: v.to,
        trigger: v.transition.trigger,
        rule: &v.transition.rule,
        event_time: v.transition.event_time.to_rfc3339(),
        source_id: &v.transition.source_id,
        evidence: &v.transition.evidence,
    }
}

/// A page of an account's moves.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AccountVersions)]
pub(super) struct VersionsBody<'a> {
    account_id: &'a str,
    versions: Vec<VersionBody<'a>>,
    /// More versions are in the range than one answer lists; ask again
    /// with `after_version` set to `next_after_version`.
    truncated: bool,
    /// The last version listed, when `truncated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after_version: Option<i64>,
}

/// `GET /api/v1/accounts/{id}/versions?from=A&to=B`.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{id}/versions",
    tag = "accounts",
    operation_id = "account_versions",
    summary = "An account's moves in [from, to), in order, paged",
    params(("id" = String, Path, description = "the account id", example = "player-42"), RangeQuery),
    responses(
        (status = 200, description = "the moves (`truncated` when more follow)", body = VersionsBody),
        (status = 400, description = "a bound is not a time (`invalid_time`), `from` is after `to` (`invalid_range`), or `after_version` is not an integer (`invalid_query`)", body = Problem),
        (status = 404, description = "no account of this id is known (`not_found`)", body = Problem),
        (status = 409, description = "a key of every tenant named an id several tenants hold (`ambiguous_account`)", body = Problem),
        (status = 410, description = "the account was erased on request (`erased`)", body = Problem),
        (status = 503, description = "this copy is still reading the account topics (`not_ready`)", body = Problem,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
    )
)]
pub async fn versions(
    State(api): State<AccountsApi>,
    Extension(caller): Extension<Arc<Caller>>,
    named: AccountId,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Response {
    let (named_tenant, id) = (named.tenant.as_deref(), named.id.as_str());
    let r = (|| {
        let bound = |name, raw: &Option<String>, default| match raw {
            None => Ok(default),
            Some(s) => parse_time(name, s),
        };
        let from = match bound("from", &q.from, i64::MIN) {
            Ok(t) => t,
            Err(m) => return invalid_time(m),
        };
        let to = match bound("to", &q.to, i64::MAX) {
            Ok(t) => t,
            Err(m) => return invalid_time(m),
        };
        if from > to {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_range",
                format!(
                    "`from` ({}) is after `to` ({})",
                    rfc3339_ms(from),
                    rfc3339_ms(to)
                ),
            );
        }
        let Some(index) = api.view.read_ready() else {
            return not_ready();
        };
        let tenant = match visible_account(&index, &caller, named_tenant, id) {
            Ok(Some(a)) => a.tenant_id.as_str(),
            Ok(None) => {
                return erased(&index, &caller, named_tenant, id).unwrap_or_else(|| not_found(id));
            }
            Err(refused) => return refused.into_response(),
        };
        let all = index.versions(tenant, id, from, to);
        // Versions are in order: a page starts after the last one listed,
        // whatever their times (moves can share a timestamp).
        let after = q.after_version.unwrap_or(i64::MIN);
        let all = &all[all.partition_point(|v| v.version <= after)..];
        let shown = &all[..all.len().min(api.view.max_versions)];
        let truncated = shown.len() < all.len();
        Json(VersionsBody {
            account_id: id,
            versions: shown.iter().map(version_body).collect(),
            truncated,
            next_after_version: truncated.then(|| shown.last().map(|v| v.version)).flatten(),
        })
        .into_response()
    })();
    let route = named.route(
        "/api/v1/accounts/{id}/versions",
        "/api/v1/tenants/{tenant}/accounts/{id}/versions",
    );
    api.metrics.http_request(route, r.status().as_u16());
    r
}

/// The body of a withdrawal check.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CheckRequest {
    /// The account that asks to withdraw.
    #[schema(example = "player-42")]
    account_id: String,
    /// Its tenant: needed when a key of every tenant names an id several
    /// tenants hold; a key bound to a tenant may name only its own.
    #[schema(example = "default")]
    tenant_id: Option<String>,
}

/// Whether an account may withdraw.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = WithdrawalCheck)]
pub(super) struct CheckBody<'a> {
    account_id: &'a str,
    /// `NORMAL` for an account never screened.
    #[schema(value_type = AccountStateName)]
    state: AccountState,
    allowed: bool,
    #[schema(value_type = WithdrawalName)]
    withdrawal: &'static str,
}

/// `POST /api/v1/withdrawals/check`.
#[utoipa::path(
    post,
    path = "/api/v1/withdrawals/check",
    tag = "accounts",
    operation_id = "check_withdrawal",
    summary = "May this account withdraw? 200 allowed, 423 restricted, 403 banned",
    description = "An account never screened, or another tenant's for a key bound to a tenant, is allowed.",
    request_body = CheckRequest,
    responses(
        (status = 200, description = "allowed", body = CheckBody),
        (status = 400, description = "the body is not `{\"account_id\": \"...\"}` (`invalid_request`)", body = Problem),
        (status = 403, description = "banned; or `tenant_id` names a tenant this key is not bound to (`foreign_tenant`)", body = CheckBody),
        (status = 409, description = "a key of every tenant named, without `tenant_id`, an id several tenants hold (`ambiguous_account`)", body = Problem),
        (status = 410, description = "the account was erased on request (`erased`)", body = Problem),
        (status = 423, description = "restricted: withdrawals blocked pending review", body = CheckBody),
        (status = 503, description = "this copy is still reading the account topics (`not_ready`)", body = Problem,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
    )
)]
pub async fn check_withdrawal(
    State(api): State<AccountsApi>,
    Extension(caller): Extension<Arc<Caller>>,
    body: Result<Json<CheckRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let r = match body {
        Err(e) => problem(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("expected {{\"account_id\": \"...\"}}: {}", e.body_text()),
        ),
        Ok(Json(req)) => match api.view.read_ready() {
            None => not_ready(),
            Some(index) => {
                let (tenant, id) = (req.tenant_id.as_deref(), req.account_id.as_str());
                let state = match visible_account(&index, &caller, tenant, id) {
                    Ok(a) => a.map(|a| a.state),
                    Err(refused) => {
                        let r = refused.into_response();
                        let status = r.status().as_u16();
                        api.metrics
                            .http_request("/api/v1/withdrawals/check", status);
                        return r;
                    }
                };
                if state.is_none()
                    && let Some(gone) = erased(&index, &caller, tenant, id)
                {
                    api.metrics.http_request("/api/v1/withdrawals/check", 410);
                    return gone;
                }
                let w = Withdrawal::for_state(state);
                let status = match w {
                    Withdrawal::Allowed => StatusCode::OK,
                    Withdrawal::Restricted => StatusCode::LOCKED,
                    Withdrawal::Banned => StatusCode::FORBIDDEN,
                };
                (
                    status,
                    Json(CheckBody {
                        account_id: &req.account_id,
                        state: state.unwrap_or(AccountState::Normal),
                        allowed: w == Withdrawal::Allowed,
                        withdrawal: withdrawal_name(w),
                    }),
                )
                    .into_response()
            }
        },
    };
    api.metrics
        .http_request("/api/v1/withdrawals/check", r.status().as_u16());
    r
}
