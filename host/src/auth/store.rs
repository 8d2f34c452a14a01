//! Users, API tokens and console sessions in the database (migration 0010).
//!
//! - Passwords: argon2id (the `argon2` crate's defaults, OWASP's minimum: 19 MiB, 2
//!   passes), PHC string in `users.password_hash`; at least [`MIN_PASSWORD_CHARS`].
//! - API tokens and session ids: 32 random bytes, base64url; only their SHA-256 is stored,
//!   so a copy of the database does not let anyone in. Tokens start `fgt_`, sessions `fgs_`.
//! - Failed logins are rate-limited per username and per client address: after
//!   [`AuthConfig::max_failures`] failures within [`AuthConfig::failure_window_seconds`]
//!   the next attempt is refused without checking the password until the window passes.

use super::{Principal, Role, Via};
use crate::db::{Db, DbError};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Shortest password accepted for a console login, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Login and session settings (`[auth]` in the serve config).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A console session ends this many seconds after login (default 8 h, one shift).
    pub session_seconds: u64,
    /// Failed logins counted over this many seconds (default 900).
    pub failure_window_seconds: u64,
    /// Failures per username, and per client address, before logins are refused (default 5).
    pub max_failures: u32,
    /// Mark the session cookie `Secure` (default true; browsers accept it on
    /// http://localhost and 127.0.0.1, so only a plain-HTTP deployment elsewhere needs false,
    /// and it should not exist: put TLS in front).
    pub secure_cookies: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_seconds: 8 * 3600,
            failure_window_seconds: 900,
            max_failures: 5,
            secure_cookies: true,
        }
    }
}

/// Why a login or a user change failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("wrong username or password")]
    BadCredentials,
    #[error("too many failed logins; try again in {retry_after_seconds} s")]
    TooManyAttempts { retry_after_seconds: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for AuthError {
    fn from(e: sqlx::Error) -> Self {
        AuthError::Db(DbError::Sql(e))
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system random source");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256 of a token or session id, hex: what is stored and looked up.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// An argon2id PHC string for `password`. Refuses one shorter than [`MIN_PASSWORD_CHARS`].
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::Invalid(format!(
            "a password needs at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system random source");
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| AuthError::Invalid(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Invalid(format!("hashing the password: {e}")))
}

fn password_matches(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A user to create. The scope fields a role needs must be set and the others empty:
/// county for a county engineer; county and station for station staff; the account for a
/// customer; none for operations and auditors.
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    pub username: String,
    pub role: Option<Role>,
    pub county: Option<String>,
    pub station_id: Option<String>,
    pub account_id: Option<String>,
    pub password: Option<String>,
}

/// Creates a user; returns its id. Checks the scope against the role and against the
/// master data (the county, station or account must exist; a station must be in the county).
pub async fn create_user(db: &Db, user: &NewUser) -> Result<i64, AuthError> {
    let role = user
        .role
        .ok_or_else(|| AuthError::Invalid("a user needs a role".into()))?;
    let name = user.username.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(AuthError::Invalid(format!(
            "username {:?}: use 1–64 letters, digits, '.', '_', '-' or '@'",
            user.username
        )));
    }
    let (needs_county, needs_station, needs_account) = match role {
        Role::Operations | Role::Auditor => (false, false, false),
        Role::CountyEngineer => (true, false, false),
        Role::StationStaff => (true, true, false),
        Role::Customer => (false, false, true),
    };
    for (what, needed, given) in [
        ("--county", needs_county, user.county.is_some()),
        ("--station", needs_station, user.station_id.is_some()),
        ("--account", needs_account, user.account_id.is_some()),
    ] {
        if needed != given {
            return Err(AuthError::Invalid(format!(
                "role {role} {} {what}",
                if needed { "needs" } else { "takes no" }
            )));
        }
    }
    if let Some(c) = &user.county {
        let found: Option<String> =
            sqlx::query_scalar("SELECT county FROM counties WHERE county = $1")
                .bind(c)
                .fetch_optional(&db.pool)
                .await?;
        if found.is_none() {
            return Err(AuthError::Invalid(format!("county {c:?} does not exist")));
        }
    }
    if let Some(s) = &user.station_id {
        let county: Option<String> =
            sqlx::query_scalar("SELECT county FROM stations WHERE station_id = $1")
                .bind(s)
                .fetch_optional(&db.pool)
                .await?;
        if county.as_ref() != user.county.as_ref() {
            return Err(AuthError::Invalid(format!(
                "station {s:?} is not a station of county {:?}",
                user.county.as_deref().unwrap_or("")
            )));
        }
    }
    if let Some(a) = &user.account_id {
        let found: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM accounts WHERE account_id = $1")
                .bind(a)
                .fetch_optional(&db.pool)
                .await?;
        if found.is_none() {
            return Err(AuthError::Invalid(format!("account {a:?} does not exist")));
        }
    }
    let hash = match &user.password {
        Some(p) => Some(hash_password(p)?),
        None => None,
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO users (username, role, county, station_id, account_id, password_hash, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (username) DO NOTHING RETURNING user_id",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(&user.county)
    .bind(&user.station_id)
    .bind(&user.account_id)
    .bind(hash)
    .bind(now_ms())
    .fetch_optional(&db.pool)
    .await?
    .ok_or_else(|| AuthError::Invalid(format!("user {name:?} already exists")))?;
    Ok(id)
}

/// Sets (or replaces) a user's console password; ends their open sessions.
pub async fn set_password(db: &Db, username: &str, password: &str) -> Result<(), AuthError> {
    let hash = hash_password(password)?;
    let mut tx = db.begin_write().await?;
    let id = user_id(&mut tx, username).await?;
    sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
        .bind(hash)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    end_sessions(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// Disables a user: their tokens and sessions stop working at once. Idempotent.
pub async fn disable_user(db: &Db, username: &str) -> Result<(), AuthError> {
    let mut tx = db.begin_write().await?;
    let id = user_id(&mut tx, username).await?;
    sqlx::query(
        "UPDATE users SET disabled_at_ms = $1 WHERE user_id = $2 AND disabled_at_ms IS NULL",
    )
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    end_sessions(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// Ends every open console session of user `id`.
async fn end_sessions(conn: &mut sqlx::AnyConnection, id: i64) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE console_sessions SET ended_at_ms = $1 WHERE user_id = $2 AND ended_at_ms IS NULL",
    )
    .bind(now_ms())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn user_id(conn: &mut sqlx::AnyConnection, username: &str) -> Result<i64, AuthError> {
    sqlx::query_scalar("SELECT user_id FROM users WHERE username = $1")
        .bind(username)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| AuthError::Invalid(format!("no user {username:?}")))
}

/// A token just issued: the secret is shown once and never stored.
#[derive(Clone, Debug, Serialize)]
pub struct IssuedToken {
    pub token_id: i64,
    pub token: String,
    pub expires_at_ms: Option<i64>,
}

/// Issues an API token for `username`, valid for `days` days (None: until revoked).
pub async fn issue_token(
    db: &Db,
    username: &str,
    label: &str,
    days: Option<u32>,
) -> Result<IssuedToken, AuthError> {
    let mut conn = db.pool.acquire().await?;
    let id = user_id(&mut conn, username).await?;
    let token = random_secret("fgt_");
    let now = now_ms();
    let expires = days.map(|d| now + i64::from(d) * 86_400_000);
    let token_id: i64 = sqlx::query_scalar(
        "INSERT INTO api_tokens (user_id, token_sha256, label, created_at_ms, expires_at_ms)
         VALUES ($1, $2, $3, $4, $5) RETURNING token_id",
    )
    .bind(id)
    .bind(secret_digest(&token))
    .bind(label)
    .bind(now)
    .bind(expires)
    .fetch_one(&mut *conn)
    .await?;
    Ok(IssuedToken {
        token_id,
        token,
        expires_at_ms: expires,
    })
}

/// Revokes a token by id. Idempotent; an unknown id is an error.
pub async fn revoke_token(db: &Db, token_id: i64) -> Result<(), AuthError> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT token_id FROM api_tokens WHERE token_id = $1")
            .bind(token_id)
            .fetch_optional(&db.pool)
            .await?;
    if found.is_none() {
        return Err(AuthError::Invalid(format!("no API token #{token_id}")));
    }
    sqlx::query(
        "UPDATE api_tokens SET revoked_at_ms = $1 WHERE token_id = $2 AND revoked_at_ms IS NULL",
    )
    .bind(now_ms())
    .bind(token_id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The user behind a live token or session, with a customer's county and station taken
/// from their account.
const PRINCIPAL_SELECT: &str = "SELECT u.user_id, u.username, u.role,
        COALESCE(u.county, a.county) AS county,
        COALESCE(u.station_id, a.station_id) AS station_id,
        u.account_id
    FROM users u LEFT JOIN accounts a ON a.account_id = u.account_id";

fn principal_from(row: &sqlx::any::AnyRow, via: Via) -> Result<Principal, AuthError> {
    let role: String = row.try_get("role")?;
    Ok(Principal {
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        role: role
            .parse()
            .map_err(|e: String| AuthError::Db(DbError::Corrupt(e)))?,
        county: row.try_get("county")?,
        station_id: row.try_get("station_id")?,
        account_id: row.try_get("account_id")?,
        via,
    })
}

/// The principal for an API token, or None when it is unknown, revoked, expired, or its
/// user is disabled.
pub async fn principal_for_token(db: &Db, token: &str) -> Result<Option<Principal>, AuthError> {
    let sql = format!(
        "{PRINCIPAL_SELECT} JOIN api_tokens t ON t.user_id = u.user_id
         WHERE t.token_sha256 = $1 AND t.revoked_at_ms IS NULL
           AND (t.expires_at_ms IS NULL OR t.expires_at_ms > $2) AND u.disabled_at_ms IS NULL"
    );
    let row = sqlx::query(&sql)
        .bind(secret_digest(token))
        .bind(now_ms())
        .fetch_optional(&db.pool)
        .await?;
    row.map(|r| principal_from(&r, Via::ApiToken)).transpose()
}

/// The principal for a session cookie, or None when it is unknown, ended, expired, or its
/// user is disabled.
pub async fn principal_for_session(db: &Db, session: &str) -> Result<Option<Principal>, AuthError> {
    let sql = format!(
        "{PRINCIPAL_SELECT} JOIN console_sessions s ON s.user_id = u.user_id
         WHERE s.session_sha256 = $1 AND s.ended_at_ms IS NULL AND s.expires_at_ms > $2
           AND u.disabled_at_ms IS NULL"
    );
    let row = sqlx::query(&sql)
        .bind(secret_digest(session))
        .bind(now_ms())
        .fetch_optional(&db.pool)
        .await?;
    row.map(|r| principal_from(&r, Via::Session)).transpose()
}

/// A session just opened: `session` goes into the cookie.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub session: String,
    pub principal: Principal,
    pub expires_at_ms: i64,
}

/// A console login: rate limit first, then the argon2 check (run off the async threads),
/// then a new session. A failure is recorded for the username and the client address.
/// An unknown user costs the same argon2 work as a wrong password.
pub async fn login(
    db: &Db,
    config: &AuthConfig,
    username: &str,
    password: &str,
    client: &str,
) -> Result<NewSession, AuthError> {
    let now = now_ms();
    let window_start = now - (config.failure_window_seconds as i64) * 1000;
    // Every attempt is recorded as a failure BEFORE the password is checked, then
    // counted: attempts sent in parallel each see the ones recorded before them, so at
    // most `max_failures` passwords are checked per window however many arrive at once
    // (the k-th attempt to count sees at least k rows: its own and those counted before).
    // A refused attempt's row is removed again; a successful login removes its own.
    let attempt: i64 = sqlx::query_scalar(
        "INSERT INTO login_failures (username, client, at_ms) VALUES ($1, $2, $3) RETURNING failure_id",
    )
    .bind(username)
    .bind(client)
    .bind(now)
    .fetch_one(&db.pool)
    .await?;
    let forget_attempt = || async {
        sqlx::query("DELETE FROM login_failures WHERE failure_id = $1")
            .bind(attempt)
            .execute(&db.pool)
            .await
    };
    for (column, value) in [("username", username), ("client", client)] {
        let row = sqlx::query(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n, MIN(at_ms) AS oldest FROM login_failures
             WHERE {column} = $1 AND at_ms > $2"
        ))
        .bind(value)
        .bind(window_start)
        .fetch_one(&db.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        if n > i64::from(config.max_failures) {
            forget_attempt().await?;
            let oldest: Option<i64> = row.try_get("oldest")?;
            let free_at = oldest.unwrap_or(now) + (config.failure_window_seconds as i64) * 1000;
            return Err(AuthError::TooManyAttempts {
                retry_after_seconds: ((free_at - now).max(1000) / 1000) as u64,
            });
        }
    }
    let stored: Option<(i64, Option<String>)> = sqlx::query_as(
        "SELECT user_id, password_hash FROM users WHERE username = $1 AND disabled_at_ms IS NULL",
    )
    .bind(username)
    .fetch_optional(&db.pool)
    .await?;
    // A hash of a random password stands in for an unknown user (or one without a
    // console login), so both paths cost one argon2 check.
    static STAND_IN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let (user, phc) = match &stored {
        Some((id, Some(h))) => (Some(*id), h.clone()),
        _ => (
            None,
            STAND_IN
                .get_or_init(|| hash_password(&random_secret("")).unwrap_or_default())
                .clone(),
        ),
    };
    let pw = password.to_string();
    let ok = tokio::task::spawn_blocking(move || password_matches(&pw, &phc))
        .await
        .unwrap_or(false);
    let Some(user_id) = user.filter(|_| ok) else {
        // The attempt's row stays: it is this failure.
        tracing::warn!(username, client, "console login failed");
        return Err(AuthError::BadCredentials);
    };
    forget_attempt().await?;
    let session = random_secret("fgs_");
    let expires = now + (config.session_seconds as i64) * 1000;
    sqlx::query(
        "INSERT INTO console_sessions (session_sha256, user_id, created_at_ms, expires_at_ms)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(secret_digest(&session))
    .bind(user_id)
    .bind(now)
    .bind(expires)
    .execute(&db.pool)
    .await?;
    let principal = principal_for_session(db, &session)
        .await?
        .ok_or_else(|| AuthError::Db(DbError::Corrupt("session just opened not found".into())))?;
    tracing::info!(username, client, "console login");
    Ok(NewSession {
        session,
        principal,
        expires_at_ms: expires,
    })
}

/// Ends a session (logout). Idempotent.
pub async fn logout(db: &Db, session: &str) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE console_sessions SET ended_at_ms = $1 WHERE session_sha256 = $2 AND ended_at_ms IS NULL",
    )
    .bind(now_ms())
    .bind(secret_digest(session))
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// A user as listed by `feegate user list` and the API (no secrets).
#[derive(Clone, Debug, Serialize)]
pub struct UserRow {
    pub user_id: i64,
    pub username: String,
    pub role: String,
    pub county: Option<String>,
    pub station_id: Option<String>,
    pub account_id: Option<String>,
    pub console_login: bool,
    pub disabled: bool,
    pub live_tokens: i64,
}

/// Every user, by username.
pub async fn list_users(db: &Db) -> Result<Vec<UserRow>, AuthError> {
    let rows = sqlx::query(
        "SELECT u.user_id, u.username, u.role, u.county, u.station_id, u.account_id,
                CAST(CASE WHEN u.password_hash IS NULL THEN 0 ELSE 1 END AS BIGINT) AS console_login,
                CAST(CASE WHEN u.disabled_at_ms IS NULL THEN 0 ELSE 1 END AS BIGINT) AS disabled,
                (SELECT CAST(COUNT(*) AS BIGINT) FROM api_tokens t WHERE t.user_id = u.user_id AND t.revoked_at_ms IS NULL
                    AND (t.expires_at_ms IS NULL OR t.expires_at_ms > $1)) AS live_tokens
         FROM users u ORDER BY u.username",
    )
    .bind(now_ms())
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(UserRow {
                user_id: r.try_get("user_id")?,
                username: r.try_get("username")?,
                role: r.try_get("role")?,
                county: r.try_get("county")?,
                station_id: r.try_get("station_id")?,
                account_id: r.try_get("account_id")?,
                console_login: r.try_get::<i64, _>("console_login")? == 1,
                disabled: r.try_get::<i64, _>("disabled")? == 1,
                live_tokens: r.try_get("live_tokens")?,
            })
        })
        .collect()
}
