//! Payment channel notification endpoints (issue 5): bank transfer, online banking,
//! self-service kiosk, Alipay-style and the utility's app each `POST` to
//! `/channels/{channel}/notify`.
//!
//! A notification goes through, in order:
//! 1. **authentication** over the raw body ([`auth`]: HMAC-SHA256 or RSA-SHA256, a
//!    timestamp within the window) — nothing is parsed or written before it passes;
//! 2. **validation**: amount a decimal string, positive, at most 2 decimals, at most the
//!    channel's maximum; currency `CNY`; identifiers of sane shape;
//! 3. the **inbox** ([`inbox`]): the notification is committed to `payment_inbox`
//!    (unique per channel and channel transaction id; same id with other content is a
//!    conflict), then applied to the ledger in a second transaction. The channel's
//!    answer is sent only after both. A crash between them leaves a `received` row that
//!    [`inbox::recover`] applies on restart; a retry of the channel is answered
//!    `duplicate`, never applied twice.
//! 4. **reconnection at once** ([`reconnect`]) when the payment lifts a disconnected
//!    account over its reconnect line.
//!
//! Every answer is JSON `{"code": ..., "txn_id": ..., "message": ...}` with a stable
//! [`ResultCode`]; channels key their retry logic on `code`.
//!
//! Body (UTF-8 JSON; amounts are decimal *strings* in yuan, never JSON numbers):
//! ```json
//! {"txn_id": "BT2026112900017", "account_id": "3500000001", "amount": "100.00",
//!  "currency": "CNY", "type": "payment"}
//! ```
//! `type` is `payment` (default), `reversal` / `refund` (with `original_txn_id`, the
//! payment taken back; a new negative ledger entry, the payment is never edited), or
//! `debit-failed` (bank channel only: an auto-debit request failed, with
//! `debit_request_id` and `reason`). A successful auto-debit is a `payment` carrying
//! `debit_request_id`.

pub mod auth;
pub mod config;
pub mod inbox;
pub mod reconnect;
pub mod service;

use crate::money::Fen;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use config::ChannelsConfig;
use rust_decimal::Decimal;
use serde::Serialize;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

/// The stable result codes of the notify endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultCode {
    /// Applied now (HTTP 200).
    Applied,
    /// This transaction was applied before; nothing moved (HTTP 200).
    Duplicate,
    /// A `debit-failed` result was recorded (HTTP 200).
    Recorded,
    /// Unknown channel in the path (HTTP 404).
    UnknownChannel,
    /// Timestamp or signature header missing (HTTP 401).
    MissingAuth,
    /// The timestamp is outside the window (HTTP 401): re-sign and resend.
    StaleTimestamp,
    /// The signature does not verify (HTTP 401).
    BadSignature,
    /// The body is not a notification (HTTP 400).
    BadRequest,
    /// The body is over [`MAX_BODY_BYTES`] (HTTP 413); nothing was read or stored.
    BodyTooLarge,
    /// Amount not a positive decimal string with at most 2 decimals (HTTP 422).
    BadAmount,
    /// Amount over the channel's maximum (HTTP 422).
    AmountOverLimit,
    /// Currency other than CNY (HTTP 422).
    WrongCurrency,
    /// No such account (HTTP 422).
    UnknownAccount,
    /// Reversal of a payment we have not applied (yet): retry later (HTTP 409).
    UnknownOriginal,
    /// Reversal of a payment applied to another account than the one it names (HTTP 422;
    /// retrying cannot help).
    OriginalAccountMismatch,
    /// Reversal larger than what the payment brought in (HTTP 422).
    ReversalTooLarge,
    /// Same transaction id, different content: refused, logged for reconciliation (HTTP 409).
    Conflict,
    /// `debit-failed` for a request we never made (HTTP 422).
    UnknownDebit,
    /// We could not record it: nothing is acknowledged, retry (HTTP 503).
    Unavailable,
}

impl ResultCode {
    /// The stored / wire name, e.g. `unknown-original`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Recorded => "recorded",
            Self::UnknownChannel => "unknown-channel",
            Self::MissingAuth => "missing-auth",
            Self::StaleTimestamp => "stale-timestamp",
            Self::BadSignature => "bad-signature",
            Self::BadRequest => "bad-request",
            Self::BodyTooLarge => "body-too-large",
            Self::BadAmount => "bad-amount",
            Self::AmountOverLimit => "amount-over-limit",
            Self::WrongCurrency => "wrong-currency",
            Self::UnknownAccount => "unknown-account",
            Self::UnknownOriginal => "unknown-original",
            Self::OriginalAccountMismatch => "original-account-mismatch",
            Self::ReversalTooLarge => "reversal-too-large",
            Self::Conflict => "conflict",
            Self::UnknownDebit => "unknown-debit",
            Self::Unavailable => "unavailable",
        }
    }

    /// The HTTP status sent with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Applied | Self::Duplicate | Self::Recorded => StatusCode::OK,
            Self::UnknownChannel => StatusCode::NOT_FOUND,
            Self::MissingAuth | Self::StaleTimestamp | Self::BadSignature => {
                StatusCode::UNAUTHORIZED
            }
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownOriginal | Self::Conflict => StatusCode::CONFLICT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// The answer to a channel.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Answer {
    pub code: ResultCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn_id: Option<String>,
    pub message: String,
    /// Balance after the entry, yuan, when one was posted now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_yuan: Option<String>,
}

impl Answer {
    pub fn new(code: ResultCode, txn_id: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            code,
            txn_id: txn_id.map(str::to_string),
            message: message.into(),
            balance_yuan: None,
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.code.status(), axum::Json(self)).into_response()
    }
}

/// What a validated notification asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// Money in; `debit_request_id` when it is the result of our auto-debit request.
    Payment { debit_request_id: Option<String> },
    /// Money taken back from payment `original_txn_id` (reversal or refund).
    Reversal { original_txn_id: String },
    /// Our auto-debit request failed at the bank.
    DebitFailed {
        debit_request_id: String,
        reason: String,
    },
}

/// An authenticated, validated notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub channel: String,
    pub txn_id: String,
    pub account_id: String,
    /// Positive fen (0 for `debit-failed`).
    pub amount_fen: Fen,
    pub instruction: Instruction,
}

fn ident_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A plain decimal: optional `-`, digits, optionally `.` and digits (no exponent, no
/// `+`, no spaces, at most 18 digits before the point).
pub fn plain_decimal(s: &str) -> Option<Decimal> {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let ok = !int.is_empty()
        && int.len() <= 18
        && digits(int)
        && digits(frac)
        && (frac.is_empty() != unsigned.contains('.'));
    ok.then(|| Decimal::from_str(s).ok()).flatten()
}

/// A yuan amount as a channel writes it: a [`plain_decimal`] (no exponent: `1e2` is not
/// 100.00) with at most two decimal places, in fen. Sign is not checked here. Payment
/// notifications and statement lines (`feegate reconcile`) both parse amounts with it, so
/// the two never disagree on what a channel meant.
pub fn parse_yuan(s: &str) -> Option<Fen> {
    plain_decimal(s)
        .filter(|d| d.scale() <= 2)
        .and_then(|d| crate::money::yuan_to_fen(d).ok())
}

/// The fields a notification may carry (parsed only to refuse others and repeats).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct KnownFields {
    txn_id: Option<serde_json::Value>,
    account_id: Option<serde_json::Value>,
    amount: Option<serde_json::Value>,
    currency: Option<serde_json::Value>,
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    original_txn_id: Option<serde_json::Value>,
    debit_request_id: Option<serde_json::Value>,
    reason: Option<serde_json::Value>,
}

/// Parses and validates a notification body for `channel` (max amount `max_fen`).
/// Errors name the field and what is expected.
pub fn validate(channel: &str, body: &[u8], max_fen: Fen) -> Result<Notification, Answer> {
    // Only the documented fields, each once: an unknown or misspelt field (`txn_type`,
    // `Type`) or a repeated one (two `amount`s, where a channel's parser and ours could
    // read different values) is refused, never guessed at.
    serde_json::from_slice::<KnownFields>(body)
        .map_err(|e| Answer::new(ResultCode::BadRequest, None, format!("body refused: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Answer::new(
            ResultCode::BadRequest,
            None,
            format!("body is not JSON: {e}"),
        )
    })?;
    let field = |name: &str| v.get(name).and_then(|x| x.as_str());
    let txn_id = field("txn_id").unwrap_or_default().to_string();
    if !ident_ok(&txn_id, 64) {
        return Err(Answer::new(
            ResultCode::BadRequest,
            None,
            "txn_id must be 1–64 characters of A–Z a–z 0–9 - _ .",
        ));
    }
    let bad = |code, msg: String| Err(Answer::new(code, Some(&txn_id), msg));
    let account_id = field("account_id").unwrap_or_default().to_string();
    if !ident_ok(&account_id, 32) {
        return bad(
            ResultCode::BadRequest,
            "account_id must be 1–32 characters of A–Z a–z 0–9 - _ .".into(),
        );
    }
    let Some(kind) = field("type") else {
        return bad(
            ResultCode::BadRequest,
            "type is missing: payment, reversal, refund or debit-failed".into(),
        );
    };
    // A field that belongs to another type means the body is not what it says.
    let belongs = |name: &str, types: &[&str]| v.get(name).is_none() || types.contains(&kind);
    for (name, types) in [
        ("original_txn_id", &["reversal", "refund"][..]),
        ("debit_request_id", &["payment", "debit-failed"][..]),
        ("reason", &["debit-failed"][..]),
    ] {
        if !belongs(name, types) {
            return bad(
                ResultCode::BadRequest,
                format!("{name} does not belong in a {kind} notification"),
            );
        }
    }
    if kind == "debit-failed" {
        let Some(request) = field("debit_request_id").filter(|r| ident_ok(r, 64)) else {
            return bad(
                ResultCode::BadRequest,
                "debit-failed needs debit_request_id".into(),
            );
        };
        return Ok(Notification {
            channel: channel.to_string(),
            txn_id: txn_id.clone(),
            account_id,
            amount_fen: 0,
            instruction: Instruction::DebitFailed {
                debit_request_id: request.to_string(),
                reason: field("reason")
                    .unwrap_or("not given")
                    .chars()
                    .take(200)
                    .collect(),
            },
        });
    }
    let amount_fen = match v.get("amount") {
        Some(serde_json::Value::String(s)) => match parse_yuan(s) {
            Some(f) if f > 0 => f,
            Some(f) => {
                return bad(
                    ResultCode::BadAmount,
                    format!(
                        "amount must be positive, got {} yuan",
                        crate::money::format_yuan(f)
                    ),
                );
            }
            None => {
                return bad(
                    ResultCode::BadAmount,
                    format!("amount {s:?} is not a yuan amount with at most 2 decimals"),
                );
            }
        },
        Some(other) => {
            return bad(
                ResultCode::BadAmount,
                format!("amount must be a decimal string such as \"100.00\", got {other}"),
            );
        }
        None => return bad(ResultCode::BadAmount, "amount is missing".into()),
    };
    if amount_fen > max_fen {
        return bad(
            ResultCode::AmountOverLimit,
            format!(
                "amount {} yuan is over this channel's maximum of {} yuan",
                crate::money::format_yuan(amount_fen),
                crate::money::format_yuan(max_fen)
            ),
        );
    }
    match field("currency") {
        Some("CNY") => {}
        Some(other) => {
            return bad(
                ResultCode::WrongCurrency,
                format!("currency must be \"CNY\", got {other:?}"),
            );
        }
        None => {
            return bad(
                ResultCode::WrongCurrency,
                "currency is missing; it must be \"CNY\"".into(),
            );
        }
    }
    let instruction = match kind {
        "payment" => Instruction::Payment {
            debit_request_id: match field("debit_request_id") {
                None => None,
                Some(r) if ident_ok(r, 64) => Some(r.to_string()),
                Some(_) => {
                    return bad(
                        ResultCode::BadRequest,
                        "debit_request_id has a bad shape".into(),
                    );
                }
            },
        },
        "reversal" | "refund" => match field("original_txn_id").filter(|o| ident_ok(o, 64)) {
            Some(o) if o != txn_id => Instruction::Reversal {
                original_txn_id: o.to_string(),
            },
            _ => {
                return bad(
                    ResultCode::BadRequest,
                    "a reversal needs original_txn_id, the payment it takes back".into(),
                );
            }
        },
        other => {
            return bad(
                ResultCode::BadRequest,
                format!("type must be payment, reversal, refund or debit-failed, got {other:?}"),
            );
        }
    };
    Ok(Notification {
        channel: channel.to_string(),
        txn_id,
        account_id,
        amount_fen,
        instruction,
    })
}

/// Shared state of the channel router.
#[derive(Clone)]
pub struct ChannelsState {
    pub config: Arc<ChannelsConfig>,
    pub inbox: inbox::Inbox,
}

/// The router: `POST /channels/{channel}/notify`. Mount it into `feegate serve` with
/// `Router::merge`; it needs no other state.
pub fn router(state: ChannelsState) -> Router {
    Router::new()
        .route("/channels/{channel}/notify", post(notify))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Largest notification body accepted, bytes. A notification is a few hundred bytes;
/// anything near this is not one.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn notify(
    State(state): State<ChannelsState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Answer {
    let accepted = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(channel, error = %e, "notification body refused");
            return Answer::new(
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ResultCode::BodyTooLarge
                } else {
                    ResultCode::BadRequest
                },
                None,
                format!(
                    "the body could not be read ({e}); a notification is at most {MAX_BODY_BYTES} bytes of JSON"
                ),
            );
        }
    };
    let Some(cfg) = state.config.channels.get(&channel) else {
        return Answer::new(
            ResultCode::UnknownChannel,
            None,
            format!("no channel {channel:?} is configured"),
        );
    };
    let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if let Err(f) = auth::verify(
        &cfg.key,
        header(auth::TIMESTAMP_HEADER),
        header(auth::SIGNATURE_HEADER),
        &body,
        unix_now(),
        state.config.signature_window_seconds,
    ) {
        tracing::warn!(channel, failure = ?f, "notification refused before reading");
        return match f {
            auth::AuthFailure::MissingHeader(h) => Answer::new(
                ResultCode::MissingAuth,
                None,
                format!("header {h} is missing or unreadable"),
            ),
            auth::AuthFailure::Stale { skew } => Answer::new(
                ResultCode::StaleTimestamp,
                None,
                format!(
                    "timestamp is {skew} s from our clock, outside ±{} s; sign again with the current time",
                    state.config.signature_window_seconds
                ),
            ),
            auth::AuthFailure::BadSignature => Answer::new(
                ResultCode::BadSignature,
                None,
                "signature does not verify with this channel's key",
            ),
        };
    }
    let n = match validate(&channel, &body, cfg.max_amount_fen) {
        Ok(n) => n,
        Err(answer) => {
            tracing::warn!(channel, code = answer.code.as_str(), message = %answer.message, "notification refused");
            return answer;
        }
    };
    state.inbox.submit(n, accepted).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_table() {
        let cases: &[(&str, Result<Fen, ResultCode>)] = &[
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"100.00","currency":"CNY"}"#,
                Ok(10000),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"0.01","currency":"CNY"}"#,
                Ok(1),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"5000","currency":"CNY"}"#,
                Ok(500000),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"5000.01","currency":"CNY"}"#,
                Err(ResultCode::AmountOverLimit),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"-5.00","currency":"CNY"}"#,
                Err(ResultCode::BadAmount),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"0.00","currency":"CNY"}"#,
                Err(ResultCode::BadAmount),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"1.001","currency":"CNY"}"#,
                Err(ResultCode::BadAmount),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":100.5,"currency":"CNY"}"#,
                Err(ResultCode::BadAmount),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"1e3","currency":"CNY"}"#,
                Err(ResultCode::BadAmount),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"+10","currency":"CNY"}"#,
                Err(ResultCode::BadAmount),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"10.","currency":"CNY"}"#,
                Err(ResultCode::BadAmount),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":" 10","currency":"CNY"}"#,
                Err(ResultCode::BadAmount),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"99999999999999999999999999","currency":"CNY"}"#,
                Err(ResultCode::BadAmount),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","currency":"CNY"}"#,
                Err(ResultCode::BadAmount),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"10.00","currency":"USD"}"#,
                Err(ResultCode::WrongCurrency),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"10.00"}"#,
                Err(ResultCode::WrongCurrency),
            ),
            (
                r#"{"type":"payment","txn_id":"","account_id":"A1","amount":"10.00","currency":"CNY"}"#,
                Err(ResultCode::BadRequest),
            ),
            (
                r#"{"type":"payment","txn_id":"T 1","account_id":"A1","amount":"10.00","currency":"CNY"}"#,
                Err(ResultCode::BadRequest),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","amount":"10.00","currency":"CNY"}"#,
                Err(ResultCode::BadRequest),
            ),
            (
                r#"{"txn_id":"T1","account_id":"A1","amount":"10.00","currency":"CNY","type":"gift"}"#,
                Err(ResultCode::BadRequest),
            ),
            (
                r#"{"txn_id":"R1","account_id":"A1","amount":"10.00","currency":"CNY","type":"reversal"}"#,
                Err(ResultCode::BadRequest),
            ),
            (
                r#"{"txn_id":"R1","account_id":"A1","amount":"10.00","currency":"CNY","type":"refund","original_txn_id":"T1"}"#,
                Ok(1000),
            ),
            ("not json", Err(ResultCode::BadRequest)),
            // No type, a misspelt or unknown field, a repeated field, a field of another
            // type: refused, never read as a payment.
            (
                r#"{"txn_id":"T1","account_id":"A1","amount":"10.00","currency":"CNY"}"#,
                Err(ResultCode::BadRequest),
            ),
            (
                r#"{"txn_id":"R1","account_id":"A1","amount":"6.00","currency":"CNY","txn_type":"refund","original_txn_id":"T1"}"#,
                Err(ResultCode::BadRequest),
            ),
            (
                r#"{"txn_id":"R1","account_id":"A1","amount":"6.00","currency":"CNY","Type":"refund","original_txn_id":"T1"}"#,
                Err(ResultCode::BadRequest),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"1.00","amount":"9000.00","currency":"CNY"}"#,
                Err(ResultCode::BadRequest),
            ),
            (
                r#"{"type":"payment","txn_id":"T1","account_id":"A1","amount":"6.00","currency":"CNY","original_txn_id":"T0"}"#,
                Err(ResultCode::BadRequest),
            ),
            (
                r#"{"type":"refund","txn_id":"R1","account_id":"A1","amount":"6.00","currency":"CNY","original_txn_id":"T0","debit_request_id":"D1"}"#,
                Err(ResultCode::BadRequest),
            ),
        ];
        for (body, want) in cases {
            let got = validate("app", body.as_bytes(), 500_000)
                .map(|n| n.amount_fen)
                .map_err(|a| a.code);
            assert_eq!(&got, want, "{body}");
        }
    }
}
