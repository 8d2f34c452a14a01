//! SMS plumbing around the outbox ([`crate::outbox`]): segment counting, the HTTP JSON
//! gateway and its signed delivery receipts.
//!
//! Authentication, both ways (requests to the gateway, receipts from it): the headers
//! [`HEADER_KEY_ID`], [`HEADER_TIMESTAMP`] (Unix seconds, wall clock) and
//! [`HEADER_SIGNATURE`] = lowercase hex of HMAC-SHA256(shared secret,
//! `"<timestamp>.<body bytes>"`). The signature binds the timestamp, so a captured
//! request replayed later than [`Auth::max_skew`] is refused.

pub mod http;
pub mod receipts;
pub mod segments;

pub use http::{HttpGateway, HttpGatewayConfig};
pub use receipts::{ReceiptsState, receipts_router};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Key id header: which shared secret signed the request.
pub const HEADER_KEY_ID: &str = "x-feegate-key-id";
/// Unix seconds when the request was signed.
pub const HEADER_TIMESTAMP: &str = "x-feegate-timestamp";
/// Hex HMAC-SHA256 over `"<timestamp>.<body>"`.
pub const HEADER_SIGNATURE: &str = "x-feegate-signature";

/// A shared secret and its id. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Auth {
    pub key_id: String,
    pub secret: Vec<u8>,
    /// Largest difference between the signed timestamp and our wall clock accepted on
    /// an incoming request. Default 300 s.
    pub max_skew: std::time::Duration,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .field("max_skew", &self.max_skew)
            .finish()
    }
}

/// Why an incoming request was refused (answered 401, nothing written).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    #[error("timestamp {0:?} is not Unix seconds")]
    BadTimestamp(String),
    #[error("timestamp {signed} is {skew} s from our clock (at most {max} s accepted)")]
    Skew { signed: i64, skew: i64, max: u64 },
    #[error("signature does not match the body")]
    BadSignature,
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// Current wall-clock Unix seconds (signatures only; business time is the `Clock`'s).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Auth {
    /// A key with the default 300 s skew.
    pub fn new(key_id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            key_id: key_id.into(),
            secret: secret.into(),
            max_skew: std::time::Duration::from_secs(300),
        }
    }

    /// Hex signature of `body` signed at `timestamp`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        hex::encode(mac(&self.secret, timestamp, body).finalize().into_bytes())
    }

    /// The three headers for `body`, signed now.
    pub fn headers(&self, body: &[u8]) -> [(&'static str, String); 3] {
        let t = unix_now();
        [
            (HEADER_KEY_ID, self.key_id.clone()),
            (HEADER_TIMESTAMP, t.to_string()),
            (HEADER_SIGNATURE, self.sign(t, body)),
        ]
    }

    /// Checks an incoming request's headers against `body` at wall-clock `now_unix`
    /// (constant-time comparison of the signature).
    pub fn verify(
        &self,
        key_id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), AuthError> {
        let key_id = key_id.ok_or(AuthError::Missing(HEADER_KEY_ID))?;
        let timestamp = timestamp.ok_or(AuthError::Missing(HEADER_TIMESTAMP))?;
        let signature = signature.ok_or(AuthError::Missing(HEADER_SIGNATURE))?;
        if key_id != self.key_id {
            return Err(AuthError::UnknownKey(key_id.to_string()));
        }
        let signed: i64 = timestamp
            .parse()
            .map_err(|_| AuthError::BadTimestamp(timestamp.to_string()))?;
        let skew = (now_unix - signed).abs();
        if skew as u64 > self.max_skew.as_secs() {
            return Err(AuthError::Skew {
                signed,
                skew,
                max: self.max_skew.as_secs(),
            });
        }
        let sig = hex::decode(signature).map_err(|_| AuthError::BadSignature)?;
        mac(&self.secret, signed, body)
            .verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_key_and_time() {
        let auth = Auth::new("gw1", b"s3cret".to_vec());
        let body: &[u8] = br#"{"status":"delivered"}"#;
        let now = 1_700_000_000;
        let sig = auth.sign(now, body);
        let ok = auth.verify(
            Some("gw1"),
            Some(&now.to_string()),
            Some(&sig),
            body,
            now + 10,
        );
        assert_eq!(ok, Ok(()));
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<String>,
            Option<String>,
            &'a [u8],
            AuthError,
        );
        let t = now.to_string();
        let cases: Vec<Case> = vec![
            (
                "other body",
                Some("gw1"),
                Some(t.clone()),
                Some(sig.clone()),
                &b"{}"[..],
                AuthError::BadSignature,
            ),
            (
                "other key id",
                Some("gw2"),
                Some(t.clone()),
                Some(sig.clone()),
                body,
                AuthError::UnknownKey("gw2".into()),
            ),
            (
                "no signature",
                Some("gw1"),
                Some(t.clone()),
                None,
                body,
                AuthError::Missing(HEADER_SIGNATURE),
            ),
            (
                "no key id",
                None,
                Some(t.clone()),
                Some(sig.clone()),
                body,
                AuthError::Missing(HEADER_KEY_ID),
            ),
            (
                "timestamp changed",
                Some("gw1"),
                Some((now + 1).to_string()),
                Some(sig.clone()),
                body,
                AuthError::BadSignature,
            ),
            (
                "not hex",
                Some("gw1"),
                Some(t.clone()),
                Some("zz".into()),
                body,
                AuthError::BadSignature,
            ),
            (
                "not a number",
                Some("gw1"),
                Some("yesterday".into()),
                Some(sig.clone()),
                body,
                AuthError::BadTimestamp("yesterday".into()),
            ),
        ];
        for (name, key, ts, sig, body, expected) in cases {
            let got = auth.verify(key, ts.as_deref(), sig.as_deref(), body, now);
            assert_eq!(got, Err(expected), "{name}");
        }
        let old = now - 301;
        let replay = auth.verify(
            Some("gw1"),
            Some(&old.to_string()),
            Some(&auth.sign(old, body)),
            body,
            now,
        );
        assert_eq!(
            replay,
            Err(AuthError::Skew {
                signed: old,
                skew: 301,
                max: 300
            })
        );
        // Another secret signs differently.
        let other = Auth::new("gw1", b"other".to_vec());
        assert_ne!(other.sign(now, body), sig);
    }
}
