//! Idempotency keys (migration 0012, `api_idempotency`) on every POST that moves money or
//! a relay: payments, onboarding with the initial prepayment, work-order approve, hold,
//! withdraw and execute.
//!
//! - The `Idempotency-Key` header is required (400 `idempotency-key-required`): 1 to
//!   [`MAX_KEY_CHARS`] visible ASCII characters, chosen by the client (a UUID is usual).
//! - Keys are per user. The first request with a key *reserves* it: one `INSERT` whose
//!   primary key (user, key) lets only one of several concurrent requests through, so
//!   the work is done once — never a read-then-write race.
//! - Its response (status and body) is stored with the key and a SHA-256 of the method,
//!   path and body. A repeat with the same request gets the stored response, marked
//!   `Idempotent-Replayed: true`. A repeat that arrives while the first is still being
//!   processed waits for it (up to [`WAIT_FOR_FIRST`]; after that, 409
//!   `idempotency-key-in-progress`: retry later).
//! - The same key with another request is 409 `idempotency-key-reused`.
//! - A request that failed on the server (5xx) releases its key, so the client's retry
//!   runs again; answers 2xx and 4xx are final. A reservation left by a process that
//!   died mid-request is taken over after [`ABANDONED_AFTER`]; the money paths are
//!   idempotent on their own as well (the payment's channel transaction id is derived
//!   from the key), so a takeover never applies a payment twice.

use super::error::ApiError;
use crate::auth::Principal;
use crate::auth::store::now_ms;
use crate::db::Db;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::time::Duration;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Header set on a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key accepted.
pub const MAX_KEY_CHARS: usize = 128;
/// How long a repeat waits for the first request with its key to finish.
pub const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);
/// A reservation older than this without a response is taken to be abandoned.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(120);

/// The client's key from the headers, checked.
pub fn key(headers: &HeaderMap) -> Result<String, ApiError> {
    let required = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "idempotency-key-required",
            format!(
                "this request moves money or a relay: send an Idempotency-Key header (1 to {MAX_KEY_CHARS} visible ASCII characters, e.g. a UUID) and reuse it when you retry"
            ),
        )
    };
    let k = headers
        .get(HEADER)
        .ok_or_else(required)?
        .to_str()
        .map_err(|_| required())?
        .trim();
    if k.is_empty() || k.len() > MAX_KEY_CHARS || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(required());
    }
    Ok(k.to_string())
}

/// SHA-256 of what makes two requests the same one: the method, the path and the body —
/// a JSON body in canonical form (keys sorted, no insignificant whitespace), so a client
/// library that serialises the same object with its keys in another order on a retry is
/// still making the same request; any other body byte for byte.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    // serde_json's map is a BTreeMap (the `preserve_order` feature is off; a test below
    // fails if it is ever switched on), so writing a parsed value back sorts its keys.
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => {
            h.update(b"json\0");
            h.update(json.to_string().as_bytes());
        }
        Err(_) => {
            h.update(b"raw\0");
            h.update(body);
        }
    }
    hex::encode(h.finalize())
}

/// A stored or fresh answer.
fn answer(status: u16, body: String, replayed: bool) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if replayed {
        r.headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    r
}

enum Reserved {
    /// This request owns the key: do the work.
    Mine,
    /// Another request with the same fingerprint finished: its answer.
    Done(u16, String),
}

async fn reserve(db: &Db, user: i64, key: &str, hash: &str) -> Result<Reserved, ApiError> {
    let started = std::time::Instant::now();
    loop {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO api_idempotency (user_id, idempotency_key, request_sha256, created_at_ms)
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        )
        .bind(user)
        .bind(key)
        .bind(hash)
        .bind(now)
        .execute(&db.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Reserved::Mine);
        }
        let row = sqlx::query(
            "SELECT request_sha256, response_status, response_body, created_at_ms FROM api_idempotency
             WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(user)
        .bind(key)
        .fetch_optional(&db.pool)
        .await?;
        let Some(row) = row else {
            // Released by a failed first request between our insert and select: try again.
            continue;
        };
        let stored_hash: String = row.try_get(0)?;
        if stored_hash != hash {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency-key-reused",
                "this Idempotency-Key was used for another request (other path or body); use a new key for a new request",
            ));
        }
        let status: Option<i64> = row.try_get(1)?;
        let body: Option<String> = row.try_get(2)?;
        if let (Some(s), Some(b)) = (status, body) {
            return Ok(Reserved::Done(s as u16, b));
        }
        let created: i64 = row.try_get(3)?;
        if now - created > ABANDONED_AFTER.as_millis() as i64 {
            // Take over an abandoned reservation: only one taker wins the update.
            let taken = sqlx::query(
                "UPDATE api_idempotency SET created_at_ms = $3
                 WHERE user_id = $1 AND idempotency_key = $2 AND response_status IS NULL AND created_at_ms = $4",
            )
            .bind(user)
            .bind(key)
            .bind(now)
            .bind(created)
            .execute(&db.pool)
            .await?;
            if taken.rows_affected() == 1 {
                return Ok(Reserved::Mine);
            }
        }
        if started.elapsed() > WAIT_FOR_FIRST {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency-key-in-progress",
                "the first request with this Idempotency-Key is still being processed; retry in a few seconds with the same key",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `work` once per (user, key): the first request with the key does it and its
/// answer is stored; repeats get that answer. `method`, `path` and `body` identify the
/// request (see the module doc).
pub async fn once<F, Fut>(
    db: &Db,
    principal: &Principal,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
    work: F,
) -> Response
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let key = match key(headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let hash = fingerprint(method, path, body);
    match reserve(db, principal.user_id, &key, &hash).await {
        Err(e) => return e.into_response(),
        Ok(Reserved::Done(status, body)) => return answer(status, body, true),
        Ok(Reserved::Mine) => {}
    }
    let (status, body) = match work(key.clone()).await {
        Ok((s, v)) => (s, v.to_string()),
        Err(e) if e.status.is_server_error() => {
            // Not final: release the key so a retry runs again.
            if let Err(d) = sqlx::query(
                "DELETE FROM api_idempotency WHERE user_id = $1 AND idempotency_key = $2 AND response_status IS NULL",
            )
            .bind(principal.user_id)
            .bind(&key)
            .execute(&db.pool)
            .await
            {
                tracing::error!(error = %d, "api: releasing an idempotency key");
            }
            return e.into_response();
        }
        Err(e) => (
            e.status,
            serde_json::to_string(&e.body()).expect("error body serialises"),
        ),
    };
    if let Err(e) = sqlx::query(
        "UPDATE api_idempotency SET response_status = $3, response_body = $4, completed_at_ms = $5
         WHERE user_id = $1 AND idempotency_key = $2",
    )
    .bind(principal.user_id)
    .bind(&key)
    .bind(i64::from(status.as_u16()))
    .bind(&body)
    .bind(now_ms())
    .execute(&db.pool)
    .await
    {
        // The work is done; a repeat would wait, then be taken over after
        // ABANDONED_AFTER and find the money paths idempotent on their own.
        tracing::error!(error = %e, "api: storing an idempotent response");
    }
    answer(status.as_u16(), body, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_present_visible_ascii_and_short() {
        let mut h = HeaderMap::new();
        assert_eq!(key(&h).unwrap_err().code, "idempotency-key-required");
        h.insert(HEADER, HeaderValue::from_static("pay-2026-0001"));
        assert_eq!(key(&h).unwrap(), "pay-2026-0001");
        h.insert(HEADER, HeaderValue::from_static("has space"));
        assert!(key(&h).is_err());
        h.insert(
            HEADER,
            HeaderValue::from_str(&"k".repeat(MAX_KEY_CHARS + 1)).unwrap(),
        );
        assert!(key(&h).is_err());
    }

    #[test]
    fn the_fingerprint_separates_method_path_and_body() {
        let a = fingerprint("POST", "/api/v1/payments", b"{}");
        assert_eq!(a, fingerprint("POST", "/api/v1/payments", b"{}"));
        assert_ne!(a, fingerprint("PUT", "/api/v1/payments", b"{}"));
        assert_ne!(a, fingerprint("POST", "/api/v1/payment", b"s{}"));
        assert_ne!(a, fingerprint("POST", "/api/v1/payments", b"{\"a\":1}"));
    }

    #[test]
    fn the_same_json_object_with_keys_reordered_is_the_same_request() {
        let fp = |body: &str| fingerprint("POST", "/api/v1/payments", body.as_bytes());
        let same = [
            r#"{"account_id":"A1","amount":"10.00","channel":"app"}"#,
            r#"{ "channel": "app", "amount": "10.00", "account_id": "A1" }"#,
            "{\n  \"amount\": \"10.00\",\n  \"account_id\": \"A1\",\n  \"channel\": \"app\"\n}",
        ];
        for body in &same[1..] {
            assert_eq!(fp(same[0]), fp(body), "{body}");
        }
        // Another value, or a nested object changed, is another request.
        for other in [
            r#"{"account_id":"A1","amount":"10.01","channel":"app"}"#,
            r#"{"account_id":"A1","amount":"10.00","channel":"app","note":{"x":1}}"#,
        ] {
            assert_ne!(fp(same[0]), fp(other), "{other}");
        }
        // A body that is not JSON is compared byte for byte.
        assert_ne!(fp("not json"), fp("not  json"));
    }
}
