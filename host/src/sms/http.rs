//! The HTTP JSON SMS gateway client.
//!
//! `POST <url>` with a JSON body `{"idempotency_key", "to", "text", "segments"}`, signed
//! with the shared secret (see [`super`]). The gateway answers 2xx with
//! `{"message_id": "...", "status": "accepted" | "delivered" | "duplicate"}`
//! (`duplicate`: it has seen the idempotency key and does not send again — treated as
//! accepted). Anything else — no connection, no answer within the timeout, a non-2xx
//! status, an answer we cannot read — is a failed attempt that the outbox retries with
//! backoff. Delivery receipts come back to [`super::receipts_router`].

use super::Auth;
use crate::outbox::{GatewayError, GatewayFuture, OutgoingSms, SendOutcome, SmsGateway};
use std::time::Duration;

/// Where and how to reach the gateway.
#[derive(Debug, Clone)]
pub struct HttpGatewayConfig {
    /// e.g. `https://sms.example.com/v1/messages`.
    pub url: String,
    /// Key id and shared secret that sign requests (and receipts).
    pub auth: Auth,
    /// Whole-request timeout. Default 5 s: a gateway slower than that is treated as
    /// down for this attempt (the idempotency key makes the retry safe).
    pub timeout: Duration,
    /// TCP/TLS connect timeout. Default 2 s.
    pub connect_timeout: Duration,
}

impl HttpGatewayConfig {
    /// A configuration with the default timeouts.
    pub fn new(url: impl Into<String>, auth: Auth) -> Self {
        Self {
            url: url.into(),
            auth,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// From the environment: `FEEGATE_SMS_URL` (none: `Ok(None)`, use the log gateway),
    /// `FEEGATE_SMS_KEY_ID`, the secret from the file `FEEGATE_SMS_SECRET_FILE` (one
    /// line; preferred: it stays out of the process list and the shell history) or
    /// `FEEGATE_SMS_SECRET`, and `FEEGATE_SMS_TIMEOUT_MS` (default 5000).
    ///
    /// # Errors
    /// What is missing or unreadable, by variable name.
    pub fn from_env() -> Result<Option<Self>, String> {
        let Ok(url) = std::env::var("FEEGATE_SMS_URL") else {
            return Ok(None);
        };
        let key_id = std::env::var("FEEGATE_SMS_KEY_ID")
            .map_err(|_| "FEEGATE_SMS_URL is set but FEEGATE_SMS_KEY_ID is not".to_string())?;
        let secret = match std::env::var("FEEGATE_SMS_SECRET_FILE") {
            Ok(path) => std::fs::read_to_string(&path)
                .map_err(|e| format!("FEEGATE_SMS_SECRET_FILE {path}: {e}"))?
                .trim_end()
                .to_string(),
            Err(_) => std::env::var("FEEGATE_SMS_SECRET").map_err(|_| {
                "FEEGATE_SMS_URL is set but neither FEEGATE_SMS_SECRET_FILE nor FEEGATE_SMS_SECRET is".to_string()
            })?,
        };
        if secret.is_empty() {
            return Err("the SMS gateway secret is empty".into());
        }
        let mut cfg = Self::new(url, Auth::new(key_id, secret.into_bytes()));
        if let Ok(ms) = std::env::var("FEEGATE_SMS_TIMEOUT_MS") {
            let ms: u64 = ms
                .parse()
                .map_err(|_| format!("FEEGATE_SMS_TIMEOUT_MS {ms:?} is not milliseconds"))?;
            cfg.timeout = Duration::from_millis(ms);
        }
        Ok(Some(cfg))
    }
}

/// The gateway client.
#[derive(Debug, Clone)]
pub struct HttpGateway {
    client: reqwest::Client,
    cfg: HttpGatewayConfig,
}

#[derive(serde::Serialize)]
struct SendRequest<'a> {
    idempotency_key: &'a str,
    to: &'a str,
    text: &'a str,
    segments: usize,
}

#[derive(serde::Deserialize)]
struct SendAnswer {
    #[serde(default)]
    message_id: Option<String>,
    status: String,
}

impl HttpGateway {
    /// # Errors
    /// The HTTP client cannot be built (TLS roots unavailable).
    pub fn new(cfg: HttpGatewayConfig) -> Result<Self, GatewayError> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .build()
            .map_err(|e| GatewayError::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client, cfg })
    }

    async fn post(&self, sms: &OutgoingSms) -> Result<SendOutcome, GatewayError> {
        let body = serde_json::to_vec(&SendRequest {
            idempotency_key: &sms.idempotency_key,
            to: &sms.mobile,
            text: &sms.body,
            segments: sms.segments,
        })
        .expect("request serialises");
        let mut req = self
            .client
            .post(&self.cfg.url)
            .header("content-type", "application/json");
        for (name, value) in self.cfg.auth.headers(&body) {
            req = req.header(name, value);
        }
        let answer = req.body(body).send().await.map_err(|e| {
            if e.is_timeout() {
                GatewayError::Timeout(self.cfg.timeout)
            } else {
                GatewayError::Unreachable(e.to_string())
            }
        })?;
        let status = answer.status();
        let text = answer.text().await.map_err(|e| {
            if e.is_timeout() {
                GatewayError::Timeout(self.cfg.timeout)
            } else {
                GatewayError::BadAnswer(e.to_string())
            }
        })?;
        if !status.is_success() {
            return Err(GatewayError::Status {
                status: status.as_u16(),
                body: text.chars().take(200).collect(),
            });
        }
        let a: SendAnswer = serde_json::from_str(&text).map_err(|e| {
            GatewayError::BadAnswer(format!(
                "{e}: {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        match a.status.as_str() {
            "accepted" | "duplicate" => Ok(SendOutcome::Accepted {
                gateway_message_id: a.message_id,
            }),
            "delivered" => Ok(SendOutcome::Delivered {
                at: sms.now,
                gateway_message_id: a.message_id,
            }),
            other => Err(GatewayError::BadAnswer(format!("unknown status {other:?}"))),
        }
    }
}

impl SmsGateway for HttpGateway {
    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> GatewayFuture<'a> {
        Box::pin(self.post(sms))
    }
}
