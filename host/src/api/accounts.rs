//! Customers, meters, accounts (balance, ledger, usage), payments and agreements
//! (onboarding with the initial prepayment).

use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody, json_body};
use super::{ListParams, county_runtime, date_param, idempotency, now_in};
use crate::auth::{Action, Principal, Role, Scope};
use crate::ledger::EntryKind;
use crate::money::{Fen, yuan_to_fen};
use crate::onboarding::{self, Application};
use crate::payment::{self, Applied, PaymentNotice, Reconnection};
use crate::query::accounts::{
    self as q, AccountSummary, Balance, Customer, LedgerEntry, Meter, Payment, UsageBy, UsageRow,
};
use crate::query::{Money, Page, PageRequest};
use crate::serve::ServeState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use feegate_meter::dlt645_client::Dlt645Meter;
use feegate_meter::fleet::MeterLink;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type St = State<Arc<ServeState>>;

/// The most one payment through the API may bring in: 50,000.00 yuan (a counter
/// payment above it goes through the bank).
pub const MAX_PAYMENT_FEN: Fen = 5_000_000;

/// List customers.
#[utoipa::path(get, path = "/customers", tag = "customers", params(ListParams),
    responses((status = 200, body = Page<Customer>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_customers(
    State(s): St,
    p: Principal,
    ApiQuery(l): ApiQuery<ListParams>,
) -> Result<Json<Page<Customer>>, ApiError> {
    let v = p.visible(Action::ReadAccounts)?;
    Ok(Json(
        q::customers(&s.db, &v, &l.filter(), &l.page()?).await?,
    ))
}

/// One customer.
#[utoipa::path(get, path = "/customers/{customer_id}", tag = "customers",
    params(("customer_id" = String, Path, description = "Customer id")),
    responses((status = 200, body = Customer), (status = 404, body = ErrorBody)))]
pub async fn get_customer(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Customer>, ApiError> {
    let v = p.visible(Action::ReadAccounts)?;
    q::customer(&s.db, &v, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(&format!("customer {id}")))
}

/// List meters.
#[utoipa::path(get, path = "/meters", tag = "meters", params(ListParams),
    responses((status = 200, body = Page<Meter>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_meters(
    State(s): St,
    p: Principal,
    ApiQuery(l): ApiQuery<ListParams>,
) -> Result<Json<Page<Meter>>, ApiError> {
    let v = p.visible(Action::ReadAccounts)?;
    Ok(Json(q::meters(&s.db, &v, &l.filter(), &l.page()?).await?))
}

/// One meter with its latest daily frozen reading.
#[utoipa::path(get, path = "/meters/{meter_id}", tag = "meters",
    params(("meter_id" = String, Path, description = "Meter id")),
    responses((status = 200, body = Meter), (status = 404, body = ErrorBody)))]
pub async fn get_meter(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Meter>, ApiError> {
    let v = p.visible(Action::ReadAccounts)?;
    q::meter(&s.db, &v, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(&format!("meter {id}")))
}

/// List accounts with their balances.
#[utoipa::path(get, path = "/accounts", tag = "accounts", params(ListParams),
    responses((status = 200, body = Page<AccountSummary>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_accounts(
    State(s): St,
    p: Principal,
    ApiQuery(l): ApiQuery<ListParams>,
) -> Result<Json<Page<AccountSummary>>, ApiError> {
    let v = p.visible(Action::ReadAccounts)?;
    Ok(Json(q::accounts(&s.db, &v, &l.filter(), &l.page()?).await?))
}

/// One account: real-time balance, relay state, arrears, agreement terms.
#[utoipa::path(get, path = "/accounts/{account_id}", tag = "accounts",
    params(("account_id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountSummary), (status = 404, body = ErrorBody)))]
pub async fn get_account(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AccountSummary>, ApiError> {
    let v = p.visible(Action::ReadAccounts)?;
    q::account(&s.db, &v, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(&format!("account {id}")))
}

/// The real-time balance of one account (one indexed read: the hot path).
#[utoipa::path(get, path = "/accounts/{account_id}/balance", tag = "accounts",
    params(("account_id" = String, Path, description = "Account id")),
    responses((status = 200, body = Balance), (status = 404, body = ErrorBody)))]
pub async fn get_balance(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Balance>, ApiError> {
    let v = p.visible(Action::ReadAccounts)?;
    q::balance(&s.db, &v, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(&format!("account {id}")))
}

/// Checks the account is visible for `action`; 404 when it is not (or does not exist).
async fn visible_account(
    s: &ServeState,
    p: &Principal,
    action: Action,
    id: &str,
) -> Result<Balance, ApiError> {
    let v = p.visible(action)?;
    q::balance(&s.db, &v, id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("account {id}")))
}

/// Pagination of one account's ledger.
#[derive(Clone, Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Rows per page, 1..=500 (default 50).
    pub limit: Option<u32>,
    /// The `next_after` of the previous page (an entry id).
    pub after: Option<String>,
}

/// The account's ledger, oldest first.
#[utoipa::path(get, path = "/accounts/{account_id}/ledger", tag = "accounts",
    params(("account_id" = String, Path, description = "Account id"), PageParams),
    responses((status = 200, body = Page<LedgerEntry>), (status = 404, body = ErrorBody)))]
pub async fn get_ledger(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(pp): ApiQuery<PageParams>,
) -> Result<Json<Page<LedgerEntry>>, ApiError> {
    let page = PageRequest::new(pp.limit, pp.after)?;
    visible_account(&s, &p, Action::ReadAccounts, &id).await?;
    Ok(Json(q::ledger(&s.db, &id, &page).await?))
}

/// Usage grouping and range.
#[derive(Clone, Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// day | month | band (default day)
    #[param(inline)]
    pub by: Option<UsageBy>,
    /// First business date, YYYY-MM-DD (inclusive).
    pub from: Option<String>,
    /// Last business date, YYYY-MM-DD (inclusive).
    pub to: Option<String>,
}

/// Consumption and charges by day, month or time-of-use band.
#[utoipa::path(get, path = "/accounts/{account_id}/usage", tag = "accounts",
    params(("account_id" = String, Path, description = "Account id"), UsageParams),
    responses((status = 200, body = Vec<UsageRow>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_usage(
    State(s): St,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(u): ApiQuery<UsageParams>,
) -> Result<Json<Vec<UsageRow>>, ApiError> {
    let (from, to) = (date_param("from", u.from)?, date_param("to", u.to)?);
    visible_account(&s, &p, Action::ReadAccounts, &id).await?;
    Ok(Json(
        q::usage(
            &s.db,
            &id,
            u.by.unwrap_or(UsageBy::Day),
            from.as_deref(),
            to.as_deref(),
        )
        .await?,
    ))
}

/// Payment list filters.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentParams {
    /// Rows per page, 1..=500 (default 50).
    pub limit: Option<u32>,
    /// The `next_after` of the previous page (a payment id).
    pub after: Option<String>,
    pub county: Option<String>,
    pub station: Option<String>,
    /// Only this account's payments.
    pub account: Option<String>,
}

/// List payments.
#[utoipa::path(get, path = "/payments", tag = "payments", params(PaymentParams),
    responses((status = 200, body = Page<Payment>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_payments(
    State(s): St,
    p: Principal,
    ApiQuery(pp): ApiQuery<PaymentParams>,
) -> Result<Json<Page<Payment>>, ApiError> {
    let v = p.visible(Action::ReadAccounts)?;
    let l = ListParams {
        limit: pp.limit,
        after: pp.after,
        county: pp.county,
        station: pp.station,
    };
    Ok(Json(
        q::payments(
            &s.db,
            &v,
            &l.filter(),
            pp.account.as_deref().filter(|a| !a.is_empty()),
            &l.page()?,
        )
        .await?,
    ))
}

/// A payment to record: at the counter by station staff (channel `business-hall`), or
/// by the customer through the app (channel `app`).
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    pub account_id: String,
    /// Yuan, a decimal string with at most 2 places, e.g. "100.00"; at most 50000.00.
    #[schema(example = "100.00")]
    pub amount: String,
}

/// What recording a payment did.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentRecorded {
    pub account_id: String,
    /// business-hall (counter) | app (the customer)
    pub channel: String,
    /// `api-<user id>-<Idempotency-Key>`: the payment is applied once per key.
    pub channel_txn_id: String,
    pub amount: Money,
    /// applied | already-applied
    pub result: String,
    pub balance_after: Money,
    /// not-needed | below-line | commanded:<command> | call-first | policy-failed |
    /// left-to-the-daily-job (this host does not serve the account's county)
    pub reconnection: String,
}

/// Parses a yuan amount into positive fen no larger than `max`.
pub fn parse_amount(text: &str, max: Fen) -> Result<Fen, ApiError> {
    let bad = |why: String| ApiError::bad_request(format!("amount {text:?}: {why}"));
    // Digits, optionally a point and digits: no exponent, sign, spaces or separators.
    let d = crate::channels::plain_decimal(text)
        .filter(|d| !d.is_sign_negative())
        .ok_or_else(|| bad("not a plain decimal number of yuan; send e.g. \"100.00\"".into()))?;
    let fen = yuan_to_fen(d).map_err(|e| bad(e.to_string()))?;
    if fen <= 0 {
        return Err(bad("must be more than 0".into()));
    }
    if fen > max {
        return Err(bad(format!(
            "more than {} yuan at once; split it or pay through the bank",
            crate::money::format_yuan(max)
        )));
    }
    Ok(fen)
}

fn reconnection_name(r: &Reconnection) -> String {
    match r {
        Reconnection::NotNeeded => "not-needed".into(),
        Reconnection::BelowLine => "below-line".into(),
        Reconnection::Commanded(c) => format!("commanded:{}", crate::relay::command_name(*c)),
        Reconnection::CallFirst => "call-first".into(),
        Reconnection::PolicyFailed => "policy-failed".into(),
    }
}

/// Record a payment into an account: station staff at the counter for their station's
/// accounts, the customer into their own account through the app channel. Applied
/// exactly once per Idempotency-Key; a payment that lifts a disconnected account over
/// its reconnect line starts reconnection at once.
#[utoipa::path(post, path = "/payments", tag = "payments", request_body = NewPayment,
    params(("Idempotency-Key" = String, Header, description = "Required; reuse it when you retry")),
    responses((status = 201, body = PaymentRecorded), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn post_payment(
    State(s): St,
    p: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    p.visible(Action::RecordPayments)?;
    let (db, principal, raw) = (s.db.clone(), p.clone(), body.clone());
    Ok(idempotency::once(
        &db,
        &principal,
        &headers,
        "POST",
        "/api/v1/payments",
        &raw,
        |key| async move {
            let req: NewPayment = json_body(&body)?;
            let amount_fen = parse_amount(&req.amount, MAX_PAYMENT_FEN)?;
            let v = p.visible(Action::RecordPayments)?;
            let account = q::account(&s.db, &v, &req.account_id)
                .await?
                .ok_or_else(|| ApiError::not_found(&format!("account {}", req.account_id)))?;
            p.authorize(
                Action::RecordPayments,
                Scope::account(&account.county, &account.station_id, &account.account_id),
            )?;
            let channel = if p.role == Role::Customer {
                "app"
            } else {
                "business-hall"
            };
            let txn = format!("api-{}-{key}", p.user_id);
            let notice = PaymentNotice {
                channel,
                channel_txn_id: &txn,
                account_id: &account.account_id,
                amount_fen,
            };
            let (applied, reconnection) = match county_runtime(&s, &account.county) {
                Some(c) => {
                    let (a, r) = c
                        .host
                        .pay(&notice)
                        .await
                        .map_err(|e| payment_error("recording the payment", e))?;
                    (a, reconnection_name(&r))
                }
                None => {
                    let now = now_in(&s, Some(&account.county));
                    let a = payment::apply(&s.db, &notice, EntryKind::Payment, now)
                        .await
                        .map_err(|e| ApiError::internal("recording the payment", e))?;
                    (a, "left-to-the-daily-job".to_string())
                }
            };
            let (result, balance_after) = match applied {
                Applied::Posted { balance_after_fen } => ("applied", balance_after_fen),
                _ => (
                    "already-applied",
                    q::balance(&s.db, &v, &account.account_id)
                        .await?
                        .map_or(account.balance.fen, |b| b.balance.fen),
                ),
            };
            tracing::info!(user = %p.username, account = %account.account_id, amount_fen, channel, "api: payment recorded");
            Ok((
                StatusCode::CREATED,
                serde_json::to_value(PaymentRecorded {
                    account_id: account.account_id,
                    channel: channel.into(),
                    channel_txn_id: txn,
                    amount: Money::from(amount_fen),
                    result: result.into(),
                    balance_after: Money::from(balance_after),
                    reconnection,
                })
                .expect("serialises"),
            ))
        },
    )
    .await)
}

fn payment_error(what: &str, e: crate::job::JobError) -> ApiError {
    use crate::job::JobError;
    use crate::payment::PaymentError;
    match e {
        JobError::Payment(
            pe @ (PaymentError::NonPositive(_)
            | PaymentError::UnknownAccount(_)
            | PaymentError::AccountMismatch { .. }
            | PaymentError::AmountMismatch { .. }),
        ) => ApiError::conflict(pe.to_string()),
        other => ApiError::internal(what, other),
    }
}

/// How the meter is reached, for onboarding through the API: a Modbus TCP meter behind
/// a gateway, or a DL/T 645 meter behind a transparent serial gateway. (Meters on a
/// local serial port or behind a 1376.1 terminal are onboarded with the CLI.)
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "protocol", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NewMeterLink {
    /// `{"protocol": "modbus-tcp", "gateway": "10.1.2.3:502", "unit_id": 7}`
    ModbusTcp { gateway: String, unit_id: u8 },
    /// `{"protocol": "dlt645", "gateway": "10.1.2.3:8899", "meter_address": "000012345678"}`
    Dlt645 {
        gateway: String,
        meter_address: String,
        #[serde(default)]
        requires_security: bool,
    },
}

impl NewMeterLink {
    fn link(&self) -> Result<MeterLink, ApiError> {
        let gw = |g: &str| {
            g.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "meter gateway {g:?} is not host-ip:port, e.g. \"10.1.2.3:502\""
                ))
            })
        };
        Ok(match self {
            NewMeterLink::ModbusTcp { gateway, unit_id } => {
                MeterLink::Modbus(feegate_meter::registers::MeterAddress {
                    gateway: gw(gateway)?,
                    unit: *unit_id,
                })
            }
            NewMeterLink::Dlt645 {
                gateway,
                meter_address,
                requires_security,
            } => MeterLink::Dlt645(Dlt645Meter {
                link: feegate_meter::dlt645_client::Link::Gateway(gw(gateway)?),
                address: meter_address.parse().map_err(|e| {
                    ApiError::bad_request(format!(
                        "meter_address {meter_address:?}: {e}; send the 12-digit DL/T 645 address"
                    ))
                })?,
                requires_security: *requires_security,
            }),
        })
    }
}

/// A fee-control application (费控申请): customer, meter, agreement terms and the initial
/// prepayment.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgreement {
    pub county: String,
    pub station_id: String,
    pub customer_id: String,
    pub customer_name: String,
    /// The mobile number in the customer master data (档案); a mismatch with `mobile`
    /// opens a data-maintenance work order.
    pub master_mobile: Option<String>,
    /// low-voltage-residential | low-voltage-commercial | high-voltage
    pub customer_class: String,
    #[serde(default)]
    pub vulnerable: bool,
    pub meter_id: String,
    pub meter: NewMeterLink,
    /// CT and PT multipliers (default 1).
    pub ct_ratio: Option<i64>,
    pub pt_ratio: Option<i64>,
    pub account_id: String,
    /// 预警值, yuan ("50.00").
    pub alarm_threshold: String,
    /// 代扣值, yuan; none: no auto-debit.
    pub auto_debit: Option<String>,
    pub mobile: String,
    pub second_mobile: Option<String>,
    #[serde(default)]
    pub keep_power: bool,
    #[serde(default)]
    pub time_of_use: bool,
    /// The initial prepayment received at the counter, yuan; the account is active once
    /// it is applied. None: the account waits `pending-prepayment`.
    pub initial_prepayment: Option<String>,
}

/// What onboarding did.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgreementCreated {
    pub account_id: String,
    /// pending-prepayment | active
    pub status: String,
    pub balance: Money,
    /// The agreement's mobile differs from the master data: a data-maintenance work
    /// order was opened (automatic disconnection is held until it is resolved).
    pub mobile_mismatch: bool,
}

/// Onboard a customer: customer, meter, agreement and account, and the initial
/// prepayment, in one transaction (nothing half-applied).
#[utoipa::path(post, path = "/agreements", tag = "agreements", request_body = NewAgreement,
    params(("Idempotency-Key" = String, Header, description = "Required; reuse it when you retry")),
    responses((status = 201, body = AgreementCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn post_agreement(
    State(s): St,
    p: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    p.visible(Action::Onboard)?;
    let (db, principal, raw) = (s.db.clone(), p.clone(), body.clone());
    Ok(idempotency::once(
        &db,
        &principal,
        &headers,
        "POST",
        "/api/v1/agreements",
        &raw,
        |key| async move {
            let r: NewAgreement = json_body(&body)?;
            p.authorize(Action::Onboard, Scope::station(&r.county, &r.station_id))?;
            let station_county: Option<String> =
                sqlx::query_scalar("SELECT county FROM stations WHERE station_id = $1")
                    .bind(&r.station_id)
                    .fetch_optional(&s.db.pool)
                    .await?;
            if station_county.as_deref() != Some(r.county.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "station {:?} is not a station of county {:?}; check both",
                    r.station_id, r.county
                )));
            }
            if !matches!(
                r.customer_class.as_str(),
                "low-voltage-residential" | "low-voltage-commercial" | "high-voltage"
            ) {
                return Err(ApiError::bad_request(format!(
                    "customer_class {:?}: use low-voltage-residential, low-voltage-commercial or high-voltage",
                    r.customer_class
                )));
            }
            for (what, n) in [("mobile", Some(&r.mobile)), ("second_mobile", r.second_mobile.as_ref()), ("master_mobile", r.master_mobile.as_ref())] {
                if let Some(n) = n {
                    onboarding::check_mobile_format(what, n)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                }
            }
            let alarm = crate::channels::plain_decimal(&r.alarm_threshold)
                .and_then(|d| yuan_to_fen(d).ok())
                .filter(|f| *f >= 0)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "alarm_threshold {:?}: send yuan with at most 2 places, 0 or more, e.g. \"50.00\"",
                        r.alarm_threshold
                    ))
                })?;
            let auto_debit = r
                .auto_debit
                .as_deref()
                .map(|a| parse_amount(a, MAX_PAYMENT_FEN))
                .transpose()?;
            let prepayment = r
                .initial_prepayment
                .as_deref()
                .map(|a| parse_amount(a, MAX_PAYMENT_FEN))
                .transpose()?;
            let (ct, pt) = (r.ct_ratio.unwrap_or(1), r.pt_ratio.unwrap_or(1));
            if ct < 1 || pt < 1 {
                return Err(ApiError::bad_request("ct_ratio and pt_ratio are 1 or more"));
            }
            let app = Application {
                county: r.county.clone(),
                station_id: r.station_id.clone(),
                customer_id: r.customer_id.clone(),
                customer_name: r.customer_name.clone(),
                master_mobile: r.master_mobile.clone(),
                customer_class: r.customer_class.clone(),
                vulnerable: r.vulnerable,
                meter_id: r.meter_id.clone(),
                link: r.meter.link()?,
                ct_ratio: ct,
                pt_ratio: pt,
                account_id: r.account_id.clone(),
                alarm_threshold_fen: alarm,
                auto_debit_fen: auto_debit,
                mobile: r.mobile.clone(),
                second_mobile: r.second_mobile.clone(),
                keep_power: r.keep_power,
                time_of_use: r.time_of_use,
            };
            onboarding::check_application(&app).map_err(ApiError::bad_request)?;
            if let Some(other) = {
                let mut conn = s.db.pool.acquire().await?;
                onboarding::link_in_use(&mut conn, &app.link).await?
            } {
                return Err(ApiError::conflict(format!(
                    "that meter link (protocol, gateway or port, unit or address) is already account {other}'s meter; check the meter's address"
                )));
            }
            let now = now_in(&s, Some(&r.county));
            let taken: Option<String> = sqlx::query_scalar(
                "SELECT 'customer ' || customer_id FROM customers WHERE customer_id = $1
                 UNION ALL SELECT 'meter ' || meter_id FROM meters WHERE meter_id = $2
                 UNION ALL SELECT 'account ' || account_id FROM accounts WHERE account_id = $3",
            )
            .bind(&r.customer_id)
            .bind(&r.meter_id)
            .bind(&r.account_id)
            .fetch_optional(&s.db.pool)
            .await?;
            if let Some(t) = taken {
                return Err(ApiError::conflict(format!(
                    "{t} exists already; choose new ids (an agreement change is not an onboarding)"
                )));
            }
            let mut tx = s.db.begin_write().await?;
            let onboarded = onboarding::onboard_in(&mut tx, &app, now)
                .await
                .map_err(|e| match e {
                    // Two onboardings with the same ids at once: the loser is a conflict.
                    crate::db::DbError::Sql(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                        ApiError::conflict(format!(
                            "{}: another onboarding took these ids or this meter just now; choose new ids",
                            d.message()
                        ))
                    }
                    other => ApiError::from(other),
                })?;
            let txn = format!("api-{}-{key}", p.user_id);
            if let Some(fen) = prepayment {
                payment::apply_in(
                    &mut tx,
                    &PaymentNotice {
                        channel: "business-hall",
                        channel_txn_id: &txn,
                        account_id: &r.account_id,
                        amount_fen: fen,
                    },
                    EntryKind::Prepayment,
                    now,
                )
                .await
                .map_err(|e| ApiError::internal("applying the initial prepayment", e))?;
            }
            tx.commit().await?;
            tracing::info!(user = %p.username, account = %r.account_id, "api: customer onboarded");
            Ok((
                StatusCode::CREATED,
                serde_json::to_value(AgreementCreated {
                    account_id: r.account_id.clone(),
                    status: if prepayment.is_some() {
                        "active".into()
                    } else {
                        "pending-prepayment".into()
                    },
                    balance: Money::from(prepayment.unwrap_or(0)),
                    mobile_mismatch: onboarded.mobile_mismatch,
                })
                .expect("serialises"),
            ))
        },
    )
    .await)
}

#[cfg(test)]
mod tests {
    use super::parse_amount;

    #[test]
    fn amounts_are_plain_decimal_yuan_with_at_most_two_places() {
        for (text, fen) in [("10", 1000), ("10.5", 1050), ("10.05", 1005), ("0.01", 1)] {
            assert_eq!(parse_amount(text, 5_000_000).ok(), Some(fen), "{text}");
        }
        for text in [
            "1e2", "5e4", "+10", ".5", "10.", " 10", "10 ", "1_0", "-1", "0", "0.00", "10.001", "",
            "abc", "50000.01",
        ] {
            assert!(parse_amount(text, 5_000_000).is_err(), "{text:?} accepted");
        }
    }
}
