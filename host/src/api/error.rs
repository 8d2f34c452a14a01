//! Errors of the API: JSON `{"code": "<stable kebab-case code>", "message": "<what was
//! wrong and what to do>"}`, the same shape as the channel and authentication
//! rejections. Clients key their logic on `code`; `message` is for people.

use crate::auth::Forbidden;
use crate::query::QueryError;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The body of every error answer.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// bad-request | nul-character | body-too-large | unauthenticated | forbidden |
    /// not-found | method-not-allowed | conflict | not-approved | two-person-rule |
    /// floor-refused | idempotency-key-required | idempotency-key-reused |
    /// idempotency-key-in-progress | county-not-served | unavailable | internal
    #[schema(example = "not-found")]
    pub code: String,
    pub message: String,
    /// Details for some codes: the safety floor's refusals (`floor-refused`); the
    /// order's status (`not-approved`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

/// An error answer: HTTP status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }
    /// 400 `bad-request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }
    /// 400 `bad-request` for a query parameter whose value does not parse: names the
    /// parameter, the value, what it is not and what to send instead.
    pub fn bad_param(param: &str, value: &str, what: &str, expected: &str) -> Self {
        Self::bad_request(format!(
            "query parameter {param}={value:?} is not {what}: send {expected}"
        ))
    }
    /// 404 `not-found`: also the answer for an object outside the caller's scope, so
    /// nobody learns what exists beyond it.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{what} not found (or not yours to see); check the id"),
        )
    }
    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 500 `internal`, logged; the caller gets no details of the server.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "api: {what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what} failed on the server; retry, and tell operations if it persists"),
        )
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
    /// The body as JSON.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.to_string(),
            message: self.message.clone(),
            details: self.details.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<Forbidden> for ApiError {
    fn from(f: Forbidden) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", f.0)
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadRequest(m) => Self::bad_request(m),
            QueryError::Db(d) => Self::internal("reading the database", d),
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        Self::internal("the database", e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal("the database", e)
    }
}

/// `Query<T>` whose rejection is a JSON `bad-request` naming the parameter, its value and
/// the form expected.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e| query_error(&parts.uri, &e.body_text()))
    }
}

/// The query string's parameters, percent-decoded, in order.
pub fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|Query(p)| p)
        .unwrap_or_default()
}

/// A query string that did not deserialise (axum's text: `Failed to deserialize query
/// string: <param>: <problem>`), said with the parameter's value and the form expected.
fn query_error(uri: &Uri, text: &str) -> ApiError {
    let why = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text);
    if let Some((param, problem)) = why.split_once(": ")
        && let Some((_, value)) = query_pairs(uri).into_iter().find(|(k, _)| k == param)
    {
        // Integers fail with the messages of `ParseIntError`; enums say what they expect.
        let (what, expected) = if ["integer", "digit", "number too"]
            .iter()
            .any(|m| problem.contains(m))
        {
            (
                format!("a number ({problem})"),
                format!("digits only, e.g. {param}=50"),
            )
        } else if let Some((_, e)) = problem.split_once(", expected ") {
            ("one of the choices".to_string(), e.replace('`', ""))
        } else {
            (
                format!("understood ({problem})"),
                "the form GET /api/openapi.json describes".to_string(),
            )
        };
        return ApiError::bad_param(param, &value, &what, &expected);
    }
    ApiError::bad_request(format!(
        "query string: {why}; GET /api/openapi.json lists the parameters each endpoint takes"
    ))
}

/// `Path<T>` whose rejection is a JSON `bad-request`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e| ApiError::bad_request(format!("path: {}", e.body_text())))
    }
}

/// The answer to a path no route matches (the server's fallback): 404 `not-found`.
pub async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!(
            "no route {method} {}: the API is under /api/v1 (GET /api/openapi.json lists its routes), the web console under /console/",
            uri.path()
        ),
    )
}

/// The answer to a method an API route does not take: 405 `method-not-allowed` (axum
/// adds the `Allow` header).
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!(
            "{method} is not a method of {}: the Allow header lists the ones it takes (GET /api/openapi.json describes them)",
            uri.path()
        ),
    )
}

/// Parses a JSON request body, or says what is wrong with it.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body is not the expected JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Params {
        limit: Option<u32>,
        by: Option<crate::query::accounts::UsageBy>,
    }

    /// axum's rejection text for `query`, read back by `query_error`.
    fn message(query: &str) -> String {
        let uri: Uri = format!("/x?{query}").parse().unwrap();
        let e = Query::<Params>::try_from_uri(&uri).unwrap_err();
        let e = query_error(&uri, &e.body_text());
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad-request"));
        e.message
    }

    #[test]
    fn a_query_value_that_does_not_deserialise_is_named_with_the_form_expected() {
        assert_eq!(
            message("by=day&limit=ten"),
            r#"query parameter limit="ten" is not a number (invalid digit found in string): send digits only, e.g. limit=50"#
        );
        assert_eq!(
            message("by=week"),
            r#"query parameter by="week" is not one of the choices: send one of day, month, band"#
        );
        assert!(message("limit=1&limit=2").starts_with("query string: "));
    }
}
