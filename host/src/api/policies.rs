//! Policies (versions, activation history), decisions (why a customer was charged,
//! warned, cut off), collection figures per station.

use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::{ListParams, choice, date_param, now_in};
use crate::auth::{Action, Principal};
use crate::policy::PolicyKind;
use crate::query::collection::{self as qc, StationDay};
use crate::query::policies::{
    self as q, ActivationEvent, Decision, DecisionFilter, DecisionLine, PolicySummary,
    PolicyVersion, parse_kind,
};
use crate::query::{ListFilter, Page};
use crate::serve::ServeState;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use std::sync::Arc;

type St = State<Arc<ServeState>>;

/// Which county's policies, of which kind.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyParams {
    /// Only this county (narrows your visibility, never widens it).
    pub county: Option<String>,
    /// tariff | warning | notice | cutoff
    pub kind: Option<String>,
}

impl PolicyParams {
    fn kind(&self) -> Result<Option<PolicyKind>, ApiError> {
        let kinds = PolicyKind::ALL.map(PolicyKind::as_str);
        Ok(choice("kind", self.kind.clone(), "a policy kind", &kinds)?
            .as_deref()
            .map(parse_kind)
            .transpose()?)
    }
}

/// Each visible county's policy per kind, with the version in force.
#[utoipa::path(get, path = "/policies", tag = "policies", params(PolicyParams),
    responses((status = 200, body = Vec<PolicySummary>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_policies(
    State(s): St,
    p: Principal,
    ApiQuery(pp): ApiQuery<PolicyParams>,
) -> Result<Json<Vec<PolicySummary>>, ApiError> {
    let v = p.visible(Action::ReadPolicies)?;
    let now = now_in(&s, pp.county.as_deref());
    Ok(Json(
        q::policies(&s.db, &v, pp.county.as_deref(), pp.kind()?, now).await?,
    ))
}

/// Published versions per county and kind, oldest first.
#[utoipa::path(get, path = "/policies/versions", tag = "policies", params(PolicyParams),
    responses((status = 200, body = Vec<PolicyVersion>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_versions(
    State(s): St,
    p: Principal,
    ApiQuery(pp): ApiQuery<PolicyParams>,
) -> Result<Json<Vec<PolicyVersion>>, ApiError> {
    let v = p.visible(Action::ReadPolicies)?;
    Ok(Json(
        q::versions(&s.db, &v, pp.county.as_deref(), pp.kind()?).await?,
    ))
}

/// Activation history (who activated or rolled back which version, when, why), oldest
/// first.
#[utoipa::path(get, path = "/policies/activations", tag = "policies", params(PolicyParams),
    responses((status = 200, body = Vec<ActivationEvent>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_activations(
    State(s): St,
    p: Principal,
    ApiQuery(pp): ApiQuery<PolicyParams>,
) -> Result<Json<Vec<ActivationEvent>>, ApiError> {
    let v = p.visible(Action::ReadPolicies)?;
    Ok(Json(
        q::activations(&s.db, &v, pp.county.as_deref(), pp.kind()?).await?,
    ))
}

/// Decision list filters.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DecisionParams {
    /// Rows per page, 1..=500 (default 50).
    pub limit: Option<u32>,
    /// The `next_after` of the previous page (a decision id).
    pub after: Option<String>,
    pub county: Option<String>,
    pub station: Option<String>,
    /// tariff | warning | notice | cutoff | reconnection
    pub kind: Option<String>,
    pub account: Option<String>,
    /// First business date, YYYY-MM-DD (inclusive).
    pub from: Option<String>,
    /// Last business date, YYYY-MM-DD (inclusive).
    pub to: Option<String>,
}

/// The decision log: what each policy decided, with its reason and explanation.
#[utoipa::path(get, path = "/decisions", tag = "decisions", params(DecisionParams),
    responses((status = 200, body = Page<DecisionLine>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_decisions(
    State(s): St,
    p: Principal,
    ApiQuery(d): ApiQuery<DecisionParams>,
) -> Result<Json<Page<DecisionLine>>, ApiError> {
    let v = p.visible(Action::ReadDecisions)?;
    let l = ListParams {
        limit: d.limit,
        after: d.after,
        county: d.county,
        station: d.station,
    };
    let f = DecisionFilter {
        scope: l.filter(),
        kind: choice("kind", d.kind, "a decision kind", &crate::audit::LOG_KINDS)?,
        account_id: d.account.filter(|a| !a.is_empty()),
        from: date_param("from", d.from)?,
        to: date_param("to", d.to)?,
    };
    Ok(Json(q::decisions(&s.db, &v, &f, &l.page()?).await?))
}

/// One decision's full record: why this customer was charged, warned, cut off or
/// reconnected — the component, its exact input and output, the explanation.
#[utoipa::path(get, path = "/decisions/{decision_id}", tag = "decisions",
    params(("decision_id" = i64, Path, description = "Decision id")),
    responses((status = 200, body = Decision), (status = 404, body = ErrorBody)))]
pub async fn get_decision(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Decision>, ApiError> {
    let v = p.visible(Action::ReadDecisions)?;
    q::decision(&s.db, &v, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(&format!("decision {id}")))
}

/// Collection figures range.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CollectionParams {
    pub county: Option<String>,
    pub station: Option<String>,
    /// First day, YYYY-MM-DD (default: today in the county).
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD (default: `from`); at most 92 days.
    pub to: Option<String>,
}

/// Collection coverage and read success rate (抄通率) per station and day.
#[utoipa::path(get, path = "/collection", tag = "collection", params(CollectionParams),
    responses((status = 200, body = Vec<StationDay>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_collection(
    State(s): St,
    p: Principal,
    ApiQuery(c): ApiQuery<CollectionParams>,
) -> Result<Json<Vec<StationDay>>, ApiError> {
    let v = p.visible(Action::ReadCollection)?;
    let today = crate::db::ds(now_in(&s, c.county.as_deref()).date());
    let from = date_param("from", c.from.clone())?.unwrap_or(today);
    let to = date_param("to", c.to.clone())?.unwrap_or_else(|| from.clone());
    let f = ListFilter {
        county: c.county.filter(|x| !x.is_empty()),
        station_id: c.station.filter(|x| !x.is_empty()),
    };
    Ok(Json(qc::station_days(&s.db, &v, &f, &from, &to).await?))
}
