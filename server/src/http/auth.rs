//! Who an HTTP request comes from: a bearer token (`token.rs`), or HTTP
//! Basic, checked against the same
//! users and SCRAM-SHA-256 credentials as the driver port (the password is
//! derived with the stored salt and compared with the stored key; the
//! server never keeps passwords). While `admin` has no password, as on a
//! fresh server, requests without credentials are let through, as the
//! driver port lets `admin` in with an empty password. Health probes and
//! metrics are not behind this.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Extension, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use photondb_client::scram::sha256;
use serde_json::json;

use super::{error_body, token, Shared};
use crate::protocol::scram::StoredCredentials;

/// Checked credentials, so a client sending the same password on every
/// request costs one key derivation, not one per request: the hash of
/// `user:password` → the stored key it matched (a password change makes
/// the entry stale, and it is checked again).
#[derive(Default)]
pub(super) struct CheckedCredentials {
    keys: Mutex<HashMap<[u8; 32], Vec<u8>>>,
}

/// Entries kept before the cache starts over (a bound on memory when
/// clients send many wrong passwords… which are never cached anyway).
const CACHE_ENTRIES: usize = 10_000;

fn unauthorized(message: &str) -> Response {
    let body = error_body("ReqlAuthError", message, json!([]));
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Basic realm=\"photondb\""),
            (header::CONTENT_TYPE, "application/json"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// `user:password` of a Basic `Authorization` header.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = photondb_datum::json::base64_decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn password_matches(shared: &Shared, user: &str, password: &str) -> bool {
    let Some(config) = shared.engine.user(user) else {
        return false;
    };
    let fingerprint = sha256(format!("{user}:{password}").as_bytes());
    if let Some(key) = shared
        .credentials
        .keys
        .lock()
        .expect("credentials lock")
        .get(&fingerprint)
    {
        if *key == config.stored_key {
            return true;
        }
    }
    let derived = StoredCredentials::derive(password, config.salt.clone(), config.iterations);
    // Constant-time comparison: fold every byte before deciding.
    let matches = derived.stored_key.len() == config.stored_key.len()
        && derived
            .stored_key
            .iter()
            .zip(&config.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if matches {
        let mut keys = shared.credentials.keys.lock().expect("credentials lock");
        if keys.len() >= CACHE_ENTRIES {
            keys.clear();
        }
        keys.insert(fingerprint, config.stored_key.clone());
    }
    matches
}

/// The user a request was let in as, for the handlers behind
/// [`require_user`].
#[derive(Clone, Debug)]
pub(super) struct AuthenticatedUser(pub String);

fn seconds_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The middleware in front of the API routes: HTTP Basic or a bearer token
/// from `/api/v1/auth/token`, or nothing while `admin` has no password.
pub(super) async fn require_user(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let user = match authorization {
        None => {
            let open = shared
                .engine
                .user("admin")
                .is_some_and(|admin| !admin.has_password);
            if !open {
                return unauthorized(
                    "Authentication required (HTTP Basic as a user of this server, or a bearer token).",
                );
            }
            "admin".to_owned()
        }
        Some(value) => match bearer_token(&value) {
            Some(token) => {
                let verified = token::verify(&shared.token_key, token, seconds_now(), |user| {
                    shared.engine.user(user).map(|config| config.stored_key)
                });
                match verified {
                    Ok(user) => user,
                    Err(refused) => return unauthorized(refused.message()),
                }
            }
            None => {
                let Some((user, password)) = basic_credentials(&value) else {
                    return unauthorized(
                        "Expected `Authorization: Basic <base64 of user:password>` or `Bearer <token>`.",
                    );
                };
                // Derivation takes a while (4,096 rounds): off the async thread.
                let checking = shared.clone();
                let name = user.clone();
                let checked = tokio::task::spawn_blocking(move || {
                    password_matches(&checking, &name, &password)
                })
                .await
                .unwrap_or(false);
                if !checked {
                    return unauthorized("Wrong password or unknown user.");
                }
                user
            }
        },
    };
    request
        .extensions_mut()
        .insert(AuthenticatedUser(user.clone()));
    // Queries the handler runs take the user from here (`current_user`).
    USER.scope(Arc::from(user.as_str()), next.run(request))
        .await
}

tokio::task_local! {
    /// The user of the request being handled, for the queries it runs.
    static USER: Arc<str>;
}

/// Runs `future` (a WebSocket's task, which outlives its request) as
/// `user`.
pub(super) async fn as_user<F: std::future::Future>(
    user: Option<Arc<str>>,
    future: F,
) -> F::Output {
    match user {
        Some(user) => USER.scope(user, future).await,
        None => future.await,
    }
}

/// The user the current request authenticated as; `None` outside a
/// request behind [`require_user`] (which has nothing to run then).
pub(super) fn current_user() -> Option<Arc<str>> {
    USER.try_with(Arc::clone).ok()
}

fn bearer_token(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// `POST /api/v1/auth/token`: a bearer token for the user the request
/// authenticated as. Body (optional): `{"expires_in": seconds}`.
pub(super) async fn issue_token(
    State(shared): State<Arc<Shared>>,
    Extension(AuthenticatedUser(user)): Extension<AuthenticatedUser>,
    body: axum::body::Bytes,
) -> Response {
    let lifetime = if body.iter().all(u8::is_ascii_whitespace) {
        token::DEFAULT_LIFETIME_SECONDS
    } else {
        let asked = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .filter(serde_json::Value::is_object)
            .and_then(|request| match request.get("expires_in") {
                None => Some(token::DEFAULT_LIFETIME_SECONDS),
                Some(seconds) => seconds.as_u64(),
            });
        match asked {
            Some(seconds) if (1..=token::MAX_LIFETIME_SECONDS).contains(&seconds) => seconds,
            _ => {
                return super::json_response(
                    StatusCode::BAD_REQUEST,
                    error_body(
                        "ReqlQueryLogicError",
                        &format!(
                            "Expected an object whose `expires_in`, if given, is a whole number of seconds from 1 to {}.",
                            token::MAX_LIFETIME_SECONDS
                        ),
                        json!([]),
                    ),
                )
            }
        }
    };
    let Some(config) = shared.engine.user(&user) else {
        return unauthorized("Wrong password or unknown user.");
    };
    let token = token::issue(
        &shared.token_key,
        &user,
        &config.stored_key,
        seconds_now(),
        lifetime,
    );
    super::json_response(
        StatusCode::OK,
        json!({"token": token, "token_type": "Bearer", "expires_in": lifetime, "user": user}),
    )
}
