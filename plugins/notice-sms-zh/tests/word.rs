//! Every notice kind's exact wording with the Xianyou parameters
//! (signature 【仙游供电】, hotline 95598).

use policy_notice_sms_zh::{Date, MAX_CHARS, NoticeInput, NoticeKind, WitDecimal, word};
use rust_decimal::Decimal;
use std::str::FromStr;

const XIANYOU: &str = r#"{"hotline":"95598","signature":"【仙游供电】"}"#;

fn wd(s: &str) -> WitDecimal {
    let d = Decimal::from_str(s).unwrap();
    WitDecimal {
        mantissa: i64::try_from(d.mantissa()).unwrap(),
        scale: u8::try_from(d.scale()).unwrap(),
    }
}

fn input(kind: NoticeKind, balance: &str) -> NoticeInput {
    NoticeInput {
        kind,
        account_id: "3500001".to_string(),
        customer_name: "张三".to_string(),
        today: Date {
            year: 2013,
            month: 3,
            day: 16,
        },
        balance: wd(balance),
        days_of_credit_left: None,
        amount: None,
        deadline: None,
        parameters: XIANYOU.to_string(),
    }
}

struct Row {
    kind: NoticeKind,
    balance: &'static str,
    days: Option<&'static str>,
    amount: Option<&'static str>,
    deadline: Option<&'static str>,
    text: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        kind: NoticeKind::LowBalance,
        balance: "23.4",
        days: Some("4.5"),
        amount: None,
        deadline: None,
        text: "【仙游供电】尊敬的客户张三，您的户号3500001电费余额为23.40元，预计可用4.5天，已低于预警值，请及时缴费。咨询请拨95598。",
    },
    Row {
        kind: NoticeKind::LowBalance,
        balance: "23.40",
        days: None,
        amount: None,
        deadline: None,
        text: "【仙游供电】尊敬的客户张三，您的户号3500001电费余额为23.40元，已低于预警值，请及时缴费。咨询请拨95598。",
    },
    Row {
        kind: NoticeKind::SecondAlarm,
        balance: "8.005",
        days: Some("1.6"),
        amount: None,
        deadline: None,
        text: "【仙游供电】尊敬的客户张三，您的户号3500001电费余额为8.01元，预计可用1.6天，余额已不足，请尽快缴费，以免欠费停电。咨询请拨95598。",
    },
    Row {
        kind: NoticeKind::SecondAlarm,
        balance: "0.00",
        days: Some("0.0"),
        amount: None,
        deadline: None,
        text: "【仙游供电】尊敬的客户张三，您的户号3500001电费余额为0.00元，余额已不足，请尽快缴费，以免欠费停电。咨询请拨95598。",
    },
    Row {
        kind: NoticeKind::Arrears,
        balance: "-12.3",
        days: Some("0.0"),
        amount: None,
        deadline: None,
        text: "【仙游供电】尊敬的客户张三，您的户号3500001已欠费12.30元，请立即缴费，以免停电。咨询请拨95598。",
    },
    Row {
        kind: NoticeKind::DisconnectionPending,
        balance: "-12.30",
        days: None,
        amount: None,
        deadline: Some("2013-03-18 08:00"),
        text: "【仙游供电】尊敬的客户张三，您的户号3500001已欠费12.30元，如未及时缴费，将于2013-03-18 08:00后停电，请尽快缴费。咨询请拨95598。",
    },
    Row {
        kind: NoticeKind::Disconnected,
        balance: "-15.62",
        days: None,
        amount: None,
        deadline: None,
        text: "【仙游供电】尊敬的客户张三，您的户号3500001因欠费已停电，当前已欠费15.62元，缴清欠费后将为您恢复供电。咨询请拨95598。",
    },
    Row {
        kind: NoticeKind::Reconnected,
        balance: "84.38",
        days: None,
        amount: None,
        deadline: None,
        text: "【仙游供电】尊敬的客户张三，您的户号3500001已恢复供电，当前电费余额为84.38元。咨询请拨95598。",
    },
    Row {
        kind: NoticeKind::PressButtonToRestore,
        balance: "84.38",
        days: None,
        amount: None,
        deadline: None,
        text: "【仙游供电】尊敬的客户张三，您的户号3500001已具备复电条件，当前电费余额为84.38元，请按电表上的合闸按钮恢复供电。咨询请拨95598。",
    },
    Row {
        kind: NoticeKind::PaymentReceived,
        balance: "84.38",
        days: None,
        amount: Some("100"),
        deadline: None,
        text: "【仙游供电】尊敬的客户张三，您的户号3500001于2013年3月16日缴费100.00元已到账，当前电费余额为84.38元。咨询请拨95598。",
    },
];

fn row_input(row: &Row) -> NoticeInput {
    let mut inp = input(row.kind, row.balance);
    inp.days_of_credit_left = row.days.map(wd);
    inp.amount = row.amount.map(wd);
    inp.deadline = row.deadline.map(str::to_string);
    inp
}

#[test]
fn every_kind_is_worded() {
    for row in ROWS {
        let out = word(&row_input(row)).unwrap_or_else(|e| panic!("{:?}: {e:?}", row.kind));
        assert_eq!(out.text, row.text, "{:?}", row.kind);
        assert!(out.text.starts_with("【仙游供电】"));
        assert!(out.text.ends_with("咨询请拨95598。"));
        assert!(out.text.chars().count() <= MAX_CHARS, "{:?}", row.kind);
        assert!(out.reason_code.starts_with("sms-"), "{}", out.reason_code);
    }
    let out = word(&row_input(&ROWS[0])).unwrap();
    assert_eq!(out.reason_code, "sms-low-balance");
    assert_eq!(
        out.explanation,
        "Worded the low-balance SMS for account 3500001: 69 characters, 1 SMS part."
    );
}

#[test]
fn a_long_name_is_left_out_rather_than_cut() {
    let mut inp = row_input(&ROWS[5]);
    inp.customer_name =
        "福建省莆田市仙游县鲤城街道某某某某某某电子科技有限公司第一分公司".repeat(2);
    let out = word(&inp).unwrap();
    assert_eq!(
        out.text,
        "【仙游供电】尊敬的客户，您的户号3500001已欠费12.30元，如未及时缴费，将于2013-03-18 08:00后停电，请尽快缴费。咨询请拨95598。"
    );
    assert!(
        out.explanation.contains("name was left out"),
        "{}",
        out.explanation
    );
}

#[test]
fn data_cannot_break_or_spoof_the_message() {
    let mut inp = row_input(&ROWS[7]);
    inp.customer_name = " 张三\n【某银行】 ".to_string();
    inp.account_id = "3500001\r".to_string();
    let out = word(&inp).unwrap();
    assert_eq!(
        out.text,
        "【仙游供电】尊敬的客户张三某银行，您的户号3500001已恢复供电，当前电费余额为84.38元。咨询请拨95598。"
    );
    assert_eq!(out.text.matches('【').count(), 1);
}

#[test]
fn refused() {
    let mut cases: Vec<(&str, NoticeInput, &str)> = Vec::new();
    cases.push((
        "pending without deadline",
        input(NoticeKind::DisconnectionPending, "-1"),
        "invalid-input",
    ));
    let mut c = input(NoticeKind::DisconnectionPending, "-1");
    c.deadline = Some(" \n".to_string());
    cases.push(("pending with blank deadline", c, "invalid-input"));
    cases.push((
        "payment without amount",
        input(NoticeKind::PaymentReceived, "10"),
        "invalid-input",
    ));
    let mut c = input(NoticeKind::PaymentReceived, "10");
    c.amount = Some(wd("-5"));
    cases.push(("negative payment", c, "invalid-input"));
    let mut c = input(NoticeKind::LowBalance, "10");
    c.days_of_credit_left = Some(wd("-1.0"));
    cases.push(("negative days", c, "invalid-input"));
    let mut c = input(NoticeKind::LowBalance, "10");
    c.parameters = XIANYOU.replace("【仙游供电】", "【仙游供电】".repeat(30).as_str());
    cases.push(("signature too long", c, "notice-too-long"));
    for (name, params) in [
        ("missing hotline", r#"{"signature":"【仙游供电】"}"#),
        ("empty signature", r#"{"hotline":"95598","signature":" "}"#),
        (
            "unknown key",
            r#"{"hotline":"95598","signature":"【仙游供电】","sign":"x"}"#,
        ),
        (
            "number hotline",
            r#"{"hotline":95598,"signature":"【仙游供电】"}"#,
        ),
    ] {
        let mut c = input(NoticeKind::LowBalance, "10");
        c.parameters = params.to_string();
        cases.push((name, c, "bad-parameters"));
    }
    for (name, inp, code) in cases {
        let err = word(&inp).expect_err(name);
        assert_eq!(err.code, code, "{name}: {}", err.message);
    }
}

#[test]
fn xianyou_policy_set_matches() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../policies/xianyou/policy-set.toml"
    );
    let set: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let params = serde_json::to_value(&set["notice"]["parameters"]).unwrap();
    assert_eq!(serde_json::to_string(&params).unwrap(), XIANYOU);
}
