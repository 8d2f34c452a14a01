//! The console's pages and their actions.
//!
//! | path | who | what |
//! |---|---|---|
//! | `GET /console/station` | station staff, operations, auditor | approval queue with evidence, follow-ups, relay commands, today's collection |
//! | `GET /console/cases/{id}` | same | one disconnection case, its evidence in full |
//! | `POST /console/cases/{id}/approve`, `…/hold`, `…/withdraw`, `…/execute` | station staff, operations | decide; withdraw an approval not yet executed (the approver too); execute an approved case (never by its approver) |
//! | `POST /console/follow-ups/{id}/done` | station staff, operations | an offline follow-up done |
//! | `POST /console/call-first/{id}/done` | station staff, operations | a call-before-reconnection order done after calling the customer: reconnects |
//! | `GET /console/accounts`, `GET /console/accounts/{id}` | staff in scope; a customer their own | balance, usage chart, payments, decisions |
//! | `POST /console/accounts/{id}/pay` | the account's customer | pay through the app channel |
//! | `GET/POST /console/hall` | station staff, operations | the fee-control application form (费控申请信息) |
//! | `GET /console/policies` | everyone but customers | versions per county and kind, activation history |
//! | `GET /console/decisions/{id}` | whoever may read the account's decisions | a decision's full record |

use super::data;
use super::{ConsoleError, ConsoleState, Page, Req, render};
use crate::auth::{Action, Principal, Role, Scope, Visibility};
use crate::query::{self, ListFilter, PageRequest};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde::Deserialize;

pub(super) fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/console/station", get(station))
        .route("/console/cases/{id}", get(case_page))
        .route("/console/cases/{id}/{action}", post(case_action))
        .route("/console/follow-ups/{id}/done", post(follow_up_done))
        .route("/console/call-first/{id}/done", post(call_first_done))
        .route("/console/accounts", get(accounts))
        .route("/console/accounts/{id}", get(account_page))
        .route("/console/accounts/{id}/pay", post(pay))
        .route("/console/hall", get(hall).post(hall_submit))
        .route("/console/policies", get(policies))
        .route("/console/decisions/{id}", get(decision_page))
}

/// A signed-in principal; a request without a live session is sent to the login page
/// (with a way back here).
pub(super) struct SignedIn(pub Principal);

impl axum::extract::FromRequestParts<ConsoleState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &ConsoleState,
    ) -> Result<Self, Response> {
        use axum::extract::OptionalFromRequestParts;
        match <Principal as OptionalFromRequestParts<ConsoleState>>::from_request_parts(
            parts, state,
        )
        .await
        {
            Ok(Some(p)) => Ok(SignedIn(p)),
            Ok(None) => Err(
                Redirect::to(&format!("/console/login?next={}", parts.uri.path())).into_response(),
            ),
            Err(e) => Err(e.into_response()),
        }
    }
}

/// Runs a page body; an error becomes the error page.
async fn page<F>(state: &ConsoleState, req: &Req, p: &Principal, body: F) -> Response
where
    F: std::future::Future<Output = Result<Page, ConsoleError>>,
{
    match body.await {
        Ok(page) => render(state, req, Some(p), page),
        Err(e) => e.page(state, req, Some(p)),
    }
}

/// The counties a visibility covers among those this process serves.
fn counties_in(state: &ConsoleState, v: &Visibility) -> Vec<String> {
    state
        .hosts
        .iter()
        .map(|h| h.county.county.clone())
        .filter(|c| v.county.as_ref().is_none_or(|vc| vc == c))
        .collect()
}

// ---------------------------------------------------------------- station

async fn station(State(state): State<ConsoleState>, req: Req, SignedIn(p): SignedIn) -> Response {
    page(&state, &req, &p, async {
        let v = p.visible(Action::ReadWorkOrders)?;
        let cases = data::approval_queue(&state.db, &v).await?;
        let recent = data::recent_cases(&state.db, &v).await?;
        let follow_ups = data::follow_ups(&state.db, &v).await?;
        let waiting = query::work_orders::relay_commands_awaiting(
            &state.db,
            &v,
            &ListFilter::default(),
            &PageRequest::new(Some(200), None)?,
        )
        .await?
        .items;
        let finished = data::finished_commands(&state.db, &v).await?;
        let mut collection = Vec::new();
        if let Ok(cv) = p.visible(Action::ReadCollection) {
            for county in counties_in(&state, &cv) {
                let today = state.now(Some(&county)).date();
                collection.extend(
                    data::collection(&state.db, &county, cv.station_id.as_deref(), today).await?,
                );
            }
        }
        let may_decide = p.visible(Action::DecideWorkOrders).is_ok();
        Ok(Page::new(
            "station.html",
            context! {
                cases => cases.iter().map(|c| case_view(c, &p)).collect::<Vec<_>>(),
                recent => recent,
                follow_ups => follow_ups,
                waiting => waiting,
                finished => finished,
                collection => collection,
                may_decide => may_decide,
            },
        ))
    })
    .await
}

/// A case with what this principal may do to it now.
fn case_view(c: &data::Case, p: &Principal) -> minijinja::Value {
    let scope = Scope::station(&c.county, &c.station_id);
    let may_decide = c.status == "open" && p.authorize(Action::DecideWorkOrders, scope).is_ok();
    let may_execute = c.status == "approved"
        && p.authorize(Action::ExecuteWorkOrders, scope).is_ok()
        && c.decided_by.as_deref() != Some(p.username.as_str());
    let approved_by_me =
        c.status == "approved" && c.decided_by.as_deref() == Some(p.username.as_str());
    // Withdrawing an approval is the safe direction: whoever may decide the case may,
    // the approver included.
    let may_withdraw =
        c.status == "approved" && p.authorize(Action::DecideWorkOrders, scope).is_ok();
    context! {
        may_decide => may_decide,
        may_execute => may_execute,
        may_withdraw => may_withdraw,
        approved_by_me => approved_by_me,
        ..minijinja::Value::from_serialize(c),
    }
}

/// The case, checked against the principal's scope for `action`: outside it answers
/// 404 (a case is about an account, whose existence is private).
async fn visible_case(
    state: &ConsoleState,
    p: &Principal,
    id: i64,
    action: Action,
) -> Result<data::Case, ConsoleError> {
    p.visible(action)?;
    let case = data::case(&state.db, id)
        .await?
        .ok_or(ConsoleError::NotFound)?;
    if p.authorize(
        Action::ReadWorkOrders,
        Scope::station(&case.county, &case.station_id),
    )
    .is_err()
    {
        return Err(ConsoleError::NotFound);
    }
    p.authorize(action, Scope::station(&case.county, &case.station_id))?;
    Ok(case)
}

async fn case_context(
    state: &ConsoleState,
    req: &Req,
    p: &Principal,
    case: &data::Case,
) -> Result<minijinja::Value, ConsoleError> {
    let v = p.visible(Action::ReadWorkOrders)?;
    let detail = query::work_orders::work_order(&state.db, &v, case.work_order_id)
        .await?
        .ok_or(ConsoleError::NotFound)?;
    let history: Vec<super::charts::BalancePoint> = detail
        .balance_history
        .iter()
        .map(|b| super::charts::BalancePoint {
            at: b.posted_at.clone(),
            balance_fen: b.balance_after.fen,
        })
        .collect();
    let chart = super::charts::balance_history(
        &history,
        &req.t("chart.balance_title"),
        &req.t("chart.yuan"),
    );
    Ok(context! {
        case => case_view(case, p),
        chart => minijinja::Value::from_safe_string(chart),
        warnings => detail.warnings,
        decision => detail.decision,
    })
}

async fn case_page(
    State(state): State<ConsoleState>,
    req: Req,
    SignedIn(p): SignedIn,
    Path(id): Path<i64>,
) -> Response {
    page(&state, &req, &p, async {
        let case = visible_case(&state, &p, id, Action::ReadWorkOrders).await?;
        Ok(Page::new(
            "case.html",
            case_context(&state, &req, &p, &case).await?,
        ))
    })
    .await
}

#[derive(Deserialize, Default)]
struct NoteForm {
    #[serde(default)]
    note: String,
}

/// Approve, hold, withdraw the approval of, or execute a case. htmx gets the case's row
/// back; a plain form POST goes back to the page it came from.
async fn case_action(
    State(state): State<ConsoleState>,
    req: Req,
    p: Principal,
    Path((id, action)): Path<(i64, String)>,
    axum::Form(form): axum::Form<NoteForm>,
) -> Response {
    let result = async {
        let needed = match action.as_str() {
            "approve" | "hold" | "withdraw" => Action::DecideWorkOrders,
            "execute" => Action::ExecuteWorkOrders,
            other => {
                return Err(ConsoleError::BadRequest(format!(
                    "no action {other:?} on a case: use approve, hold, withdraw or execute"
                )));
            }
        };
        let case = visible_case(&state, &p, id, needed).await?;
        let now = state.now(Some(&case.county));
        match action.as_str() {
            "approve" | "hold" => {
                let done = crate::cutoff::decide_work_order(
                    &state.db,
                    id,
                    action == "approve",
                    &p.username,
                    now,
                    form.note.trim(),
                )
                .await?;
                if !done {
                    return Err(ConsoleError::Conflict(req.t("case.not_open")));
                }
            }
            "withdraw" => {
                let withdrawal = crate::cutoff::withdraw_approval(
                    &state.db,
                    id,
                    &p.username,
                    now,
                    form.note.trim(),
                )
                .await?;
                if withdrawal != crate::cutoff::Withdrawal::Withdrawn {
                    return Err(ConsoleError::Conflict(req.t("case.not_withdrawable")));
                }
            }
            _ => execute(&state, &req, &p, &case).await?,
        }
        data::case(&state.db, id)
            .await?
            .ok_or(ConsoleError::NotFound)
    }
    .await;
    match result {
        Ok(case) if req.htmx => render(
            &state,
            &req,
            Some(&p),
            Page::new("case_row.html", context! { c => case_view(&case, &p) }),
        ),
        Ok(_) => Redirect::to(&format!("/console/cases/{id}")).into_response(),
        Err(e) => e.page(&state, &req, Some(&p)),
    }
}

/// Executes an approved case now ([`crate::job::Host::execute_work_order`]): the trip
/// passes the safety floor at this moment and goes to the meter, or is refused with the
/// floor's reasons; never by the person who approved it.
async fn execute(
    state: &ConsoleState,
    req: &Req,
    p: &Principal,
    case: &data::Case,
) -> Result<(), ConsoleError> {
    if case.status != "approved" {
        return Err(ConsoleError::Conflict(req.t("case.not_approved")));
    }
    if case.decided_by.as_deref() == Some(p.username.as_str()) {
        return Err(ConsoleError::Conflict(req.t("case.two_person_rule")));
    }
    let host = state.host(&case.county).ok_or_else(|| {
        ConsoleError::Conflict(format!(
            "county {} is not served by this process; execute it where it is served",
            case.county
        ))
    })?;
    use crate::cutoff::Executed;
    // The API's execute path: the trip is issued and verified at once when the floor
    // allows it (the relays job would otherwise send it within a minute).
    let (outcome, _report) = host
        .execute_work_order(case.work_order_id, &p.username)
        .await
        .map_err(|e| {
            tracing::error!("console: executing work order {}: {e}", case.work_order_id);
            ConsoleError::Unavailable
        })?;
    match outcome {
        Executed::Tripped { .. } | Executed::CancelledPaid => Ok(()),
        Executed::FloorRefused { refusals, .. } => Err(ConsoleError::Conflict(format!(
            "{}: {}",
            req.t("case.floor_refused"),
            serde_json::to_string(&refusals).unwrap_or_default()
        ))),
        Executed::NotApproved { .. } => Err(ConsoleError::Conflict(req.t("case.not_approved"))),
        Executed::TwoPersonRule { .. } => {
            Err(ConsoleError::Conflict(req.t("case.two_person_rule")))
        }
    }
}

/// The county of work order `id` of `kind`, when the caller may decide it; an order of
/// another kind, or outside the caller's station, is [`ConsoleError::NotFound`] (not
/// yours = not found).
async fn decidable_order(
    state: &ConsoleState,
    p: &Principal,
    id: i64,
    kind: &str,
) -> Result<String, ConsoleError> {
    p.visible(Action::DecideWorkOrders)?;
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT a.county, a.station_id FROM work_orders w JOIN accounts a ON a.account_id = w.account_id
         WHERE w.work_order_id = $1 AND w.kind = $2",
    )
    .bind(id)
    .bind(kind)
    .fetch_optional(&state.db.pool)
    .await?;
    let (county, station) = row.ok_or(ConsoleError::NotFound)?;
    p.authorize(Action::DecideWorkOrders, Scope::station(&county, &station))
        .map_err(|_| ConsoleError::NotFound)?;
    Ok(county)
}

async fn follow_up_done(
    State(state): State<ConsoleState>,
    req: Req,
    p: Principal,
    Path(id): Path<i64>,
    axum::Form(form): axum::Form<NoteForm>,
) -> Response {
    let result = async {
        let county = decidable_order(&state, &p, id, "offline-follow-up").await?;
        let done = crate::warning::record_follow_up_done(
            &state.db,
            id,
            &p.username,
            form.note.trim(),
            state.now(Some(&county)),
        )
        .await?;
        if done {
            Ok(())
        } else {
            Err(ConsoleError::Conflict(req.t("case.not_open")))
        }
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/console/station").into_response(),
        Err(e) => e.page(&state, &req, Some(&p)),
    }
}

/// A call-before-reconnection order done after a person called the customer: the order
/// becomes done and the relay is closed ([`crate::payment::complete_call_first`];
/// issued at once when this process serves the county). Refused, the order left open,
/// while the balance is below zero, the relay is not open or a command is in flight.
async fn call_first_done(
    State(state): State<ConsoleState>,
    req: Req,
    p: Principal,
    Path(id): Path<i64>,
    axum::Form(form): axum::Form<NoteForm>,
) -> Response {
    use crate::payment::CallFirstCompletion;
    let result = async {
        let county = decidable_order(&state, &p, id, "call-before-reconnection").await?;
        let note = form.note.trim();
        let done = match state.host(&county) {
            Some(host) => {
                host.complete_call_first(id, &p.username, note)
                    .await
                    .map_err(|e| {
                        tracing::error!("console: completing work order {id}: {e}");
                        ConsoleError::Unavailable
                    })?
                    .0
            }
            None => {
                crate::payment::complete_call_first(
                    &state.db,
                    id,
                    &p.username,
                    note,
                    state.now(Some(&county)),
                    &crate::config::RelayConfig::default(),
                )
                .await?
            }
        };
        match done {
            CallFirstCompletion::Reconnecting { .. } => Ok(()),
            CallFirstCompletion::NotFound | CallFirstCompletion::WrongKind { .. } => {
                Err(ConsoleError::NotFound)
            }
            CallFirstCompletion::NotOpen { .. } => {
                Err(ConsoleError::Conflict(req.t("case.not_open")))
            }
            CallFirstCompletion::InArrears { .. } => {
                Err(ConsoleError::Conflict(req.t("case.pay_first")))
            }
            CallFirstCompletion::RelayNotOpen { .. } | CallFirstCompletion::CommandInFlight => {
                Err(ConsoleError::Conflict(req.t("case.relay_busy")))
            }
        }
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/console/station").into_response(),
        Err(e) => e.page(&state, &req, Some(&p)),
    }
}

// ---------------------------------------------------------------- accounts

#[derive(Deserialize, Default)]
struct Paging {
    #[serde(default)]
    after: Option<String>,
}

/// Accounts in scope, 100 a page (`?after=` the last account of the previous page).
async fn accounts(
    State(state): State<ConsoleState>,
    req: Req,
    SignedIn(p): SignedIn,
    Query(paging): Query<Paging>,
) -> Response {
    if p.role == Role::Customer {
        return Redirect::to(&format!(
            "/console/accounts/{}",
            p.account_id.as_deref().unwrap_or("")
        ))
        .into_response();
    }
    page(&state, &req, &p, async {
        let v = p.visible(Action::ReadAccounts)?;
        let list = query::accounts::accounts(
            &state.db,
            &v,
            &ListFilter::default(),
            &PageRequest::new(Some(100), paging.after)?,
        )
        .await?;
        Ok(Page::new(
            "accounts.html",
            context! { accounts => list.items, next_after => list.next_after },
        ))
    })
    .await
}

/// The account, if the principal may read it; 404 otherwise (existence is private).
async fn visible_account(
    state: &ConsoleState,
    p: &Principal,
    id: &str,
) -> Result<query::accounts::AccountSummary, ConsoleError> {
    let v = p.visible(Action::ReadAccounts)?;
    query::accounts::account(&state.db, &v, id)
        .await?
        .ok_or(ConsoleError::NotFound)
}

/// A fresh channel transaction id for one pay form: submitting the same form twice is
/// one payment (the inbox answers the second `duplicate`).
fn new_txn_id() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).expect("the operating system random source");
    format!("console-{}", hex::encode(b))
}

fn may_pay(p: &Principal, a: &query::accounts::AccountSummary) -> bool {
    p.role == Role::Customer
        && p.authorize(
            Action::ReadAccounts,
            Scope::account(&a.county, &a.station_id, &a.account_id),
        )
        .is_ok()
}

async fn summary_context(
    state: &ConsoleState,
    p: &Principal,
    a: &query::accounts::AccountSummary,
    notice: Option<String>,
) -> minijinja::Value {
    context! {
        account => a,
        may_pay => may_pay(p, a),
        app_channel => state.channels.as_ref().is_some_and(|c| c.config.channels.contains_key("app")),
        txn_id => new_txn_id(),
        notice => notice,
    }
}

async fn account_page(
    State(state): State<ConsoleState>,
    req: Req,
    SignedIn(p): SignedIn,
    Path(id): Path<String>,
) -> Response {
    page(&state, &req, &p, async {
        let a = visible_account(&state, &p, &id).await?;
        let today = state.now(Some(&a.county)).date();
        let since = |days| crate::db::ds(today - chrono::Duration::days(days));
        let usage: Vec<super::charts::UsageDay> = query::accounts::usage(
            &state.db,
            &a.account_id,
            query::accounts::UsageBy::Day,
            Some(&since(30)),
            None,
        )
        .await?
        .into_iter()
        .map(|u| super::charts::UsageDay {
            date: u.period,
            kwh_centi: u.energy.centi_kwh,
            charge_fen: u.charge.fen,
        })
        .collect();
        let chart = super::charts::daily_usage(
            &usage,
            &req.t("chart.usage_title"),
            &req.t("chart.kwh"),
            &req.t("chart.yuan"),
        );
        let v = p.visible(Action::ReadAccounts)?;
        let mut payments = query::accounts::payments(
            &state.db,
            &v,
            &ListFilter::default(),
            Some(&a.account_id),
            &PageRequest::new(Some(query::MAX_LIMIT), None)?,
        )
        .await?
        .items;
        payments.reverse();
        payments.truncate(20);
        // The last two weeks' decisions, newest first (a customer may read their own).
        let mut decisions = match p.visible(Action::ReadDecisions) {
            Ok(dv) => {
                query::policies::decisions(
                    &state.db,
                    &dv,
                    &query::policies::DecisionFilter {
                        account_id: Some(a.account_id.clone()),
                        from: Some(since(14)),
                        ..Default::default()
                    },
                    &PageRequest::new(Some(query::MAX_LIMIT), None)?,
                )
                .await?
                .items
            }
            Err(_) => Vec::new(),
        };
        decisions.reverse();
        let summary = summary_context(&state, &p, &a, None).await;
        Ok(Page::new(
            "account.html",
            context! {
                chart => minijinja::Value::from_safe_string(chart),
                payments => payments,
                decisions => decisions,
                ..summary,
            },
        ))
    })
    .await
}

#[derive(Deserialize)]
struct PayForm {
    amount: String,
    txn_id: String,
}

/// The customer's payment, through the `app` channel's inbox: the same validation, the
/// same exactly-once application, receipt SMS and reconnection as a signed app-channel
/// notification (only the signature check is replaced by the console session).
async fn pay(
    State(state): State<ConsoleState>,
    req: Req,
    p: Principal,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<PayForm>,
) -> Response {
    let result = async {
        let a = visible_account(&state, &p, &id).await?;
        if !may_pay(&p, &a) {
            return Err(ConsoleError::Forbidden(req.t("pay.customers_only")));
        }
        let channels = state
            .channels
            .as_ref()
            .ok_or_else(|| ConsoleError::Conflict(req.t("pay.no_app_channel")))?;
        let cfg = channels
            .config
            .channels
            .get("app")
            .ok_or_else(|| ConsoleError::Conflict(req.t("pay.no_app_channel")))?;
        // The console takes no money: only a sandbox app channel lets this button credit.
        if !cfg.console_sandbox {
            return Err(ConsoleError::Forbidden(req.t("pay.provider_only")));
        }
        let body = serde_json::json!({
            "txn_id": form.txn_id,
            "account_id": a.account_id,
            "amount": form.amount.trim(),
            "currency": "CNY",
            "type": "payment",
        })
        .to_string();
        let n = crate::channels::validate("app", body.as_bytes(), cfg.max_amount_fen)
            .map_err(|answer| ConsoleError::BadRequest(answer.message))?;
        let answer = channels.inbox.submit(n, std::time::Instant::now()).await;
        use crate::channels::ResultCode;
        match answer.code {
            ResultCode::Applied | ResultCode::Duplicate => {}
            _ => return Err(ConsoleError::BadRequest(answer.message)),
        }
        let a = visible_account(&state, &p, &a.account_id).await?;
        let notice = super::i18n::fill(
            &req.t(if answer.code == ResultCode::Applied {
                "pay.applied"
            } else {
                "pay.duplicate"
            }),
            &[("amount", form.amount.trim().to_string())],
        );
        Ok((a, notice))
    }
    .await;
    match result {
        Ok((a, notice)) if req.htmx => {
            let ctx = summary_context(&state, &p, &a, Some(notice)).await;
            render(
                &state,
                &req,
                Some(&p),
                Page::new("account_summary.html", ctx),
            )
        }
        Ok((a, _)) => Redirect::to(&format!("/console/accounts/{}", a.account_id)).into_response(),
        Err(e) => e.page(&state, &req, Some(&p)),
    }
}

// ---------------------------------------------------------------- business hall

/// The fee-control application form (费控申请信息) as submitted.
#[derive(Deserialize, Default, serde::Serialize, Clone)]
struct ApplicationForm {
    /// `new-connection` or `capacity-increase`.
    #[serde(default)]
    application: String,
    #[serde(default)]
    county: String,
    #[serde(default)]
    station_id: String,
    #[serde(default)]
    customer_id: String,
    #[serde(default)]
    customer_name: String,
    #[serde(default)]
    master_mobile: String,
    #[serde(default)]
    customer_class: String,
    #[serde(default)]
    vulnerable: Option<String>,
    #[serde(default)]
    meter_id: String,
    /// Modbus TCP gateway `ip:port`.
    #[serde(default)]
    gateway: String,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    ct_ratio: String,
    #[serde(default)]
    pt_ratio: String,
    #[serde(default)]
    account_id: String,
    /// 预警值, yuan.
    #[serde(default)]
    alarm_threshold: String,
    /// 代扣值, yuan; empty for none.
    #[serde(default)]
    auto_debit: String,
    #[serde(default)]
    mobile: String,
    #[serde(default)]
    second_mobile: String,
    #[serde(default)]
    keep_power: Option<String>,
    #[serde(default)]
    time_of_use: Option<String>,
    /// Initial prepayment taken at the counter, yuan; empty: not yet paid.
    #[serde(default)]
    prepayment: String,
}

fn yuan_field(name: &str, text: &str) -> Result<i64, String> {
    let d: rust_decimal::Decimal = text
        .trim()
        .parse()
        .map_err(|_| format!("{name}: {text:?} is not an amount in yuan (e.g. 20.00)"))?;
    let fen = crate::money::yuan_to_fen(d).map_err(|e| format!("{name}: {e}"))?;
    if fen < 0 {
        return Err(format!("{name}: must not be negative"));
    }
    Ok(fen)
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Checks the form and builds the application; every problem found, each saying what
/// to correct.
fn application(
    f: &ApplicationForm,
    p: &Principal,
) -> Result<(crate::onboarding::Application, Option<i64>), Vec<String>> {
    use crate::onboarding::check_mobile_format;
    let mut errors = Vec::new();
    let mut need = |name: &str, v: &str| {
        if v.trim().is_empty() {
            errors.push(format!("{name} is required"));
        }
    };
    for (name, v) in [
        ("customer number", &f.customer_id),
        ("customer name", &f.customer_name),
        ("meter number", &f.meter_id),
        ("account number", &f.account_id),
        ("mobile", &f.mobile),
        ("meter gateway", &f.gateway),
    ] {
        need(name, v);
    }
    if f.application != "new-connection" {
        errors.push(
            "only new connections are accepted here; a capacity increase changes the meter (`feegate meter replace`) and the agreement (`feegate agreement change`)".into(),
        );
    }
    let county = p
        .county
        .clone()
        .unwrap_or_else(|| f.county.trim().to_string());
    let station = p
        .station_id
        .clone()
        .unwrap_or_else(|| f.station_id.trim().to_string());
    if county.is_empty() || station.is_empty() {
        errors.push("county and station are required".into());
    }
    if ![
        "low-voltage-residential",
        "low-voltage-commercial",
        "high-voltage",
    ]
    .contains(&f.customer_class.as_str())
    {
        errors.push(format!(
            "customer class {:?}: choose residential, commercial or high voltage",
            f.customer_class
        ));
    }
    for (what, number) in [
        ("mobile", &f.mobile),
        ("second mobile", &f.second_mobile),
        ("master-data mobile", &f.master_mobile),
    ] {
        if !number.trim().is_empty()
            && let Err(e) = check_mobile_format(what, number.trim())
        {
            errors.push(e.to_string());
        }
    }
    let gateway: Option<std::net::SocketAddr> = match f.gateway.trim().parse() {
        Ok(g) => Some(g),
        Err(_) if f.gateway.trim().is_empty() => None,
        Err(_) => {
            errors.push(format!(
                "meter gateway {:?}: give the gateway's IP address and port, e.g. 10.0.0.7:502",
                f.gateway
            ));
            None
        }
    };
    let unit = match f.unit.trim().parse::<u8>() {
        Ok(u) if (1..=247).contains(&u) => u,
        _ => {
            errors.push(format!("Modbus unit {:?}: a number 1–247", f.unit));
            1
        }
    };
    let ratio = |name: &str, v: &str, errors: &mut Vec<String>| match v.trim() {
        "" => 1,
        t => match t.parse::<i64>() {
            Ok(r) if r >= 1 => r,
            _ => {
                errors.push(format!("{name} {v:?}: a whole number, at least 1"));
                1
            }
        },
    };
    let ct = ratio("CT ratio", &f.ct_ratio, &mut errors);
    let pt = ratio("PT ratio", &f.pt_ratio, &mut errors);
    let alarm = yuan_field("alarm threshold", &f.alarm_threshold).unwrap_or_else(|e| {
        errors.push(e);
        0
    });
    let auto_debit = match opt(&f.auto_debit) {
        None => None,
        Some(t) => match yuan_field("auto-debit amount", &t) {
            Ok(0) => {
                errors.push("auto-debit amount: leave empty for none, or more than 0".into());
                None
            }
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    let prepayment = match opt(&f.prepayment) {
        None => None,
        Some(t) => match yuan_field("initial prepayment", &t) {
            Ok(0) => None,
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((
        crate::onboarding::Application {
            county,
            station_id: station,
            customer_id: f.customer_id.trim().into(),
            customer_name: f.customer_name.trim().into(),
            master_mobile: opt(&f.master_mobile),
            customer_class: f.customer_class.clone(),
            vulnerable: f.vulnerable.is_some(),
            meter_id: f.meter_id.trim().into(),
            link: feegate_meter::fleet::MeterLink::Modbus(feegate_meter::registers::MeterAddress {
                gateway: gateway.expect("checked above"),
                unit,
            }),
            ct_ratio: ct,
            pt_ratio: pt,
            account_id: f.account_id.trim().into(),
            alarm_threshold_fen: alarm,
            auto_debit_fen: auto_debit,
            mobile: f.mobile.trim().into(),
            second_mobile: opt(&f.second_mobile),
            keep_power: f.keep_power.is_some(),
            time_of_use: f.time_of_use.is_some(),
        },
        prepayment,
    ))
}

/// Accounts in the principal's scope waiting for their initial prepayment (among the
/// first 500).
async fn pending_prepayment(
    state: &ConsoleState,
    v: &Visibility,
) -> Result<Vec<query::accounts::AccountSummary>, ConsoleError> {
    Ok(query::accounts::accounts(
        &state.db,
        v,
        &ListFilter::default(),
        &PageRequest::new(Some(query::MAX_LIMIT), None)?,
    )
    .await?
    .items
    .into_iter()
    .filter(|a| a.status == "pending-prepayment")
    .collect())
}

async fn hall(State(state): State<ConsoleState>, req: Req, SignedIn(p): SignedIn) -> Response {
    page(&state, &req, &p, async {
        let v = p.visible(Action::Onboard)?;
        let form = ApplicationForm {
            application: "new-connection".into(),
            customer_class: "low-voltage-residential".into(),
            unit: "1".into(),
            ct_ratio: "1".into(),
            pt_ratio: "1".into(),
            alarm_threshold: "20.00".into(),
            ..Default::default()
        };
        Ok(Page::new(
            "hall.html",
            context! { form => form, pending => pending_prepayment(&state, &v).await? },
        ))
    })
    .await
}

async fn hall_submit(
    State(state): State<ConsoleState>,
    req: Req,
    p: Principal,
    axum::Form(form): axum::Form<ApplicationForm>,
) -> Response {
    page(&state, &req, &p, async {
        let v = p.visible(Action::Onboard)?;
        let (app, prepayment) = match application(&form, &p) {
            Ok(x) => x,
            Err(errors) => {
                let mut page = Page::new(
                    "hall.html",
                    context! { form => form, errors => errors, pending => pending_prepayment(&state, &v).await? },
                );
                page.status = StatusCode::BAD_REQUEST;
                return Ok(page);
            }
        };
        p.authorize(Action::Onboard, Scope::station(&app.county, &app.station_id))?;
        let now = state.now(Some(&app.county));
        let onboarded = match crate::onboarding::onboard(&state.db, &app, now).await {
            Ok(o) => o,
            Err(e) => {
                let msg = e.to_string();
                let hint = if let Some(refused) = msg.strip_prefix("stored value is invalid: application refused: ") {
                    refused.to_string()
                } else if msg.contains("UNIQUE") || msg.contains("unique") || msg.contains("duplicate key") {
                    format!("{}: {msg}", req.t("hall.exists"))
                } else if msg.contains("FOREIGN KEY") || msg.contains("foreign key") {
                    format!("{}: {msg}", req.t("hall.unknown_station"))
                } else {
                    return Err(ConsoleError::from(e));
                };
                let mut page = Page::new(
                    "hall.html",
                    context! { form => form, errors => vec![hint], pending => pending_prepayment(&state, &v).await? },
                );
                page.status = StatusCode::CONFLICT;
                return Ok(page);
            }
        };
        let mut prepaid = None;
        if let Some(fen) = prepayment {
            let txn = format!("hall-{}", app.account_id);
            let notice = crate::payment::PaymentNotice {
                channel: "business-hall",
                channel_txn_id: &txn,
                account_id: &app.account_id,
                amount_fen: fen,
            };
            crate::payment::apply(&state.db, &notice, crate::ledger::EntryKind::Prepayment, now)
                .await
                .map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
            prepaid = Some(fen);
        }
        let account = query::accounts::account(&state.db, &v, &app.account_id).await?;
        Ok(Page::new(
            "hall.html",
            context! {
                form => ApplicationForm { application: "new-connection".into(), customer_class: "low-voltage-residential".into(), unit: "1".into(), ct_ratio: "1".into(), pt_ratio: "1".into(), alarm_threshold: "20.00".into(), ..Default::default() },
                done => context! { account => account, mobile_mismatch => onboarded.mobile_mismatch, prepaid_fen => prepaid },
                pending => pending_prepayment(&state, &v).await?,
            },
        ))
    })
    .await
}

// ---------------------------------------------------------------- policies, decisions

async fn policies(State(state): State<ConsoleState>, req: Req, SignedIn(p): SignedIn) -> Response {
    page(&state, &req, &p, async {
        let v = p.visible(Action::ReadPolicies)?;
        let mut counties = Vec::new();
        for county in counties_in(&state, &v) {
            let now = state.now(Some(&county));
            let mut kinds = Vec::new();
            for kind in [
                crate::policy::PolicyKind::Tariff,
                crate::policy::PolicyKind::Warning,
                crate::policy::PolicyKind::Notice,
                crate::policy::PolicyKind::Cutoff,
            ] {
                let registry_err = |e: crate::registry::RegistryError| {
                    tracing::error!("console: policy registry: {e}");
                    ConsoleError::Unavailable
                };
                let versions = crate::registry::publications(&state.db, &county, Some(kind))
                    .await
                    .map_err(registry_err)?;
                let history = crate::registry::history(&state.db, &county, Some(kind))
                    .await
                    .map_err(registry_err)?;
                let in_force = crate::registry::in_force(&state.db, &county, kind, now)
                    .await
                    .map_err(registry_err)?;
                kinds.push(context! {
                    kind => kind.as_str(),
                    versions => versions.iter().map(|x| context! {
                        publication_id => x.publication_id,
                        sha256 => x.component_sha256,
                        source => x.source,
                        who => x.who,
                        published_at => x.published_at,
                        note => x.note,
                        parameters => x.parameters_json,
                        size_bytes => x.size_bytes,
                        in_force => in_force.as_ref().is_some_and(|a| a.publication_id == x.publication_id),
                    }).collect::<Vec<_>>(),
                    history => history.iter().map(|a| context! {
                        activation_id => a.activation_id,
                        publication_id => a.publication_id,
                        sha256 => a.component_sha256,
                        action => a.action,
                        stage => a.rollout_stage.map(|s| format!("{s:?}")),
                        effective_at => a.effective_at,
                        who => a.who,
                        note => a.note,
                        cancelled => a.cancelled.as_ref().map(|c| context! {
                            who => c.who,
                            note => c.note,
                            recorded_at => c.recorded_at,
                        }),
                    }).collect::<Vec<_>>(),
                });
            }
            counties.push(context! { county => county, kinds => kinds });
        }
        Ok(Page::new("policies.html", context! { counties => counties }))
    })
    .await
}

async fn decision_page(
    State(state): State<ConsoleState>,
    req: Req,
    SignedIn(p): SignedIn,
    Path(id): Path<i64>,
) -> Response {
    page(&state, &req, &p, async {
        let v = p.visible(Action::ReadDecisions)?;
        let d = query::policies::decision(&state.db, &v, id)
            .await?
            .ok_or(ConsoleError::NotFound)?;
        let pretty = |x: &serde_json::Value| serde_json::to_string_pretty(x).unwrap_or_default();
        Ok(Page::new(
            "decision.html",
            context! {
                input => pretty(&d.input),
                output => d.output.as_ref().map(pretty),
                failure => d.failure.as_ref().map(pretty),
                d => d,
            },
        ))
    })
    .await
}
