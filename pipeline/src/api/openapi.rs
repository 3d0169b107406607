//! The API's contract: an OpenAPI 3.1 document built from the handlers'
//! `#[utoipa::path]` declarations, completed here with what every route
//! shares:
//!
//! - the API-key security scheme (`X-API-Key`, or `Authorization: Bearer`)
//!   on every route of [`ROUTES`], and none on the health checks;
//! - the roles a route accepts (`x-kusanagi-roles`, and said in its
//!   description), and whether a key bound to a tenant is refused
//!   (`x-kusanagi-all-tenants`);
//! - the answers the guard and the limits give on any route: 401, 403,
//!   429 with `Retry-After`, and 503 past `http.request_timeout_ms`;
//! - the event contract (`schemas/json/game_event.v1.schema.json`, JSON
//!   Schema 2020-12 as OpenAPI 3.1 uses) as the `GameEvent` schema, and
//!   the events route's body: one event or a batch.
//!
//! `docs/openapi.json` is [`full_document`] (every route), checked by a test
//! to be current; `kusanagi openapi` prints it.

use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::path::PathItem;

use super::ROUTES;

/// The methods `item` has an operation for.
pub(super) fn methods(item: &PathItem) -> Vec<&'static str> {
    [
        ("GET", item.get.is_some()),
        ("POST", item.post.is_some()),
        ("PUT", item.put.is_some()),
        ("DELETE", item.delete.is_some()),
        ("PATCH", item.patch.is_some()),
        ("HEAD", item.head.is_some()),
        ("OPTIONS", item.options.is_some()),
        ("TRACE", item.trace.is_some()),
    ]
    .into_iter()
    .filter_map(|(m, present)| present.then_some(m))
    .collect()
}

/// Every route, whichever stages a process runs.
#[derive(OpenApi)]
#[openapi(paths(
    super::healthz,
    super::ready,
    super::metrics_text,
    super::openapi_json,
    super::events::post_events,
    super::erasures::post_erasure,
    super::overrides::post_verdict,
    super::accounts::latest,
    super::accounts::at,
    super::accounts::versions,
    super::accounts::check_withdrawal,
    super::tenants::latest,
    super::tenants::at,
    super::tenants::versions,
    super::tenants::post_verdict,
))]
struct EveryRoute;

/// The document of every route (`kusanagi openapi`; `docs/openapi.json` is
/// that of the default topology), with `max_batch_events` as the batch
/// limit of `POST /api/v1/events`.
pub fn full_document(max_batch_events: usize) -> Value {
    document(EveryRoute::openapi(), Some(max_batch_events))
}

/// `doc` (the routes a router mounted) completed with what they share.
/// `max_batch_events`: the batch limit of the events route, when it is
/// served.
pub(super) fn document(
    mut doc: utoipa::openapi::OpenApi,
    max_batch_events: Option<usize>,
) -> Value {
    doc.info = utoipa::openapi::InfoBuilder::new()
        .title("Kusanagi HTTP API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Event intake, account state, withdrawal checks, operators' verdicts and \
             erasure requests of a Kusanagi pipeline (docs/http-api.md). Every route but \
             the health checks needs an API key, in `X-API-Key` or as \
             `Authorization: Bearer <key>`; `x-kusanagi-roles` lists the roles a route \
             accepts.",
        ))
        .license(Some(
            utoipa::openapi::LicenseBuilder::new()
                .name("Apache-2.0")
                .identifier(Some("Apache-2.0"))
                .build(),
        ))
        .build();
    let mut v = serde_json::to_value(&doc).expect("an OpenAPI document serializes");
    v["components"]["securitySchemes"] = json!({
        "api_key": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "A key of `[auth]` (docs/http-api.md)",
        },
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "The same key as `Authorization: Bearer <key>`",
        },
    });
    let schemas = &mut v["components"]["schemas"];
    if !schemas.is_object() {
        *schemas = json!({});
    }
    schemas["GameEvent"] = game_event_schema();
    let paths = v["paths"].as_object_mut().expect("paths is an object");
    for (path, item) in paths.iter_mut() {
        let item = item.as_object_mut().expect("a path item is an object");
        for (method, op) in item.iter_mut() {
            let verb = method.to_ascii_uppercase();
            let access = ROUTES.iter().find(|r| r.method == verb && r.path == path);
            complete(op, access);
            if verb == "POST" && path == "/api/v1/events" {
                op["requestBody"] = events_body(max_batch_events.unwrap_or(1));
            }
        }
    }
    v
}

/// A [`super::Problem`] answer.
fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": PROBLEM}}},
    })
}

const PROBLEM: &str = "#/components/schemas/Problem";

/// Adds `shared` as answer `status` of `responses`; where the route has an
/// answer of its own with that status, its JSON body may be either.
fn share(responses: &mut serde_json::Map<String, Value>, status: &str, shared: Value) {
    let Some(own) = responses.get_mut(status) else {
        responses.insert(status.to_owned(), shared);
        return;
    };
    let description = format!(
        "{}; or {}",
        own["description"].as_str().unwrap_or_default(),
        shared["description"].as_str().unwrap_or_default()
    );
    own["description"] = json!(description);
    let schema = &mut own["content"]["application/json"]["schema"];
    if schema.is_null() {
        *schema = json!({"$ref": PROBLEM});
    } else if schema["$ref"] != PROBLEM {
        *schema = json!({"anyOf": [schema.take(), {"$ref": PROBLEM}]});
    }
    if let Some(headers) = shared.get("headers") {
        own["headers"] = headers.clone();
    }
}

/// An operation with its security, roles and shared answers.
fn complete(op: &mut Value, access: Option<&super::RouteAccess>) {
    let mut responses = op["responses"].take();
    let map = responses
        .as_object_mut()
        .expect("an operation has responses");
    match access {
        Some(access) => {
            let mut roles = vec!["admin"];
            roles.extend(access.roles.iter().map(|r| r.as_str()));
            let said = format!(
                "Roles: {}{}.",
                roles.join(", "),
                if access.all_tenants {
                    "; keys bound to a tenant are refused"
                } else {
                    ""
                }
            );
            share(
                map,
                "401",
                problem("no valid API key (`WWW-Authenticate: ApiKey`)"),
            );
            share(
                map,
                "403",
                problem("the key lacks a role this route accepts"),
            );
            let mut limited = problem(
                "the key is over its request rate (`http.auth.requests_per_second_per_key`)",
            );
            limited["headers"] = json!({"Retry-After": {
                "description": "seconds to wait",
                "schema": {"type": "integer", "minimum": 1},
            }});
            share(map, "429", limited);
            op["security"] = json!([{"api_key": []}, {"bearer": []}]);
            op["x-kusanagi-roles"] = json!(roles);
            if access.all_tenants {
                op["x-kusanagi-all-tenants"] = json!(true);
            }
            let description = match op["description"].as_str() {
                Some(d) if !d.is_empty() => format!("{d}\n\n{said}"),
                _ => said,
            };
            op["description"] = json!(description);
        }
        None => op["security"] = json!([]),
    }
    share(
        map,
        "503",
        problem("the request took longer than `http.request_timeout_ms`"),
    );
    op["responses"] = responses;
}

/// `schemas/json/game_event.v1.schema.json` as a component schema.
fn game_event_schema() -> Value {
    let mut schema: Value = serde_json::from_str(kusanagi_schemas::GAME_EVENT_V1_JSON_SCHEMA)
        .expect("the event schema is JSON");
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
        o.remove("$id");
    }
    schema
}

/// The body of `POST /api/v1/events`: one event, or 1 to `max` of them.
fn events_body(max: usize) -> Value {
    json!({
        "required": true,
        "description": "One event (an object) or a batch (an array, all or nothing).",
        "content": {"application/json": {"schema": {"oneOf": [
            {"$ref": "#/components/schemas/GameEvent"},
            {
                "type": "array",
                "items": {"$ref": "#/components/schemas/GameEvent"},
                "minItems": 1,
                "maxItems": max,
            },
        ]}}},
    })
}

/// A time in a query: RFC 3339, or milliseconds since the epoch.
pub(super) fn time_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[+-]?[0-9]{1,18}$")),
        )
        .description(Some(
            "RFC 3339 (2026-11-29T10:00:00Z), or milliseconds since the epoch",
        ))
        .into()
}

/// The names of [`kusanagi_schemas::AccountState`], for the document (the
/// schemas crate does not depend on utoipa); a test keeps them equal.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = AccountState)]
#[allow(dead_code)]
pub(super) enum AccountStateName {
    /// No restriction.
    Normal,
    /// Withdrawals blocked, pending the L2 verdict.
    RestrictedWithdrawal,
    /// Watched; withdrawals allowed.
    UnderSurveillance,
    /// Final; nothing allowed.
    Banned,
}

/// The names of [`kusanagi_schemas::Trigger`].
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = Trigger)]
#[allow(dead_code)]
pub(super) enum TriggerName {
    /// The fast rules of the screen stage.
    L1Screening,
    /// A verdict: the model's, the fallback's or an operator's.
    L2Verdict,
}

/// The names of [`kusanagi_schemas::FraudType`].
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = FraudType)]
#[allow(dead_code)]
pub(super) enum FraudTypeName {
    /// Real-money trading split into small trades.
    RmtSmurfing,
    /// Real-money trading in one trade.
    RmtDirect,
    /// Value moved through accounts to hide its source.
    MoneyLaundering,
    /// No fraud.
    Legitimate,
}

/// What a withdrawal of an account in a state gets.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Withdrawal)]
#[allow(dead_code)]
pub(super) enum WithdrawalName {
    /// 200.
    Allowed,
    /// 423.
    Restricted,
    /// 403.
    Banned,
}

#[cfg(test)]
mod tests {
    use kusanagi_schemas::{AccountState, FraudType, Trigger};

    use super::*;

    fn names<T: serde::Serialize>(values: impl IntoIterator<Item = T>) -> Vec<String> {
        values
            .into_iter()
            .map(|v| {
                serde_json::to_value(v)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn documented_names_are_the_serialized_ones() {
        use AccountStateName as S;
        assert_eq!(
            names([
                S::Normal,
                S::RestrictedWithdrawal,
                S::UnderSurveillance,
                S::Banned
            ]),
            names(AccountState::ALL)
        );
        assert_eq!(
            names([TriggerName::L1Screening, TriggerName::L2Verdict]),
            names([Trigger::L1Screening, Trigger::L2Verdict])
        );
        use FraudTypeName as F;
        assert_eq!(
            names([
                F::RmtSmurfing,
                F::RmtDirect,
                F::MoneyLaundering,
                F::Legitimate
            ]),
            names([
                FraudType::RmtSmurfing,
                FraudType::RmtDirect,
                FraudType::MoneyLaundering,
                FraudType::Legitimate
            ])
        );
        use crate::stages::view::Withdrawal as W;
        let withdrawal = |w| super::super::accounts::withdrawal_name(w).to_owned();
        assert_eq!(
            names([
                WithdrawalName::Allowed,
                WithdrawalName::Restricted,
                WithdrawalName::Banned
            ]),
            vec![
                withdrawal(W::Allowed),
                withdrawal(W::Restricted),
                withdrawal(W::Banned)
            ]
        );
    }

    #[test]
    fn every_guarded_route_says_its_roles_and_security() {
        let doc = full_document(crate::config::HttpConfig::default().max_batch_events);
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} is not documented", r.method, r.path);
            let roles: Vec<&str> = op["x-kusanagi-roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let mut want = vec!["admin"];
            want.extend(r.roles.iter().map(|x| x.as_str()));
            assert_eq!(roles, want, "{} {}", r.method, r.path);
            assert_eq!(op["security"], json!([{"api_key": []}, {"bearer": []}]));
            for status in ["401", "403", "429", "503"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{} {} {status}",
                    r.method,
                    r.path
                );
            }
        }
        for path in ["/healthz", "/healthz/ready"] {
            assert_eq!(doc["paths"][path]["get"]["security"], json!([]));
        }
    }

    #[test]
    fn a_route_answer_of_its_own_admits_the_shared_one_too() {
        let doc = full_document(crate::config::HttpConfig::default().max_batch_events);
        let banned = &doc["paths"]["/api/v1/withdrawals/check"]["post"]["responses"]["403"];
        let any = banned["content"]["application/json"]["schema"]["anyOf"]
            .as_array()
            .unwrap();
        assert_eq!(any.len(), 2, "{banned}");
        assert_eq!(any[1], json!({"$ref": PROBLEM}));
    }

    #[test]
    fn the_events_body_is_the_event_contract() {
        let doc = full_document(crate::config::HttpConfig::default().max_batch_events);
        let body = &doc["paths"]["/api/v1/events"]["post"]["requestBody"];
        let one_of = &body["content"]["application/json"]["schema"]["oneOf"];
        assert_eq!(one_of[0], json!({"$ref": "#/components/schemas/GameEvent"}));
        assert_eq!(one_of[1]["maxItems"], json!(10_000));
        let event = &doc["components"]["schemas"]["GameEvent"];
        assert_eq!(
            event["required"],
            json!(["event_id", "timestamp", "actor_id", "target_id"])
        );
        assert!(event.get("$schema").is_none());
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        let doc = full_document(crate::config::HttpConfig::default().max_batch_events);
        assert_eq!(doc["openapi"], json!("3.1.0"));
        assert_eq!(doc["info"]["version"], json!(env!("CARGO_PKG_VERSION")));
    }
}
