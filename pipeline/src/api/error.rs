//! What the API answers a request it cannot carry out with.

/// A request the caller must fix: which field, and what was expected.
/// Answered as `{"error": <code>, "message": <this>}` with a 4xx status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: expected {expected}")]
pub struct InvalidRequest {
    /// The field (a body member or a query parameter).
    pub field: &'static str,
    /// What was expected, and what was found.
    pub expected: String,
}

impl InvalidRequest {
    /// `field` was not `expected`.
    pub fn new(field: &'static str, expected: impl Into<String>) -> Self {
        Self {
            field,
            expected: expected.into(),
        }
    }
}

/// The body of every answer that is not a success: a stable code to match
/// on and a sentence for people. Documented as the `Problem` schema.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A stable code: `unauthorized`, `forbidden`, `rate_limited`,
    /// `not_found`, `not_ready`, `invalid_request`, ...
    #[schema(example = "not_found")]
    pub error: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
}

/// `status` with a [`Problem`] body.
pub fn problem(
    status: axum::http::StatusCode,
    error: &'static str,
    message: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, axum::Json(Problem { error, message })).into_response()
}

/// The account a route's path names: its `{id}`, and its `{tenant}` on
/// the routes under `/api/v1/tenants/{tenant}`; a 400 [`Problem`]
/// (`invalid_path`) when they are not valid percent-encoded UTF-8.
#[derive(Debug, Clone)]
pub struct AccountId {
    /// The tenant the path names, if it names one.
    pub tenant: Option<String>,
    /// The account id.
    pub id: String,
}

impl AccountId {
    /// The route's label in metrics: `plain` or, when the path names a
    /// tenant, `in_tenant`.
    pub fn route(&self, plain: &'static str, in_tenant: &'static str) -> &'static str {
        if self.tenant.is_some() {
            in_tenant
        } else {
            plain
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AccountId {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        type Params = axum::extract::Path<Vec<(String, String)>>;
        let params = match Params::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(params)) => params,
            Err(e) => return Err(problem(e.status(), "invalid_path", e.body_text())),
        };
        let take = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let Some(id) = take("id") else {
            return Err(problem(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_path",
                "the path names no account id".into(),
            ));
        };
        Ok(Self {
            tenant: take("tenant"),
            id,
        })
    }
}

/// A route's query, or a 400 [`Problem`] (`invalid_query`) when it does not
/// parse (a repeated or mistyped parameter).
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(q)) => Ok(Self(q)),
            Err(e) => Err(problem(e.status(), "invalid_query", e.body_text())),
        }
    }
}
