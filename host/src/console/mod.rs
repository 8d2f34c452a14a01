//! The web console (issue 6): server-rendered pages under `/console/`, in Chinese by
//! default with English available, for station staff (供电所), the business hall
//! (营业厅), customers (self-service), and policy and audit readers.
//!
//! - Pages are minijinja templates embedded in the binary ([`templates`], which says
//!   why minijinja), with messages from a TOML catalogue ([`i18n`], which says how the
//!   language is chosen). Small interactions (approve, hold, execute, pay) use htmx
//!   2.0.11, vendored unmodified from the npm registry and served from the binary at
//!   `/console/static/htmx.min.js` (licence: `static/htmx.LICENSE`); every form also
//!   works without JavaScript (a plain POST answered with a redirect).
//! - Charts are SVG drawn on the server with plotters ([`charts`]).
//! - Who: every page needs a console login ([`crate::auth`]); a request without a live
//!   session is sent to `/console/login`. What a page lists is narrowed by
//!   [`Principal::visible`]; one object is checked with [`Principal::authorize`].
//!   Refusal rule: an account (or a decision about one) outside the principal's scope
//!   answers **404**, as if it did not exist (its existence is private); a page or action
//!   the role may not use at all answers **403** with the reason.
//! - Changes are POSTed from the console's own pages: the [`Principal`] extractor
//!   refuses a cookie-authenticated POST whose `Origin` is not this server (403
//!   `forbidden`), and the login form checks the same.

pub mod charts;
mod data;
pub mod i18n;
mod pages;
pub mod templates;

use crate::auth::extract::{AuthState, session_cookie, session_cookie_removal, session_in};
use crate::auth::store::{self, AuthError};
use crate::auth::{Forbidden, Principal, Role};
use crate::channels::ChannelsState;
use crate::db::Db;
use crate::job::Host;
use axum::Router;
use axum::extract::{ConnectInfo, FromRef, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, CookieJar};
use i18n::{CATALOGUE, LANG_COOKIE, Lang};
use minijinja::Environment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// What the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    pub db: Db,
    pub auth: AuthState,
    /// One host per served county (its clock gives "today" and "now"; its policies and
    /// relay settings drive execution).
    pub hosts: Vec<Arc<Host>>,
    /// The payment channels, when configured: the customer's "pay" goes through the
    /// `app` channel's inbox.
    pub channels: Option<ChannelsState>,
    env: Arc<Environment<'static>>,
}

impl FromRef<ConsoleState> for AuthState {
    fn from_ref(s: &ConsoleState) -> Self {
        s.auth.clone()
    }
}

impl ConsoleState {
    /// Builds the state; fails only if a template does not parse (a build defect the
    /// unit tests catch).
    pub fn new(
        db: Db,
        auth: AuthState,
        hosts: Vec<Arc<Host>>,
        channels: Option<ChannelsState>,
    ) -> anyhow::Result<Self> {
        Ok(ConsoleState {
            db,
            auth,
            hosts,
            channels,
            env: Arc::new(templates::environment()?),
        })
    }

    /// The state of a running `feegate serve`.
    pub fn from_serve(s: &crate::serve::ServeState) -> anyhow::Result<Self> {
        Self::new(
            s.db.clone(),
            s.auth.clone(),
            s.counties.iter().map(|c| c.host.clone()).collect(),
            s.channels.clone(),
        )
    }

    /// The host serving `county`, if this process serves it.
    pub fn host(&self, county: &str) -> Option<&Arc<Host>> {
        self.hosts.iter().find(|h| h.county.county == county)
    }

    /// County-local "now" for `county` (the first served county's clock when it is not
    /// served here; China has one time zone).
    pub fn now(&self, county: Option<&str>) -> chrono::NaiveDateTime {
        county
            .and_then(|c| self.host(c))
            .or(self.hosts.first())
            .map(|h| h.clock.now())
            .unwrap_or_else(|| chrono::Local::now().naive_local())
    }
}

/// The console's routes, all under `/console`. Mount with `Router::merge`.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(home))
        .route("/console/login", get(login_page).post(login_submit))
        .route("/console/logout", post(logout))
        .route("/console/static/htmx.min.js", get(htmx_js))
        .merge(pages::routes())
        .with_state(state)
}

/// htmx, served from the binary; cached for a day (the version is in the file).
async fn htmx_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("static/htmx.min.js"),
    )
}

/// What every console handler needs to know about the request: its language (and
/// whether `?lang=` chose it, which sets the cookie), its path, and whether htmx sent it
/// (then the answer is a fragment, not a whole page).
#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub lang: Lang,
    pub lang_chosen: bool,
    pub path: String,
    pub htmx: bool,
    /// The peer's address, when the server was started with connect info.
    pub client: Option<std::net::IpAddr>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Req {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Req {
            lang: Lang::of_request(parts),
            lang_chosen: Lang::from_query(parts.uri.query()).is_some(),
            path: parts.uri.path().to_string(),
            htmx: parts.headers.contains_key("hx-request"),
            client: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        })
    }
}

impl Req {
    /// A message of the catalogue in this request's language.
    pub fn t(&self, key: &str) -> String {
        CATALOGUE.get(self.lang, key)
    }
}

/// The page's principal as templates see it.
#[derive(Serialize)]
struct Who<'a> {
    username: &'a str,
    role: &'a str,
    scope: String,
    station: bool,
    hall: bool,
    policies: bool,
    accounts: bool,
    account_id: Option<&'a str>,
    /// Station staff onboard at their own station only.
    fixed_station: bool,
}

/// Where the principal may act, in the page's language ("station XY-BT of xianyou").
fn scope_text(p: &Principal, lang: Lang) -> String {
    let t = |key: &str, args: &[(&str, String)]| i18n::fill(&CATALOGUE.get(lang, key), args);
    let c = p.county.clone().unwrap_or_default();
    match (&p.station_id, &p.account_id, p.role) {
        (_, Some(a), Role::Customer) => t("scope.account", &[("account", a.clone())]),
        (Some(s), _, _) => t("scope.station", &[("station", s.clone()), ("county", c)]),
        _ if p.county.is_some() => t("scope.county", &[("county", c)]),
        _ => t("scope.all", &[]),
    }
}

impl<'a> Who<'a> {
    fn of(p: &'a Principal, lang: Lang) -> Self {
        use crate::auth::Action::*;
        let may = |a| p.visible(a).is_ok();
        Who {
            username: &p.username,
            role: p.role.as_str(),
            scope: scope_text(p, lang),
            station: may(ReadWorkOrders),
            hall: may(Onboard),
            policies: may(ReadPolicies),
            accounts: may(ReadAccounts) && p.role != Role::Customer,
            account_id: p.account_id.as_deref(),
            fixed_station: p.station_id.is_some(),
        }
    }
}

/// A page (or htmx fragment) to render: its template and values; the response sets
/// the language cookie when the request chose one with `?lang=`.
pub(crate) struct Page {
    pub template: &'static str,
    pub status: StatusCode,
    pub ctx: minijinja::Value,
}

impl Page {
    pub fn new(template: &'static str, ctx: minijinja::Value) -> Self {
        Page {
            template,
            status: StatusCode::OK,
            ctx,
        }
    }
}

/// Renders `page` for `principal` in the request's language.
pub(crate) fn render(
    state: &ConsoleState,
    req: &Req,
    principal: Option<&Principal>,
    page: Page,
) -> Response {
    let base = minijinja::context! {
        lang => req.lang.code(),
        who => principal.map(|p| Who::of(p, req.lang)),
        path => req.path,
        htmx => req.htmx,
    };
    let ctx = minijinja::context! { ..page.ctx, ..base };
    match state
        .env
        .get_template(page.template)
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => {
            let mut r = (page.status, Html(html)).into_response();
            if req.lang_chosen {
                let cookie = Cookie::build((LANG_COOKIE, req.lang.code()))
                    .path("/console")
                    .same_site(axum_extra::extract::cookie::SameSite::Lax)
                    .max_age(cookie::time::Duration::days(365))
                    .build();
                if let Ok(v) = cookie.to_string().parse() {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            r
        }
        Err(e) => {
            tracing::error!(template = page.template, "console template: {e:#}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "console page failed to render; see the server log",
            )
                .into_response()
        }
    }
}

/// Why a console request failed, shown as a page in the request's language.
#[derive(Debug)]
pub(crate) enum ConsoleError {
    /// 403: the role may not use this page or action.
    Forbidden(String),
    /// 404: no such object, or one outside the principal's scope.
    NotFound,
    /// 400: the form was wrong; the message says what to correct.
    BadRequest(String),
    /// 409: the object is not in a state that allows this (e.g. the two-person rule).
    Conflict(String),
    /// 503: the database failed (logged where it happened; the page says to retry).
    Unavailable,
}

impl From<Forbidden> for ConsoleError {
    fn from(f: Forbidden) -> Self {
        ConsoleError::Forbidden(f.0)
    }
}

impl From<crate::db::DbError> for ConsoleError {
    fn from(e: crate::db::DbError) -> Self {
        tracing::error!("console: database error: {e}");
        ConsoleError::Unavailable
    }
}

impl From<sqlx::Error> for ConsoleError {
    fn from(e: sqlx::Error) -> Self {
        crate::db::DbError::from(e).into()
    }
}

impl From<crate::query::QueryError> for ConsoleError {
    fn from(e: crate::query::QueryError) -> Self {
        match e {
            crate::query::QueryError::Db(e) => e.into(),
            crate::query::QueryError::BadRequest(m) => ConsoleError::BadRequest(m),
        }
    }
}

impl ConsoleError {
    fn status_and_key(&self) -> (StatusCode, &'static str, Option<&str>) {
        match self {
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, "error.forbidden", Some(m)),
            ConsoleError::NotFound => (StatusCode::NOT_FOUND, "error.not_found", None),
            ConsoleError::BadRequest(m) => (StatusCode::BAD_REQUEST, "error.bad_request", Some(m)),
            ConsoleError::Conflict(m) => (StatusCode::CONFLICT, "error.conflict", Some(m)),
            ConsoleError::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "error.unavailable", None)
            }
        }
    }

    /// The error page.
    pub fn page(&self, state: &ConsoleState, req: &Req, p: Option<&Principal>) -> Response {
        let (status, key, detail) = self.status_and_key();
        let mut page = Page::new(
            if req.htmx {
                "error_fragment.html"
            } else {
                "error.html"
            },
            minijinja::context! { title_key => key, detail => detail },
        );
        page.status = status;
        let mut r = render(state, req, p, page);
        if req.htmx {
            // htmx puts the message in the page's flash area instead of the target.
            r.headers_mut().insert(
                "hx-retarget",
                axum::http::HeaderValue::from_static("#flash"),
            );
            r.headers_mut().insert(
                "hx-reswap",
                axum::http::HeaderValue::from_static("innerHTML"),
            );
        }
        r
    }
}

/// `/console/`: each role's first page.
async fn home(principal: Option<Principal>) -> Response {
    let Some(p) = principal else {
        return Redirect::to("/console/login").into_response();
    };
    let to = match p.role {
        Role::Customer => format!(
            "/console/accounts/{}",
            p.account_id.as_deref().unwrap_or("")
        ),
        Role::StationStaff | Role::Operations | Role::Auditor => "/console/station".into(),
        Role::CountyEngineer => "/console/policies".into(),
    };
    Redirect::to(&to).into_response()
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only a path inside the console is followed after login (no open redirect).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/console/") && !n.starts_with("/console//") => n,
        _ => "/console/",
    }
}

async fn login_page(
    State(state): State<ConsoleState>,
    req: Req,
    principal: Option<Principal>,
    Query(q): Query<LoginQuery>,
) -> Response {
    if principal.is_some() {
        return Redirect::to(safe_next(q.next.as_deref())).into_response();
    }
    render(
        &state,
        &req,
        None,
        Page::new(
            "login.html",
            minijinja::context! { next => safe_next(q.next.as_deref()) },
        ),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// Whether a form POST comes from this server's own pages: `Origin` names the `Host`.
fn same_origin(headers: &HeaderMap) -> bool {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(|o| {
            o.split_once("://")
                .map(|(_, rest)| rest.trim_end_matches('/'))
        });
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    matches!((origin, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

async fn login_submit(
    State(state): State<ConsoleState>,
    req: Req,
    headers: HeaderMap,
    jar: CookieJar,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return ConsoleError::Forbidden(req.t("login.foreign_origin")).page(&state, &req, None);
    }
    // The per-address limit counts by the peer address; behind a proxy every client
    // shares the proxy's (the per-username limit still holds).
    let client = req
        .client
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".into());
    let next = safe_next(form.next.as_deref()).to_string();
    let failed = |key: &str, seconds: Option<u64>| {
        let msg = i18n::fill(
            &req.t(key),
            &[("seconds", seconds.unwrap_or(0).to_string())],
        );
        let mut page = Page::new(
            "login.html",
            minijinja::context! { next => next, error => msg, username => form.username.clone() },
        );
        page.status = if seconds.is_some() {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::UNAUTHORIZED
        };
        render(&state, &req, None, page)
    };
    match store::login(
        &state.auth.db,
        &state.auth.config,
        form.username.trim(),
        &form.password,
        &client,
    )
    .await
    {
        Ok(s) => {
            let jar = jar.add(session_cookie(s.session, &state.auth.config));
            (jar, Redirect::to(&next)).into_response()
        }
        Err(AuthError::BadCredentials) => failed("login.bad_credentials", None),
        Err(AuthError::TooManyAttempts {
            retry_after_seconds,
        }) => {
            let mut r = failed("login.too_many", Some(retry_after_seconds));
            if let Ok(v) = retry_after_seconds.to_string().parse() {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(e) => {
            tracing::error!("console login: {e}");
            ConsoleError::Unavailable.page(&state, &req, None)
        }
    }
}

/// Ends the session (the extractor has checked the Origin) and removes the cookie.
async fn logout(
    State(state): State<ConsoleState>,
    req: Req,
    p: Principal,
    jar: CookieJar,
) -> Response {
    if let Some(s) = session_in(&jar)
        && let Err(e) = store::logout(&state.auth.db, &s).await
    {
        tracing::error!("console logout: {e}");
        return ConsoleError::Unavailable.page(&state, &req, Some(&p));
    }
    (
        jar.remove(session_cookie_removal()),
        Redirect::to("/console/login"),
    )
        .into_response()
}
