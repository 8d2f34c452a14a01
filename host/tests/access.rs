//! Who is asking: API tokens, console logins and sessions, through a real HTTP server on
//! loopback (an axum router with the `Principal` extractor), on SQLite and PostgreSQL.
//! The role table itself is specified in `auth/tests.rs`; the API's per-endpoint
//! boundaries in `api.rs`.

mod common;

use axum::Json;
use axum::Router;
use axum::routing::get;
use feegate::auth::Principal;
use feegate::auth::extract::AuthState;
use feegate::auth::store::{self, AuthConfig, AuthError, NewUser};
use feegate::auth::{Role, Via};
use feegate::db::Db;

const PASSWORD: &str = "mulberry-lantern-42";

async fn seeded(url: &str) -> Db {
    common::seeded_db(url, 3).await
}

fn user(name: &str, role: Role) -> NewUser {
    let mut u = NewUser {
        username: name.into(),
        role: Some(role),
        password: Some(PASSWORD.into()),
        ..NewUser::default()
    };
    match role {
        Role::CountyEngineer => u.county = Some("xianyou".into()),
        Role::StationStaff => {
            u.county = Some("xianyou".into());
            u.station_id = Some("XY-BT".into());
        }
        Role::Customer => u.account_id = Some("A1".into()),
        _ => {}
    }
    u
}

/// A server on loopback whose `/who` answers the caller's principal (GET and POST) and
/// `/maybe` whether there is one. Returns its base URL.
async fn serve(db: &Db, config: AuthConfig) -> String {
    async fn who(p: Principal) -> Json<Principal> {
        Json(p)
    }
    async fn maybe(p: Option<Principal>) -> String {
        p.map_or("nobody".into(), |p| p.username)
    }
    let app = Router::new()
        .route("/who", get(who).post(who))
        .route("/maybe", get(maybe))
        .with_state(AuthState {
            db: db.clone(),
            config,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn status_and_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (
        status,
        body.get("code")
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .to_string(),
    )
}

async fn tokens_live_and_die(url: &str) {
    let db = seeded(url).await;
    store::create_user(&db, &user("ops", Role::Operations))
        .await
        .unwrap();
    store::create_user(&db, &user("cust", Role::Customer))
        .await
        .unwrap();
    let base = serve(&db, AuthConfig::default()).await;
    let http = reqwest::Client::new();
    let ask = |token: &str| http.get(format!("{base}/who")).bearer_auth(token).send();

    let ops = store::issue_token(&db, "ops", "test", None).await.unwrap();
    let r = ask(&ops.token).await.unwrap();
    assert_eq!(r.status(), 200);
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["username"], "ops");
    assert_eq!(p["role"], "operations");
    assert_eq!(p["via"], "api-token");

    // A customer's county and station are those of their account.
    let cust = store::issue_token(&db, "cust", "app", Some(30))
        .await
        .unwrap();
    let p: serde_json::Value = ask(&cust.token).await.unwrap().json().await.unwrap();
    assert_eq!(p["account_id"], "A1");
    assert_eq!(p["county"], "xianyou");
    assert_eq!(p["station_id"], "XY-BT");

    // Only the hash is stored.
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_sha256 FROM api_tokens")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(stored.iter().all(|h| h.len() == 64 && !h.contains("fgt_")));
    assert!(!stored.contains(&ops.token));

    // No credentials, a malformed header, an unknown token: 401 with a JSON code.
    let r = http.get(format!("{base}/who")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"feegate\"");
    assert_eq!(status_and_code(r).await, (401, "unauthenticated".into()));
    let r = http
        .get(format!("{base}/who"))
        .header("authorization", format!("Basic {}", ops.token))
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (401, "unauthenticated".into()));
    let r = ask("fgt_not-a-token").await.unwrap();
    assert_eq!(status_and_code(r).await, (401, "unauthenticated".into()));
    // `Option<Principal>` is None for dead credentials rather than an error.
    let r = http
        .get(format!("{base}/maybe"))
        .bearer_auth("fgt_not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "nobody");

    // Revoked: refused at once.
    store::revoke_token(&db, ops.token_id).await.unwrap();
    assert_eq!(ask(&ops.token).await.unwrap().status(), 401);
    // Expired (0 days: expires as it is issued).
    let expired = store::issue_token(&db, "cust", "x", Some(0)).await.unwrap();
    assert_eq!(ask(&expired.token).await.unwrap().status(), 401);
    // A disabled user's live token stops working.
    assert_eq!(ask(&cust.token).await.unwrap().status(), 200);
    store::disable_user(&db, "cust").await.unwrap();
    assert_eq!(ask(&cust.token).await.unwrap().status(), 401);
}

#[tokio::test]
async fn api_tokens_authenticate_until_revoked_expired_or_disabled_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    tokens_live_and_die(&format!("sqlite://{}/a.db", dir.path().display())).await;
}

#[tokio::test]
async fn api_tokens_authenticate_until_revoked_expired_or_disabled_postgres() {
    let Some(pg) = common::pg_database("access_tokens").await else {
        return;
    };
    tokens_live_and_die(&pg.url).await;
}

#[tokio::test]
async fn a_console_session_works_until_logout_and_refuses_foreign_origins() {
    let Some(tdb) =
        common::test_database("a_console_session_works_until_logout_and_refuses_foreign_origins")
            .await
    else {
        return;
    };
    let db = seeded(&tdb.url).await;
    store::create_user(&db, &user("staff", Role::StationStaff))
        .await
        .unwrap();
    let config = AuthConfig::default();
    let base = serve(&db, config.clone()).await;
    let host = base.trim_start_matches("http://").to_string();

    let s = store::login(&db, &config, "staff", PASSWORD, "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(s.principal.role, Role::StationStaff);
    assert_eq!(s.principal.via, Via::Session);
    let cookie = feegate::auth::extract::session_cookie(s.session.clone(), &config);
    let text = cookie.to_string();
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=28800",
    ] {
        assert!(text.contains(attr), "{text} lacks {attr}");
    }
    let cookie_header = format!("feegate_session={}", s.session);
    let http = reqwest::Client::new();
    let get_who = http
        .get(format!("{base}/who"))
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap();
    assert_eq!(get_who.status(), 200);

    // A change through the cookie needs an Origin naming this server.
    let post = |origin: Option<&str>| {
        let mut r = http
            .post(format!("{base}/who"))
            .header("cookie", &cookie_header);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    assert_eq!(
        status_and_code(post(None).await.unwrap()).await,
        (403, "forbidden".into())
    );
    assert_eq!(
        status_and_code(post(Some("https://evil.example")).await.unwrap()).await,
        (403, "forbidden".into())
    );
    assert_eq!(
        post(Some(&format!("http://{host}")))
            .await
            .unwrap()
            .status(),
        200
    );

    // Logout ends it; so does a new password for the user's other sessions.
    store::logout(&db, &s.session).await.unwrap();
    let r = http
        .get(format!("{base}/who"))
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let again = store::login(&db, &config, "staff", PASSWORD, "127.0.0.1")
        .await
        .unwrap();
    assert!(
        store::principal_for_session(&db, &again.session)
            .await
            .unwrap()
            .is_some()
    );
    store::set_password(&db, "staff", "a-brand-new-passphrase")
        .await
        .unwrap();
    assert!(
        store::principal_for_session(&db, &again.session)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn failed_logins_are_limited_per_username_and_per_client() {
    let Some(tdb) =
        common::test_database("failed_logins_are_limited_per_username_and_per_client").await
    else {
        return;
    };
    let db = seeded(&tdb.url).await;
    store::create_user(&db, &user("auditor", Role::Auditor))
        .await
        .unwrap();
    store::create_user(&db, &user("engineer", Role::CountyEngineer))
        .await
        .unwrap();
    let config = AuthConfig {
        max_failures: 3,
        ..AuthConfig::default()
    };
    // Wrong passwords, and an unknown user, are the same answer.
    for _ in 0..3 {
        let e = store::login(&db, &config, "auditor", "wrong-password-here", "10.0.0.1")
            .await
            .unwrap_err();
        assert!(matches!(e, AuthError::BadCredentials), "{e}");
    }
    let e = store::login(&db, &config, "ghost", PASSWORD, "10.0.0.9")
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::BadCredentials), "{e}");
    // The fourth try is refused before the password is looked at, even the right one,
    // from any address.
    for client in ["10.0.0.1", "10.0.0.2"] {
        match store::login(&db, &config, "auditor", PASSWORD, client).await {
            Err(AuthError::TooManyAttempts {
                retry_after_seconds,
            }) => assert!((1..=900).contains(&retry_after_seconds)),
            other => panic!("expected the limit, got {other:?}"),
        }
    }
    // The address that failed three times is limited for other usernames too.
    assert!(matches!(
        store::login(&db, &config, "engineer", PASSWORD, "10.0.0.1").await,
        Err(AuthError::TooManyAttempts { .. })
    ));
    // Another user from another address is not.
    let ok = store::login(&db, &config, "engineer", PASSWORD, "10.0.0.3")
        .await
        .unwrap();
    assert_eq!(ok.principal.county.as_deref(), Some("xianyou"));
    // Attempts sent all at once are limited too: at most `max_failures` passwords are
    // checked, the rest refused before argon2 runs.
    store::create_user(&db, &user("flooded", Role::Auditor))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (db, config) = (db.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            store::login(
                &db,
                &config,
                "flooded",
                "wrong-password-here",
                &format!("10.1.0.{i}"),
            )
            .await
        }));
    }
    let mut checked = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(AuthError::BadCredentials) => checked += 1,
            Err(AuthError::TooManyAttempts { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(
        checked <= 3,
        "{checked} passwords checked in parallel, limit 3"
    );
    // (All twenty may be refused: each records its attempt before counting, so when all
    // record first, all see twenty. Refusing is the safe side.)
    // Passwords are stored as argon2id PHC strings.
    let phc: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'auditor'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
}

#[tokio::test]
async fn users_are_refused_a_scope_their_role_does_not_have() {
    let Some(tdb) =
        common::test_database("users_are_refused_a_scope_their_role_does_not_have").await
    else {
        return;
    };
    let db = seeded(&tdb.url).await;
    let cases: Vec<(NewUser, &str)> = vec![
        (
            NewUser {
                county: None,
                ..user("e", Role::CountyEngineer)
            },
            "needs --county",
        ),
        (
            NewUser {
                county: Some("xianyou".into()),
                ..user("o", Role::Operations)
            },
            "takes no --county",
        ),
        (
            NewUser {
                station_id: Some("NOPE".into()),
                ..user("s", Role::StationStaff)
            },
            "is not a station of county",
        ),
        (
            NewUser {
                account_id: Some("A999".into()),
                ..user("c", Role::Customer)
            },
            "does not exist",
        ),
        (
            NewUser {
                password: Some("short".into()),
                ..user("a", Role::Auditor)
            },
            "at least 12 characters",
        ),
        (user("bad name!", Role::Auditor), "username"),
    ];
    for (u, needle) in cases {
        let e = store::create_user(&db, &u).await.unwrap_err().to_string();
        assert!(e.contains(needle), "{}: {e}", u.username);
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing half-created");
}
