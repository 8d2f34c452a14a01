//! Notification authentication, checked over the raw request body before anything is
//! parsed or written.
//!
//! Every channel sends two headers:
//!
//! - `X-Feegate-Timestamp`: Unix seconds when the channel signed the notification;
//!   refused when further than the configured window (default 300 s) from our clock, so
//!   a captured notification cannot be replayed later (a replay inside the window is a
//!   retry of the same transaction id and is applied at most once anyway).
//! - `X-Feegate-Signature`: over the bytes `"{timestamp}\n{raw body}"`,
//!   - `hmac-sha256` channels: lowercase hex of HMAC-SHA256 keyed with the shared secret;
//!   - `rsa-sha256` channels (Alipay style): base64 of an RSASSA-PKCS1-v1_5 signature
//!     with SHA-256 (RFC 8017 §8.2), checked with the channel's public key.

use hmac::{Hmac, Mac};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

use super::config::ChannelKey;

/// Header carrying the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-feegate-timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-feegate-signature";

/// Why a notification was refused before it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// A header is missing or unreadable.
    MissingHeader(&'static str),
    /// The timestamp is outside the window; `skew` seconds from our clock.
    Stale { skew: i64 },
    /// The signature does not verify.
    BadSignature,
}

/// DER DigestInfo prefix for SHA-256 (RFC 8017 §9.2, note 1). Built by hand so the
/// `oid` feature of sha2 (which would rebuild much of the tree) is not needed.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

fn pkcs1v15_sha256() -> Pkcs1v15Sign {
    Pkcs1v15Sign {
        hash_len: Some(32),
        prefix: Box::new(SHA256_DIGEST_INFO),
    }
}

fn signed_bytes(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{timestamp}\n").into_bytes();
    m.extend_from_slice(body);
    m
}

/// HMAC-SHA256 signature (lowercase hex) of `body` at `timestamp`.
pub fn hmac_sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&signed_bytes(timestamp, body));
    hex::encode(mac.finalize().into_bytes())
}

/// RSA-SHA256 PKCS#1 v1.5 signature (base64) of `body` at `timestamp`.
pub fn rsa_sign(key: &RsaPrivateKey, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine;
    let digest = Sha256::digest(signed_bytes(timestamp, body));
    let sig = key
        .sign(pkcs1v15_sha256(), &digest)
        .expect("a 2048-bit key signs a SHA-256 digest");
    base64::engine::general_purpose::STANDARD.encode(sig)
}

/// Parses an RSA public key: SPKI (`BEGIN PUBLIC KEY`) or PKCS#1 (`BEGIN RSA PUBLIC KEY`) PEM.
pub fn parse_public_key(pem: &str) -> Result<RsaPublicKey, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    RsaPublicKey::from_public_key_pem(pem.trim())
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim()))
        .map_err(|e| format!("not an RSA public key in PEM form: {e}"))
}

/// Parses an RSA private key (PKCS#8 or PKCS#1 PEM); for tests, the bench and fake channels.
pub fn parse_private_key(pem: &str) -> Result<RsaPrivateKey, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    RsaPrivateKey::from_pkcs8_pem(pem.trim())
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem.trim()))
        .map_err(|e| format!("not an RSA private key in PEM form: {e}"))
}

/// Checks the headers of a notification against `key`; `now_unix` is our clock.
pub fn verify(
    key: &ChannelKey,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
    window_seconds: u64,
) -> Result<(), AuthFailure> {
    let timestamp: i64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or(AuthFailure::MissingHeader(TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(AuthFailure::MissingHeader(SIGNATURE_HEADER))?;
    let skew = timestamp.saturating_sub(now_unix);
    if skew.unsigned_abs() > window_seconds {
        return Err(AuthFailure::Stale { skew });
    }
    let message = signed_bytes(timestamp, body);
    let ok = match key {
        ChannelKey::Hmac(secret) => {
            let Ok(given) = hex::decode(signature.trim()) else {
                return Err(AuthFailure::BadSignature);
            };
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
            mac.update(&message);
            // Constant-time comparison.
            mac.verify_slice(&given).is_ok()
        }
        ChannelKey::Rsa(public) => {
            use base64::Engine;
            let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
                return Err(AuthFailure::BadSignature);
            };
            public
                .verify(pkcs1v15_sha256(), &Sha256::digest(&message), &sig)
                .is_ok()
        }
    };
    if ok {
        Ok(())
    } else {
        Err(AuthFailure::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_400_000;

    fn hmac_key() -> ChannelKey {
        ChannelKey::Hmac(b"0123456789abcdef-secret".to_vec())
    }

    #[test]
    fn hmac_table() {
        let body = br#"{"txn_id":"T1"}"#;
        let good = hmac_sign(b"0123456789abcdef-secret", NOW, body);
        let other = hmac_sign(b"another-secret-0123456789", NOW, body);
        type Case<'a> = (
            &'a str,
            Option<String>,
            Option<String>,
            &'a [u8],
            Result<(), AuthFailure>,
        );
        let cases: Vec<Case> = vec![
            (
                "valid",
                Some(NOW.to_string()),
                Some(good.clone()),
                body,
                Ok(()),
            ),
            (
                "uppercase hex",
                Some(NOW.to_string()),
                Some(good.to_uppercase()),
                body,
                Ok(()),
            ),
            (
                "edge of window",
                Some((NOW - 300).to_string()),
                Some(hmac_sign(b"0123456789abcdef-secret", NOW - 300, body)),
                body,
                Ok(()),
            ),
            (
                "stale",
                Some((NOW - 301).to_string()),
                Some(hmac_sign(b"0123456789abcdef-secret", NOW - 301, body)),
                body,
                Err(AuthFailure::Stale { skew: -301 }),
            ),
            (
                "future",
                Some((NOW + 400).to_string()),
                Some(hmac_sign(b"0123456789abcdef-secret", NOW + 400, body)),
                body,
                Err(AuthFailure::Stale { skew: 400 }),
            ),
            (
                "other secret",
                Some(NOW.to_string()),
                Some(other),
                body,
                Err(AuthFailure::BadSignature),
            ),
            (
                "body changed",
                Some(NOW.to_string()),
                Some(good.clone()),
                br#"{"txn_id":"T2"}"#,
                Err(AuthFailure::BadSignature),
            ),
            (
                "timestamp changed",
                Some((NOW + 1).to_string()),
                Some(good.clone()),
                body,
                Err(AuthFailure::BadSignature),
            ),
            (
                "not hex",
                Some(NOW.to_string()),
                Some("zz".into()),
                body,
                Err(AuthFailure::BadSignature),
            ),
            (
                "no timestamp",
                None,
                Some(good.clone()),
                body,
                Err(AuthFailure::MissingHeader(TIMESTAMP_HEADER)),
            ),
            (
                "no signature",
                Some(NOW.to_string()),
                None,
                body,
                Err(AuthFailure::MissingHeader(SIGNATURE_HEADER)),
            ),
        ];
        for (name, ts, sig, b, want) in cases {
            let got = verify(&hmac_key(), ts.as_deref(), sig.as_deref(), b, NOW, 300);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn rsa_table() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let private = parse_private_key(
            &std::fs::read_to_string(data.join("alipay_test_private.pem")).unwrap(),
        )
        .unwrap();
        let forger =
            parse_private_key(&std::fs::read_to_string(data.join("forger_private.pem")).unwrap())
                .unwrap();
        let public = ChannelKey::Rsa(Box::new(
            parse_public_key(
                &std::fs::read_to_string(data.join("alipay_test_public.pem")).unwrap(),
            )
            .unwrap(),
        ));
        let body = br#"{"txn_id":"A1","amount":"10.00"}"#;
        let good = rsa_sign(&private, NOW, body);
        let cases = [
            ("valid", good.clone(), &body[..], Ok(())),
            (
                "forged key",
                rsa_sign(&forger, NOW, body),
                &body[..],
                Err(AuthFailure::BadSignature),
            ),
            (
                "body changed",
                good.clone(),
                &br#"{"txn_id":"A1","amount":"99.00"}"#[..],
                Err(AuthFailure::BadSignature),
            ),
            (
                "not base64",
                "!!".to_string(),
                &body[..],
                Err(AuthFailure::BadSignature),
            ),
        ];
        for (name, sig, b, want) in cases {
            let got = verify(&public, Some(&NOW.to_string()), Some(&sig), b, NOW, 300);
            assert_eq!(got, want, "{name}");
        }
        // Interoperability: a signature made by OpenSSL (`openssl dgst -sha256 -sign`)
        // over the same bytes verifies.
        let msg = signed_bytes(NOW, body);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m"), &msg).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(data.join("alipay_test_private.pem"))
            .arg(dir.path().join("m"))
            .output();
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            use base64::Engine;
            let sig = base64::engine::general_purpose::STANDARD.encode(out.stdout);
            assert_eq!(
                sig, good,
                "PKCS#1 v1.5 is deterministic: same bytes as OpenSSL"
            );
        } else {
            eprintln!("openssl not available: interoperability check skipped");
        }
    }
}
