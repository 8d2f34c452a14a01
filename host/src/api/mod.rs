//! The HTTP API (issue 6): JSON under `/api/v1`, described by the OpenAPI document at
//! `/api/openapi.json`, generated from the handlers' annotations (utoipa) — the router
//! and the document come from the same `routes!` calls, so a route cannot go
//! undescribed.
//!
//! - **Who**: every endpoint takes a [`Principal`] (`Authorization: Bearer fgt_…`, or the
//!   console session cookie). Roles and scopes: [`crate::auth`].
//! - **Not yours**: an object outside the caller's scope is answered 404 `not-found`,
//!   exactly like one that does not exist (nobody learns that a neighbour's account
//!   exists); an action the caller's role may never take is 403 `forbidden`.
//! - **Lists**: `limit` (1..=500, default 50) and `after` (the `next_after` of the
//!   previous page; keyset pagination on the list's key), `county` and `station`
//!   filters that narrow the caller's visibility and never widen it.
//! - **Writes** that move money or a relay need an `Idempotency-Key` ([`idempotency`]).
//! - **Errors**: JSON `{code, message}` ([`error`]), also for an unknown route (404
//!   `not-found`) and a method a route does not take (405 `method-not-allowed`); a filter
//!   value that does not parse is 400 `bad-request` naming the parameter, the value and
//!   the form expected; a NUL character anywhere in the input is 400 `nul-character`
//!   ([`input`]).
//! - **Money**: `{"yuan": "12.34", "fen": 1234}`; never a float.

pub mod accounts;
pub mod error;
pub mod idempotency;
pub mod input;
pub mod policies;
pub mod work_orders;

use crate::auth::Principal;
use crate::clock::{Clock, SystemClock};
use crate::query::{ListFilter, PageRequest};
use crate::serve::{CountyRuntime, ServeState};
use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{FixedOffset, NaiveDate, NaiveDateTime};
use error::ApiError;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The document's frame: title, security scheme, shared schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Feegate API",
        description = "Remote prepaid fee control (远程费控): customers, accounts, payments, work orders, policies, decisions, collection. Errors are JSON {code, message}; money is {yuan, fen}; lists take limit/after and county/station filters; writes that move money or a relay need an Idempotency-Key header."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(error::ErrorBody))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("fgt_… API token")
                    .description(Some(
                        "An API token from `feegate token issue NAME --label L`; the console session cookie works too",
                    ))
                    .build(),
            ),
        );
    }
}

/// The `/api/v1` routes with their OpenAPI description.
pub fn routes() -> OpenApiRouter<Arc<ServeState>> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(accounts::list_customers))
        .routes(routes!(accounts::get_customer))
        .routes(routes!(accounts::list_meters))
        .routes(routes!(accounts::get_meter))
        .routes(routes!(accounts::list_accounts))
        .routes(routes!(accounts::get_account))
        .routes(routes!(accounts::get_balance))
        .routes(routes!(accounts::get_ledger))
        .routes(routes!(accounts::get_usage))
        .routes(routes!(accounts::list_payments, accounts::post_payment))
        .routes(routes!(accounts::post_agreement))
        .routes(routes!(work_orders::list_work_orders))
        .routes(routes!(work_orders::get_work_order))
        .routes(routes!(work_orders::approve_work_order))
        .routes(routes!(work_orders::hold_work_order))
        .routes(routes!(work_orders::withdraw_work_order))
        .routes(routes!(work_orders::execute_work_order))
        .routes(routes!(work_orders::reconnect_work_order))
        .routes(routes!(work_orders::list_relay_commands))
        .routes(routes!(policies::list_policies))
        .routes(routes!(policies::list_versions))
        .routes(routes!(policies::list_activations))
        .routes(routes!(policies::list_decisions))
        .routes(routes!(policies::get_decision))
        .routes(routes!(policies::get_collection));
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", v1)
}

/// The generated OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The API router: `/api/v1/…` and `GET /api/openapi.json`, every route behind the NUL
/// check ([`input::reject_nul`]) and answering a method it does not take with 405
/// `method-not-allowed`. Mounted by [`crate::serve::router`], whose fallback answers an
/// unknown path ([`error::unknown_route`]).
pub fn router(state: Arc<ServeState>) -> Router {
    let (router, doc) = routes().split_for_parts();
    let doc = Arc::new(doc);
    router
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()).into_response() }
            }),
        )
        .route_layer(axum::middleware::from_fn(input::reject_nul))
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}

/// `limit`, `after`, `county`, `station`: the query parameters every list takes.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Rows per page, 1..=500 (default 50).
    pub limit: Option<u32>,
    /// The `next_after` of the previous page.
    pub after: Option<String>,
    /// Only this county (narrows your visibility, never widens it).
    pub county: Option<String>,
    /// Only this supply station.
    pub station: Option<String>,
}

impl ListParams {
    fn page(&self) -> Result<PageRequest, ApiError> {
        Ok(PageRequest::new(self.limit, self.after.clone())?)
    }
    fn filter(&self) -> ListFilter {
        ListFilter {
            county: self.county.clone().filter(|c| !c.is_empty()),
            station_id: self.station.clone().filter(|s| !s.is_empty()),
        }
    }
}

/// A filter that takes one of `allowed`: None when not given or empty (no filter), else
/// the value, or 400 naming the parameter, the value and the choices.
fn choice(
    param: &str,
    value: Option<String>,
    what: &str,
    allowed: &[&str],
) -> Result<Option<String>, ApiError> {
    match value.filter(|v| !v.is_empty()) {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::bad_param(
            param,
            &v,
            what,
            &format!("one of {}, or leave it out", allowed.join(", ")),
        )),
        v => Ok(v),
    }
}

/// A date filter: None when not given or empty, else the date as stored (`YYYY-MM-DD`),
/// or 400 naming the parameter and the value.
fn date_param(param: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            NaiveDate::parse_from_str(&v, "%Y-%m-%d")
                .map(crate::db::ds)
                .map_err(|_| {
                    ApiError::bad_param(param, &v, "a date", "YYYY-MM-DD, e.g. 2013-01-21")
                })
        })
        .transpose()
}

/// The county runtime serving `county` on this host, if any.
fn county_runtime(state: &ServeState, county: &str) -> Option<Arc<CountyRuntime>> {
    state
        .counties
        .iter()
        .find(|c| c.host.county.county == county)
        .cloned()
}

/// Now in `county`'s local time: its clock when this host serves it, else the first
/// served county's, else China Standard Time (UTC+8).
fn now_in(state: &ServeState, county: Option<&str>) -> NaiveDateTime {
    county
        .and_then(|c| county_runtime(state, c))
        .or_else(|| state.counties.first().cloned())
        .map(|c| c.host.clock.now())
        .unwrap_or_else(|| {
            SystemClock {
                offset: FixedOffset::east_opt(8 * 3600).expect("UTC+8"),
            }
            .now()
        })
}

/// Who did it, as recorded in work orders and payments: the username.
fn who(p: &Principal) -> &str {
    &p.username
}

/// The paths of the routes the API router has (as axum holds them, e.g.
/// `/api/v1/accounts/{account_id}`), read from the router itself: what the OpenAPI test
/// checks against the document, so a route added without a description fails it.
pub fn route_paths() -> Vec<String> {
    let (router, _) = routes().split_for_parts();
    // axum exposes no route table; its Debug output holds every path it matches.
    let text = format!("{router:?}");
    let mut paths: Vec<String> = text
        .match_indices("\"/api/")
        .filter_map(|(i, _)| {
            let rest = &text[i + 1..];
            rest.find('"').map(|end| rest[..end].to_string())
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}
