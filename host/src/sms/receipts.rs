//! The delivery-receipts endpoint: an axum [`Router`] the HTTP gateway posts
//! [`DeliveryReceipt`]s to, authenticated like the requests we send it (see [`super`]).
//!
//! `POST /sms/receipts` ([`RECEIPTS_PATH`]) with a JSON [`DeliveryReceipt`]. Answers:
//! 200 `{"outcome": "applied" | "duplicate" | "stale" | "unknown-message"}` (the gateway
//! stops resending); 401 for a missing or bad signature, unknown key or stale
//! timestamp, and 400 for a body that is not a receipt — in both cases nothing is
//! written; 503 when the database fails (the gateway should resend later).
//!
//! Mount it in a larger server (`feegate serve`) with `Router::merge`.

use super::{Auth, HEADER_KEY_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, unix_now};
use crate::clock::Clock;
use crate::config::OutboxConfig;
use crate::db::Db;
use crate::outbox::{DeliveryReceipt, apply_receipt};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::sync::Arc;

/// Where receipts are posted.
pub const RECEIPTS_PATH: &str = "/sms/receipts";

/// What the endpoint needs.
#[derive(Clone)]
pub struct ReceiptsState {
    pub db: Db,
    /// County local time, for `delivered_at` and retries.
    pub clock: Arc<dyn Clock>,
    /// The gateway's key id and shared secret.
    pub auth: Auth,
    pub outbox: OutboxConfig,
}

/// The receipts router, with its state applied (merge it into any `Router<()>`).
pub fn receipts_router(state: ReceiptsState) -> Router {
    Router::new()
        .route(RECEIPTS_PATH, post(receive))
        .with_state(Arc::new(state))
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn receive(State(s): State<Arc<ReceiptsState>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(e) = s.auth.verify(
        h(HEADER_KEY_ID),
        h(HEADER_TIMESTAMP),
        h(HEADER_SIGNATURE),
        &body,
        unix_now(),
    ) {
        tracing::warn!(error = %e, "SMS receipt refused");
        return answer(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": e.to_string() }),
        );
    }
    let receipt: DeliveryReceipt = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": format!("not a delivery receipt: {e}") }),
            );
        }
    };
    match apply_receipt(&s.db, &receipt, &s.outbox, s.clock.now()).await {
        Ok(outcome) => answer(StatusCode::OK, serde_json::json!({ "outcome": outcome })),
        Err(e) => {
            tracing::error!(error = %e, "SMS receipt not stored");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": "receipt not stored; send it again later" }),
            )
        }
    }
}
