//! Work orders: the list, one with its evidence, approve, hold, withdraw an approval,
//! execute (the two-person rule), complete a call-before-reconnection order (which
//! reconnects), and relay commands awaiting confirmation.

use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody, json_body};
use super::{ListParams, choice, county_runtime, idempotency, now_in, who};
use crate::auth::{Action, Principal};
use crate::cutoff::{self, Executed, Withdrawal};
use crate::payment::{self, CallFirstCompletion};
use crate::query::work_orders::{
    self as q, KINDS, RelayCommandRow, STATUSES, WorkOrder, WorkOrderDetail, WorkOrderFilter,
};
use crate::query::{ListFilter, Money, Page};
use crate::serve::ServeState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type St = State<Arc<ServeState>>;

/// Work-order list filters.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkOrderParams {
    /// Rows per page, 1..=500 (default 50).
    pub limit: Option<u32>,
    /// The `next_after` of the previous page (a work order id).
    pub after: Option<String>,
    pub county: Option<String>,
    pub station: Option<String>,
    /// approve-disconnection | offline-follow-up | data-maintenance | call-before-reconnection |
    /// relay-failure | reconciliation | auto-debit-failed
    pub kind: Option<String>,
    /// open | approved | held | done | cancelled
    pub status: Option<String>,
    pub account: Option<String>,
}

/// List work orders (the approval queue: `kind=approve-disconnection&status=open`).
#[utoipa::path(get, path = "/work-orders", tag = "work-orders", params(WorkOrderParams),
    responses((status = 200, body = Page<WorkOrder>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_work_orders(
    State(s): St,
    p: Principal,
    ApiQuery(w): ApiQuery<WorkOrderParams>,
) -> Result<Json<Page<WorkOrder>>, ApiError> {
    let v = p.visible(Action::ReadWorkOrders)?;
    let l = ListParams {
        limit: w.limit,
        after: w.after,
        county: w.county,
        station: w.station,
    };
    let f = WorkOrderFilter {
        scope: l.filter(),
        kind: choice("kind", w.kind, "a work-order kind", &KINDS)?,
        status: choice("status", w.status, "a work-order status", &STATUSES)?,
        account_id: w.account.filter(|a| !a.is_empty()),
    };
    Ok(Json(q::work_orders(&s.db, &v, &f, &l.page()?).await?))
}

/// One work order with its case: evidence, balance history, warnings and their delivery
/// receipts, the policy decision and its explanation.
#[utoipa::path(get, path = "/work-orders/{work_order_id}", tag = "work-orders",
    params(("work_order_id" = i64, Path, description = "Work order id")),
    responses((status = 200, body = WorkOrderDetail), (status = 404, body = ErrorBody)))]
pub async fn get_work_order(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<WorkOrderDetail>, ApiError> {
    let v = p.visible(Action::ReadWorkOrders)?;
    q::work_order(&s.db, &v, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(&format!("work order {id}")))
}

/// A decision's note.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionNote {
    /// Why (e.g. "called the customer, no answer"); recorded on the order.
    #[serde(default)]
    pub note: String,
}

/// The order as visible for `action`, or 404.
async fn visible_order(
    s: &ServeState,
    p: &Principal,
    action: Action,
    id: i64,
) -> Result<WorkOrderDetail, ApiError> {
    let v = p.visible(action)?;
    q::work_order(&s.db, &v, id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("work order {id}")))
}

/// What a decision endpoint does to an approve-disconnection order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    /// open → approved
    Approve,
    /// open → held
    Hold,
    /// approved (not executed) → held
    Withdraw,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Approve => "approve",
            Verb::Hold => "hold",
            Verb::Withdraw => "withdraw",
        }
    }
}

async fn decide(
    s: Arc<ServeState>,
    p: Principal,
    headers: HeaderMap,
    body: Bytes,
    id: i64,
    verb: Verb,
) -> Result<Response, ApiError> {
    p.visible(Action::DecideWorkOrders)?;
    let path = format!("/api/v1/work-orders/{id}/{}", verb.name());
    let (db, principal, raw) = (s.db.clone(), p.clone(), body.clone());
    Ok(idempotency::once(&db, &principal, &headers, "POST", &path, &raw, |_key| async move {
        let note: DecisionNote = if body.is_empty() {
            DecisionNote::default()
        } else {
            json_body(&body)?
        };
        let order = visible_order(&s, &p, Action::DecideWorkOrders, id).await?;
        if order.order.kind != "approve-disconnection" {
            return Err(ApiError::conflict(format!(
                "work order {id} is a {} order; only approve-disconnection orders are approved, held or withdrawn",
                order.order.kind
            )));
        }
        let now = now_in(&s, order.order.county.as_deref());
        if verb == Verb::Withdraw {
            if let Withdrawal::NotApproved { status } =
                cutoff::withdraw_approval(&s.db, id, who(&p), now, &note.note).await?
            {
                return Err(not_approved(id, status.unwrap_or(order.order.status)));
            }
        } else {
            let approve = verb == Verb::Approve;
            let done =
                cutoff::decide_work_order(&s.db, id, approve, who(&p), now, &note.note).await?;
            if !done {
                return Err(ApiError::conflict(format!(
                    "work order {id} is {}, not open: it was decided before; reload it",
                    order.order.status
                )));
            }
        }
        tracing::info!(user = %p.username, work_order = id, verb = verb.name(), "api: work order decided");
        let after = visible_order(&s, &p, Action::ReadWorkOrders, id).await?;
        Ok((StatusCode::OK, serde_json::to_value(after.order).expect("serialises")))
    })
    .await)
}

/// 409 `not-approved`: the approval of work order `id` cannot be withdrawn because the
/// order is `status`; `details.status` carries it.
fn not_approved(id: i64, status: String) -> ApiError {
    let what = match status.as_str() {
        "open" => "nobody approved it yet: hold it instead",
        "done" => "it was executed: the trip was issued",
        "held" => "it is held already: nobody is cut off on it",
        "cancelled" => "it was cancelled: nobody is cut off on it",
        _ => "reload it",
    };
    ApiError::new(
        StatusCode::CONFLICT,
        "not-approved",
        format!(
            "work order {id} is {status}, not approved, so there is no approval to withdraw; {what}"
        ),
    )
    .with_details(serde_json::json!({ "status": status }))
}

/// Approve an open disconnection work order (审批停电). Another person executes it.
#[utoipa::path(post, path = "/work-orders/{work_order_id}/approve", tag = "work-orders",
    params(("work_order_id" = i64, Path, description = "Work order id"),
        ("Idempotency-Key" = String, Header, description = "Required; reuse it when you retry")),
    request_body(content = DecisionNote, description = "Optional note"),
    responses((status = 200, body = WorkOrder), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn approve_work_order(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    decide(s, p, headers, body, id, Verb::Approve).await
}

/// Hold an open disconnection work order: nobody is cut off on it.
#[utoipa::path(post, path = "/work-orders/{work_order_id}/hold", tag = "work-orders",
    params(("work_order_id" = i64, Path, description = "Work order id"),
        ("Idempotency-Key" = String, Header, description = "Required; reuse it when you retry")),
    request_body(content = DecisionNote, description = "Optional note"),
    responses((status = 200, body = WorkOrder), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn hold_work_order(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    decide(s, p, headers, body, id, Verb::Hold).await
}

/// Withdraw the approval of a disconnection work order not executed yet: the order
/// becomes `held` (nobody is cut off on it in this arrears episode), keeps its approver
/// in `decided_by` and records `withdrawn_by`/`withdrawn_at`; the note is appended to
/// the order's. Whoever may approve or hold the order may withdraw it, the approver
/// included (no two-person rule: it is the safe direction). 409 `not-approved`, with
/// `details.status`, when the order is open, held, cancelled or already executed
/// (`done`); an execution racing with the withdrawal either finishes first (then this
/// answers `not-approved` with `done`) or issues nothing.
#[utoipa::path(post, path = "/work-orders/{work_order_id}/withdraw", tag = "work-orders",
    params(("work_order_id" = i64, Path, description = "Work order id"),
        ("Idempotency-Key" = String, Header, description = "Required; reuse it when you retry")),
    request_body(content = DecisionNote, description = "Optional note: why the approval is withdrawn"),
    responses((status = 200, body = WorkOrder, description = "withdrawn: the order is held"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "not-approved (details.status: the order's status), or conflict (not a disconnection order)")))]
pub async fn withdraw_work_order(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    decide(s, p, headers, body, id, Verb::Withdraw).await
}

/// What executing an order did.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ExecutionResult {
    pub work_order_id: i64,
    /// tripped | cancelled-paid (no longer in arrears)
    pub outcome: String,
    /// The trip command and its state after this call's attempt: confirmed once a fresh
    /// status read shows the relay open, else still awaiting confirmation (the relay job
    /// retries until its deadline).
    pub command_id: Option<i64>,
    pub command_status: Option<String>,
    pub order: WorkOrder,
}

/// Execute an approved disconnection work order now: the trip goes through the safety
/// floor at this moment and is issued and verified at once. Refused with
/// `two-person-rule` when the caller approved the order.
#[utoipa::path(post, path = "/work-orders/{work_order_id}/execute", tag = "work-orders",
    params(("work_order_id" = i64, Path, description = "Work order id"),
        ("Idempotency-Key" = String, Header, description = "Required; reuse it when you retry")),
    responses((status = 200, body = ExecutionResult), (status = 403, body = ErrorBody, description = "forbidden or two-person-rule"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "conflict (not approved) or floor-refused"),
        (status = 503, body = ErrorBody, description = "county-not-served")))]
pub async fn execute_work_order(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    p.visible(Action::ExecuteWorkOrders)?;
    let path = format!("/api/v1/work-orders/{id}/execute");
    let (db, principal) = (s.db.clone(), p.clone());
    Ok(idempotency::once(&db, &principal, &headers, "POST", &path, b"", |_key| async move {
        let order = visible_order(&s, &p, Action::ExecuteWorkOrders, id).await?;
        let county = order.order.county.clone().unwrap_or_default();
        let Some(runtime) = county_runtime(&s, &county) else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "county-not-served",
                format!("county {county} is not served by this host, which has no meter access for it; execute it on the host that serves {county}"),
            ));
        };
        let (executed, _report) = runtime
            .host
            .execute_work_order(id, who(&p))
            .await
            .map_err(|e| ApiError::internal("executing the work order", e))?;
        let outcome = match executed {
            Executed::Tripped { .. } => "tripped",
            Executed::CancelledPaid => "cancelled-paid",
            Executed::NotApproved { status } => {
                return Err(ApiError::conflict(format!(
                    "work order {id} is {}: only an approved approve-disconnection order is executed",
                    status.as_deref().unwrap_or("not an approve-disconnection order")
                )));
            }
            Executed::TwoPersonRule { approver } => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "two-person-rule",
                    format!("{approver} approved work order {id}, so another person must execute it (two-person rule)"),
                ));
            }
            Executed::FloorRefused { refusals, cancelled } => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "floor-refused",
                    if cancelled {
                        format!("the safety floor never allows this trip (keep-power or vulnerable customer); work order {id} is cancelled")
                    } else {
                        format!("the safety floor refuses this trip now; work order {id} stays approved and is tried again later")
                    },
                )
                .with_details(serde_json::json!({ "refusals": refusals, "cancelled": cancelled })));
            }
        };
        let command: Option<(i64, String)> = sqlx::query_as(
            "SELECT command_id, status FROM relay_commands WHERE decision_key = $1",
        )
        .bind(format!("work-order:{id}"))
        .fetch_optional(&s.db.pool)
        .await?;
        tracing::info!(user = %p.username, work_order = id, outcome, "api: work order executed");
        let after = visible_order(&s, &p, Action::ReadWorkOrders, id).await?;
        Ok((
            StatusCode::OK,
            serde_json::to_value(ExecutionResult {
                work_order_id: id,
                outcome: outcome.into(),
                command_id: command.as_ref().map(|c| c.0),
                command_status: command.map(|c| c.1),
                order: after.order,
            })
            .expect("serialises"),
        ))
    })
    .await)
}

/// What completing a call-before-reconnection order did.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CallFirstResult {
    pub work_order_id: i64,
    /// reconnecting: the order is done and its direct-close command was created
    pub outcome: String,
    /// The direct-close command (decision key `work-order:{id}`) and its state after
    /// this call's attempt (issued at once when this host serves the county, else by
    /// the serving host's relays job within a minute).
    pub command_id: i64,
    pub command_status: Option<String>,
    pub order: WorkOrder,
}

/// Complete a call-before-reconnection work order after calling the customer: the order
/// becomes `done` (who, when, the note) and the relay is closed (a direct-close
/// command, issued and verified in the call on the host that serves the county). A
/// second call answers 409 `conflict` with `details.status` `done` and commands nothing.
/// Refused, the order left open: 409 `in-arrears` (balance below zero: the customer
/// must pay first; `details.balance`), 409 `conflict` when the relay is not open or a
/// relay command is in flight, or the order is of another kind.
#[utoipa::path(post, path = "/work-orders/{work_order_id}/reconnect", tag = "work-orders",
    params(("work_order_id" = i64, Path, description = "Work order id"),
        ("Idempotency-Key" = String, Header, description = "Required; reuse it when you retry")),
    request_body(content = DecisionNote, description = "Optional note: what was agreed on the call"),
    responses((status = 200, body = CallFirstResult, description = "done: the close command was created"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "conflict (not open, another kind, relay not open, command in flight) or in-arrears")))]
pub async fn reconnect_work_order(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    p.visible(Action::DecideWorkOrders)?;
    let path = format!("/api/v1/work-orders/{id}/reconnect");
    let (db, principal, raw) = (s.db.clone(), p.clone(), body.clone());
    Ok(idempotency::once(&db, &principal, &headers, "POST", &path, &raw, |_key| async move {
        let note: DecisionNote = if body.is_empty() {
            DecisionNote::default()
        } else {
            json_body(&body)?
        };
        // Scope first (not yours = not found); the kind is checked by the completion.
        let order = visible_order(&s, &p, Action::DecideWorkOrders, id).await?;
        let county = order.order.county.clone().unwrap_or_default();
        let done = match county_runtime(&s, &county) {
            Some(c) => {
                c.host
                    .complete_call_first(id, who(&p), &note.note)
                    .await
                    .map_err(|e| ApiError::internal("completing the work order", e))?
                    .0
            }
            None => {
                payment::complete_call_first(
                    &s.db,
                    id,
                    who(&p),
                    &note.note,
                    now_in(&s, Some(&county)),
                    &crate::config::RelayConfig::default(),
                )
                .await?
            }
        };
        let message = done.message(id);
        let command_id = match done {
            CallFirstCompletion::Reconnecting { command_id } => command_id,
            CallFirstCompletion::NotFound => {
                return Err(ApiError::not_found(&format!("work order {id}")));
            }
            CallFirstCompletion::InArrears { balance_fen } => {
                return Err(ApiError::new(StatusCode::CONFLICT, "in-arrears", message)
                    .with_details(serde_json::json!({ "balance": Money::from(balance_fen) })));
            }
            CallFirstCompletion::NotOpen { status, .. } => {
                return Err(ApiError::conflict(message)
                    .with_details(serde_json::json!({ "status": status })));
            }
            CallFirstCompletion::WrongKind { .. }
            | CallFirstCompletion::RelayNotOpen { .. }
            | CallFirstCompletion::CommandInFlight => return Err(ApiError::conflict(message)),
        };
        let command_status: Option<String> =
            sqlx::query_scalar("SELECT status FROM relay_commands WHERE command_id = $1")
                .bind(command_id)
                .fetch_optional(&s.db.pool)
                .await?;
        tracing::info!(user = %p.username, work_order = id, command_id, "api: call-first order done, reconnecting");
        let after = visible_order(&s, &p, Action::ReadWorkOrders, id).await?;
        Ok((
            StatusCode::OK,
            serde_json::to_value(CallFirstResult {
                work_order_id: id,
                outcome: "reconnecting".into(),
                command_id,
                command_status,
                order: after.order,
            })
            .expect("serialises"),
        ))
    })
    .await)
}

/// Relay commands not yet confirmed by a fresh status read.
#[utoipa::path(get, path = "/relay-commands", tag = "work-orders", params(ListParams),
    responses((status = 200, body = Page<RelayCommandRow>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_relay_commands(
    State(s): St,
    p: Principal,
    ApiQuery(l): ApiQuery<ListParams>,
) -> Result<Json<Page<RelayCommandRow>>, ApiError> {
    let v = p.visible(Action::ReadWorkOrders)?;
    let f: ListFilter = l.filter();
    Ok(Json(
        q::relay_commands_awaiting(&s.db, &v, &f, &l.page()?).await?,
    ))
}
