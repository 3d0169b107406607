//! The routes under `/api/v1/tenants/{tenant}`: the state routes and
//! operators' verdicts of an account of a named tenant. A key of every
//! tenant names the tenant here when several hold the same id (the routes
//! without it answer 409 `ambiguous_account`); a key bound to a tenant may
//! name only its own (403 `foreign_tenant`). Each handler is the route
//! without the tenant's, given the tenant ([`AccountId::tenant`]).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::{Extension, Json};

use super::Problem;
use super::accounts::{self, AccountBody, AccountsApi, AtBody, AtQuery, RangeQuery, VersionsBody};
use super::auth::Caller;
use super::error::{AccountId, ApiQuery};
use super::overrides::{self, Accepted, OverridesApi, VerdictBody};

/// `GET /api/v1/tenants/{tenant}/accounts/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/accounts/{id}",
    tag = "accounts",
    operation_id = "tenant_account_latest",
    summary = "The latest state of a tenant's account",
    params(
        ("tenant" = String, Path, description = "the tenant (`tenant_id` of the account's events)", example = "default"),
        ("id" = String, Path, description = "the account id (`target_id` of its events)", example = "player-42"),
    ),
    responses(
        (status = 200, description = "the latest state", body = AccountBody),
        (status = 403, description = "the key is bound to another tenant (`foreign_tenant`)", body = Problem),
        (status = 404, description = "the tenant has no account of this id (`not_found`)", body = Problem),
        (status = 410, description = "the account was erased on request (`erased`)", body = Problem),
        (status = 503, description = "this copy is still reading the account topics (`not_ready`, `Retry-After`)", body = Problem,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
    )
)]
pub async fn latest(
    api: State<AccountsApi>,
    caller: Extension<Arc<Caller>>,
    named: AccountId,
) -> Response {
    accounts::latest(api, caller, named).await
}

/// `GET /api/v1/tenants/{tenant}/accounts/{id}/at?time=T`.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/accounts/{id}/at",
    tag = "accounts",
    operation_id = "tenant_account_at",
    summary = "The state of a tenant's account in effect at a time",
    params(
        ("tenant" = String, Path, description = "the tenant", example = "default"),
        ("id" = String, Path, description = "the account id", example = "player-42"),
        AtQuery,
    ),
    responses(
        (status = 200, description = "the state then", body = AtBody),
        (status = 400, description = "`time` missing (`missing_time`) or not a time (`invalid_time`)", body = Problem),
        (status = 403, description = "the key is bound to another tenant (`foreign_tenant`)", body = Problem),
        (status = 404, description = "no such account (`not_found`), or its moves before the time are past retention (`history_expired`)", body = Problem),
        (status = 410, description = "the account was erased on request (`erased`)", body = Problem),
        (status = 503, description = "this copy is still reading the account topics (`not_ready`)", body = Problem,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
    )
)]
pub async fn at(
    api: State<AccountsApi>,
    caller: Extension<Arc<Caller>>,
    named: AccountId,
    query: ApiQuery<AtQuery>,
) -> Response {
    accounts::at(api, caller, named, query).await
}

/// `GET /api/v1/tenants/{tenant}/accounts/{id}/versions?from=A&to=B`.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/accounts/{id}/versions",
    tag = "accounts",
    operation_id = "tenant_account_versions",
    summary = "A tenant's account's moves in [from, to), in order, paged",
    params(
        ("tenant" = String, Path, description = "the tenant", example = "default"),
        ("id" = String, Path, description = "the account id", example = "player-42"),
        RangeQuery,
    ),
    responses(
        (status = 200, description = "the moves (`truncated` when more follow)", body = VersionsBody),
        (status = 400, description = "a bound is not a time (`invalid_time`), `from` is after `to` (`invalid_range`), or `after_version` is not an integer (`invalid_query`)", body = Problem),
        (status = 403, description = "the key is bound to another tenant (`foreign_tenant`)", body = Problem),
        (status = 404, description = "the tenant has no account of this id (`not_found`)", body = Problem),
        (status = 410, description = "the account was erased on request (`erased`)", body = Problem),
        (status = 503, description = "this copy is still reading the account topics (`not_ready`)", body = Problem,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
    )
)]
pub async fn versions(
    api: State<AccountsApi>,
    caller: Extension<Arc<Caller>>,
    named: AccountId,
    query: ApiQuery<RangeQuery>,
) -> Response {
    accounts::versions(api, caller, named, query).await
}

/// `POST /api/v1/tenants/{tenant}/accounts/{id}/verdict`.
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/accounts/{id}/verdict",
    tag = "accounts",
    operation_id = "tenant_post_verdict",
    summary = "An operator's verdict on a tenant's account: release, surveil or ban",
    description = "As `POST /api/v1/accounts/{id}/verdict`, for the named tenant's account.",
    params(
        ("tenant" = String, Path, description = "the tenant", example = "default"),
        ("id" = String, Path, description = "the account id", example = "player-42"),
    ),
    request_body = VerdictBody,
    responses(
        (status = 202, description = "the verdict was published", body = Accepted),
        (status = 400, description = "the body is not a verdict (`invalid_request`)", body = Problem),
        (status = 403, description = "the key is bound to another tenant (`foreign_tenant`)", body = Problem),
        (status = 404, description = "the tenant has no account of this id (`not_found`)", body = Problem),
        (status = 410, description = "the account was erased on request (`erased`)", body = Problem),
        (status = 422, description = "a verdict the account's state does not allow (`invalid_verdict`)", body = Problem),
        (status = 503, description = "this copy is still reading the account topics (`not_ready`), or the verdict could not be published (`unavailable`)", body = Problem),
    )
)]
pub async fn post_verdict(
    api: State<Arc<OverridesApi>>,
    caller: Extension<Arc<Caller>>,
    named: AccountId,
    body: Result<Json<VerdictBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    overrides::post_verdict(api, caller, named, body).await
}
