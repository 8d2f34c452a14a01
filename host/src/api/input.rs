//! Checks on every API request's input, made by one middleware ([`reject_nul`], a route
//! layer on the API router) before the handler runs, and so before any query: no NUL
//! character (U+0000) in a path parameter, a query parameter or a string (or key) of the
//! JSON body. PostgreSQL `text` cannot hold NUL while SQLite can, so without the check
//! the same request would be a lookup on one backend and a 500 on the other; with it, it
//! is 400 `nul-character` on both.
//!
//! In a URL a NUL can only arrive percent-encoded (`%00`), and in JSON only as the escape
//! `\u0000` (a raw NUL byte is not JSON): requests without those are passed on after a
//! substring search, so the hot path (`GET …/balance`) decodes nothing.

use super::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The error code.
pub const NUL_CHARACTER: &str = "nul-character";

fn nul_error(place: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        NUL_CHARACTER,
        format!(
            "{place} contains a NUL character (U+0000), which no id, name or text here can hold; remove it and send the request again"
        ),
    )
}

/// The middleware: 400 `nul-character` for a NUL in the path, the query or the JSON body;
/// otherwise the request goes on unchanged.
pub async fn reject_nul(req: Request, next: Next) -> Response {
    match check(req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn check(req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    if parts.uri.path().contains("%00") {
        // A matched route's literal segments hold no NUL: it is in a parameter.
        if let Ok(params) = RawPathParams::from_request_parts(&mut parts, &()).await
            && let Some((name, _)) = params.iter().find(|(_, v)| v.contains('\0'))
        {
            return Err(nul_error(&format!("path parameter {name}")));
        }
    }
    if parts.uri.query().is_some_and(|q| q.contains("%00")) {
        for (k, v) in super::error::query_pairs(&parts.uri) {
            if k.contains('\0') {
                return Err(nul_error(&format!("query parameter name {k:?}")));
            }
            if v.contains('\0') {
                return Err(nul_error(&format!("query parameter {k}")));
            }
        }
    }
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        // Their handlers read no body.
        return Ok(Request::from_parts(parts, body));
    }
    // The same limit the handler's own `Bytes` would apply (axum's default body limit).
    let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), &())
        .await
        .map_err(|rejection| {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "body-too-large"
            } else {
                "bad-request"
            };
            ApiError::new(
                status,
                code,
                format!(
                    "request body: {}; send a JSON body of a few kilobytes",
                    rejection.body_text()
                ),
            )
        })?;
    if let Some(field) = nul_in_json(&bytes) {
        return Err(nul_error(&field));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Where a JSON body holds a NUL, e.g. `JSON body field meter.gateway`; None when it
/// holds none (or is not JSON: the handler says what is wrong with it).
fn nul_in_json(body: &[u8]) -> Option<String> {
    if body.contains(&0) {
        return Some("the request body".into());
    }
    if !body.windows(6).any(|w| w == b"\\u0000") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut path = String::new();
    find_nul(&v, &mut path).then(|| {
        if path.is_empty() {
            "the JSON body".to_string()
        } else {
            format!("JSON body field {path}")
        }
    })
}

/// True when `v` holds a NUL in a string or a key; `path` is left at where (`a.b[2]`).
fn find_nul(v: &serde_json::Value, path: &mut String) -> bool {
    use serde_json::Value;
    let len = path.len();
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
            path.truncate(len);
            path.push_str(&format!("[{i}]"));
            find_nul(item, path)
        }),
        Value::Object(fields) => fields.iter().any(|(k, item)| {
            path.truncate(len);
            if !path.is_empty() {
                path.push('.');
            }
            if k.contains('\0') {
                path.push_str(&format!("{k:?}"));
                return true;
            }
            path.push_str(k);
            find_nul(item, path)
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::nul_in_json;

    #[test]
    fn a_nul_is_found_in_json_strings_and_keys_but_not_in_an_escaped_backslash() {
        for (body, want) in [
            (r#"{"a": "x\u0000"}"#, Some("JSON body field a")),
            (
                r#"{"meter": {"gateway": "\u0000"}}"#,
                Some("JSON body field meter.gateway"),
            ),
            (r#"{"a": ["ok", "\u0000"]}"#, Some("JSON body field a[1]")),
            (r#""\u0000""#, Some("the JSON body")),
            ("{\"a\": \"x\0\"}", Some("the request body")),
            (r#"{"a": "\\u0000"}"#, None),
            (r#"{"a": "fine"}"#, None),
            (r#"{"a": "\u0000" broken"#, None),
        ] {
            assert_eq!(nul_in_json(body.as_bytes()).as_deref(), want, "{body}");
        }
        assert_eq!(
            nul_in_json(br#"{"k\u0000": 1}"#).as_deref(),
            Some("JSON body field \"k\\0\"")
        );
    }
}
