//! The axum side of authentication: [`Principal`] as an extractor.
//!
//! Credentials, in order: `Authorization: Bearer fgt_…` (an API token), then the console
//! session cookie [`SESSION_COOKIE`]. A cookie-authenticated request that changes
//! something (any method but GET, HEAD, OPTIONS) must carry an `Origin` header naming
//! this server (its `Host`): with the cookie's `SameSite=Strict` that stops cross-site
//! request forgery without a token in every form. Bearer tokens are not sent by browsers
//! on their own, so they need no such check.
//!
//! Rejections are JSON `{"code": …, "message": …}`: `unauthenticated` (401, with
//! `WWW-Authenticate: Bearer`), `forbidden` (403), `unavailable` (503, database down).
//! `Option<Principal>` yields `None` for missing or dead credentials (the console then
//! shows its login page) and fails only when the database cannot be asked.

use super::store::{self, AuthConfig, AuthError};
use super::{Forbidden, Principal, Via};
use crate::db::Db;
use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

/// The console session cookie's name.
pub const SESSION_COOKIE: &str = "feegate_session";

/// What the extractor needs: the database and the login settings. Put it in the router's
/// state and implement `FromRef` for the state (or use it as the state).
#[derive(Clone, Debug)]
pub struct AuthState {
    pub db: Db,
    pub config: AuthConfig,
}

/// Why a request was refused before its handler ran.
#[derive(Debug)]
pub enum AuthRejection {
    Unauthenticated(String),
    Forbidden(String),
    Unavailable(String),
}

impl From<Forbidden> for AuthRejection {
    fn from(f: Forbidden) -> Self {
        AuthRejection::Forbidden(f.0)
    }
}

impl AuthRejection {
    /// The HTTP status and the stable code of the JSON body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AuthRejection::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AuthRejection::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AuthRejection::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
    /// The message for the caller.
    pub fn message(&self) -> &str {
        match self {
            AuthRejection::Unauthenticated(m)
            | AuthRejection::Forbidden(m)
            | AuthRejection::Unavailable(m) => m,
        }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut r = (
            status,
            axum::Json(serde_json::json!({ "code": code, "message": self.message() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"feegate\""),
            );
        }
        r
    }
}

fn unavailable(e: AuthError) -> AuthRejection {
    tracing::error!(error = %e, "authentication: database error");
    AuthRejection::Unavailable(
        "cannot check credentials: the database is unavailable; retry shortly".into(),
    )
}

enum Credentials {
    Token(String),
    Session(String),
}

fn credentials(parts: &Parts) -> Result<Option<Credentials>, AuthRejection> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or("");
        let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthRejection::Unauthenticated(
                "the Authorization header must be `Bearer <API token>`".into(),
            ));
        }
        return Ok(Some(Credentials::Token(token.trim().to_string())));
    }
    let jar = CookieJar::from_headers(&parts.headers);
    Ok(jar
        .get(SESSION_COOKIE)
        .map(|c| Credentials::Session(c.value().to_string())))
}

/// The host:port an `Origin` header names, e.g. `http://127.0.0.1:8080` → `127.0.0.1:8080`.
fn origin_authority(origin: &str) -> Option<&str> {
    origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
}

fn check_same_origin(parts: &Parts) -> Result<(), AuthRejection> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(origin_authority);
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(AuthRejection::Forbidden(
            "a console change must come from the console's own pages (Origin does not match Host)"
                .into(),
        )),
    }
}

async fn lookup(parts: &Parts, auth: &AuthState) -> Result<Option<Principal>, AuthRejection> {
    let Some(creds) = credentials(parts)? else {
        return Ok(None);
    };
    let found = match &creds {
        Credentials::Token(t) => store::principal_for_token(&auth.db, t).await,
        Credentials::Session(s) => store::principal_for_session(&auth.db, s).await,
    }
    .map_err(unavailable)?;
    if let Some(p) = &found
        && p.via == Via::Session
    {
        check_same_origin(parts)?;
    }
    Ok(found)
}

impl<S> FromRequestParts<S> for Principal
where
    AuthState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = AuthState::from_ref(state);
        let had_credentials = credentials(parts)?.is_some();
        match lookup(parts, &auth).await? {
            Some(p) => Ok(p),
            None if had_credentials => Err(AuthRejection::Unauthenticated(
                "the API token or console session is unknown, revoked or expired; log in again or ask operations for a new token".into(),
            )),
            None => Err(AuthRejection::Unauthenticated(
                "sign in: send `Authorization: Bearer <API token>` or log in to the console".into(),
            )),
        }
    }
}

impl<S> OptionalFromRequestParts<S> for Principal
where
    AuthState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let auth = AuthState::from_ref(state);
        match lookup(parts, &auth).await {
            Ok(p) => Ok(p),
            Err(AuthRejection::Unauthenticated(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

/// The cookie that carries a new session: `HttpOnly`, `SameSite=Strict`, `Path=/`,
/// `Secure` unless the config says otherwise, ending with the session.
pub fn session_cookie(session: String, config: &AuthConfig) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, session))
        .http_only(true)
        .secure(config.secure_cookies)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::seconds(
            config.session_seconds as i64,
        ))
        .build()
}

/// The session cookie, for removal at logout (`CookieJar::remove`).
pub fn session_cookie_removal() -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, "")).path("/").build()
}

/// The session id in a request's cookie, if any (for logout).
pub fn session_in(jar: &CookieJar) -> Option<String> {
    jar.get(SESSION_COOKIE).map(|c| c.value().to_string())
}
