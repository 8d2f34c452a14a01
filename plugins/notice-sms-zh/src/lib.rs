//! `notice-sms-zh`: the Chinese SMS wording of every fee-control notice (短信通知), as a
//! `feegate:policy/notice@1.1.0` component.
//!
//! Every text starts with the county's `signature` (短信签名, e.g. `【仙游供电】`, required by
//! the carriers for SMS sent by a business) and ends with `咨询请拨<hotline>。`. Money is
//! shown as `23.40元` (2 decimals, half away from zero for display only); a negative
//! balance is worded as arrears (`已欠费12.30元`). Days of credit left (`预计可用4.5天`) are
//! shown in the two low-balance notices when known and above 0.
//!
//! Length: at most [`MAX_CHARS`] characters (Unicode scalar values). When a text with the
//! customer's name would be longer, the name is left out (`尊敬的客户，`); if it is still
//! too long the policy refuses (`notice-too-long`) rather than send a cut sentence.
//!
//! The customer name, account id and deadline are copied in with control characters and
//! the signature brackets `【】` removed, so data can neither break the SMS nor imitate a
//! second signature.

use feegate_policy_sdk::decimal::{fixed, from_parts};
use feegate_policy_sdk::params::{self, ParsedOnce};
use feegate_policy_sdk::{Decimal, PolicyError as SdkError};
use serde::Deserialize;

wit_bindgen::generate!({
    path: "../../wit",
    world: "notice-policy",
    // serde: the host links this crate natively for `feegate bench policy` and reads the
    // recorded decision inputs (the host's serde JSON of the same WIT records) into it.
    additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
});

pub use exports::feegate::policy::notice::{NoticeInput, NoticeKind, NoticeOutput};
pub use feegate::policy::types::{Date, Decimal as WitDecimal, PolicyError};

impl From<SdkError> for PolicyError {
    fn from(e: SdkError) -> Self {
        PolicyError {
            code: e.code,
            message: e.message,
        }
    }
}

thread_local! {
    /// The county parameters, parsed once per instance while the string stays the same
    /// ([`feegate_policy_sdk::params::ParsedOnce`]).
    static PARAMS: ParsedOnce<NoticeParams> = const { ParsedOnce::new() };
}

/// Longest SMS body this policy produces, in characters: three concatenated Chinese
/// (UCS-2) parts of 67 characters (3GPP TS 23.040), within the host's default limit.
pub const MAX_CHARS: usize = 140;

/// Characters of one Chinese (UCS-2) SMS; a longer text is sent as parts of 67 each.
const SINGLE_SMS_CHARS: usize = 70;
const PART_SMS_CHARS: usize = 67;

/// Error code when even the name-less text is longer than [`MAX_CHARS`].
pub const ERR_TOO_LONG: &str = "notice-too-long";

/// Validated `[notice.parameters]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeParams {
    /// SMS signature put first, e.g. `【仙游供电】`.
    pub signature: String,
    /// Customer-service number put last, e.g. `95598` (State Grid's hotline).
    pub hotline: String,
}

impl NoticeParams {
    /// Parse and validate the canonical-JSON parameters.
    ///
    /// # Errors
    /// `bad-parameters` for a missing, unknown or mistyped key, or an empty signature or
    /// hotline.
    pub fn from_json(json: &str) -> Result<Self, SdkError> {
        let p: NoticeParams = params::parse(json)?;
        if p.signature.trim().is_empty() {
            return Err(SdkError::bad_parameters("signature is empty"));
        }
        if p.hotline.trim().is_empty() {
            return Err(SdkError::bad_parameters("hotline is empty"));
        }
        Ok(p)
    }
}

/// Stable name of a notice kind (as in the WIT), used in reason codes.
pub fn kind_name(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::LowBalance => "low-balance",
        NoticeKind::SecondAlarm => "second-alarm",
        NoticeKind::Arrears => "arrears",
        NoticeKind::DisconnectionPending => "disconnection-pending",
        NoticeKind::Disconnected => "disconnected",
        NoticeKind::Reconnected => "reconnected",
        NoticeKind::PressButtonToRestore => "press-button-to-restore",
        NoticeKind::PaymentReceived => "payment-received",
    }
}

/// Text copied from data into an SMS: no control characters, no signature brackets,
/// surrounding blanks trimmed.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() && !matches!(c, '【' | '】'))
        .collect::<String>()
        .trim()
        .to_string()
}

/// `已欠费12.30元` for a negative balance, else `电费余额为23.40元`.
fn balance_phrase(balance: Decimal) -> String {
    if balance < Decimal::ZERO {
        format!("已欠费{}元", fixed(-balance, 2))
    } else {
        format!("电费余额为{}元", fixed(balance, 2))
    }
}

fn dec(value: &WitDecimal, what: &str) -> Result<Decimal, SdkError> {
    from_parts(value.mantissa, value.scale, what)
}

/// Word the SMS for one notice.
///
/// # Errors
/// `bad-parameters` ([`NoticeParams::from_json`]); `invalid-input` when a
/// `disconnection-pending` notice has no deadline, a `payment-received` notice has no
/// amount or one not above 0, or days of credit left is negative; `notice-too-long` when
/// even the name-less text exceeds [`MAX_CHARS`].
pub fn word(input: &NoticeInput) -> Result<NoticeOutput, PolicyError> {
    Ok(word_checked(input)?)
}

fn word_checked(input: &NoticeInput) -> Result<NoticeOutput, SdkError> {
    let p = PARAMS.with(|p| p.get(&input.parameters, NoticeParams::from_json))?;
    let balance = dec(&input.balance, "balance")?;
    let days = match &input.days_of_credit_left {
        Some(d) => {
            let d = dec(d, "days-of-credit-left")?;
            if d < Decimal::ZERO {
                return Err(SdkError::invalid_input(format!(
                    "days-of-credit-left {d} is negative"
                )));
            }
            Some(d)
        }
        None => None,
    };
    // Shown only when there is something to forecast.
    let days_phrase = days
        .filter(|d| *d > Decimal::ZERO)
        .map(|d| format!("，预计可用{}天", fixed(d, 1)))
        .unwrap_or_default();
    let account = clean(&input.account_id);
    let bal = balance_phrase(balance);

    let body = match input.kind {
        NoticeKind::LowBalance => {
            format!("您的户号{account}{bal}{days_phrase}，已低于预警值，请及时缴费。")
        }
        NoticeKind::SecondAlarm => {
            format!("您的户号{account}{bal}{days_phrase}，余额已不足，请尽快缴费，以免欠费停电。")
        }
        NoticeKind::Arrears => format!("您的户号{account}{bal}，请立即缴费，以免停电。"),
        NoticeKind::DisconnectionPending => {
            let deadline = input
                .deadline
                .as_deref()
                .map(clean)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| {
                    SdkError::invalid_input("a disconnection-pending notice needs a deadline")
                })?;
            format!("您的户号{account}{bal}，如未及时缴费，将于{deadline}后停电，请尽快缴费。")
        }
        NoticeKind::Disconnected => {
            format!("您的户号{account}因欠费已停电，当前{bal}，缴清欠费后将为您恢复供电。")
        }
        NoticeKind::Reconnected => format!("您的户号{account}已恢复供电，当前{bal}。"),
        NoticeKind::PressButtonToRestore => {
            format!("您的户号{account}已具备复电条件，当前{bal}，请按电表上的合闸按钮恢复供电。")
        }
        NoticeKind::PaymentReceived => {
            let amount = input
                .amount
                .as_ref()
                .ok_or_else(|| SdkError::invalid_input("a payment-received notice needs an amount"))
                .and_then(|a| dec(a, "amount"))?;
            if amount <= Decimal::ZERO {
                return Err(SdkError::invalid_input(format!(
                    "payment amount {amount} is not above 0"
                )));
            }
            format!(
                "您的户号{account}于{}年{}月{}日缴费{}元已到账，当前{bal}。",
                input.today.year,
                input.today.month,
                input.today.day,
                fixed(amount, 2)
            )
        }
    };

    let compose = |name: &str| {
        format!(
            "{}尊敬的客户{name}，{body}咨询请拨{}。",
            p.signature, p.hotline
        )
    };
    let name = clean(&input.customer_name);
    let mut text = compose(&name);
    let mut name_left_out = false;
    if text.chars().count() > MAX_CHARS && !name.is_empty() {
        text = compose("");
        name_left_out = true;
    }
    let chars = text.chars().count();
    if chars > MAX_CHARS {
        return Err(SdkError::new(
            ERR_TOO_LONG,
            format!(
                "the {} notice is {chars} characters, above {MAX_CHARS}",
                kind_name(input.kind)
            ),
        ));
    }
    let parts = if chars <= SINGLE_SMS_CHARS {
        1
    } else {
        chars.div_ceil(PART_SMS_CHARS)
    };
    Ok(NoticeOutput {
        text,
        reason_code: format!("sms-{}", kind_name(input.kind)),
        explanation: format!(
            "Worded the {} SMS for account {account}: {chars} characters, {parts} SMS part{}{}.",
            kind_name(input.kind),
            if parts == 1 { "" } else { "s" },
            if name_left_out {
                "; the customer name was left out to stay within 140 characters"
            } else {
                ""
            }
        ),
    })
}

/// The component: `feegate:policy/notice@1.1.0#word`.
pub struct Component;

impl exports::feegate::policy::notice::Guest for Component {
    fn word(input: NoticeInput) -> Result<NoticeOutput, PolicyError> {
        word(&input)
    }
}

#[cfg(target_arch = "wasm32")]
export!(Component);
