//! The V1_0 handshake: magic number, then NUL-terminated JSON messages
//! carrying a SCRAM-SHA-256 exchange.

use std::collections::HashMap;

use photondb_datum::json::{base64_decode, base64_encode};
use photondb_runtime::Engine;
use photondb_storage::catalog::UserConfig;
use serde_json::{json, Value};

use super::scram::{random_bytes, StoredCredentials, ITERATIONS};
use crate::transport::Transport;

pub const MAGIC_V1_0: u32 = 0x34c2_bdc3;
const MESSAGE_LIMIT_BYTES: usize = 16 * 1024;

/// The server version drivers are told.
pub const SERVER_VERSION: &str = concat!("2.4.4-photondb-", env!("CARGO_PKG_VERSION"));

/// SCRAM credentials of a new password, as the catalog stores them.
pub fn user_with_password(name: &str, password: &str) -> UserConfig {
    let credentials = StoredCredentials::derive(password, random_bytes(16), ITERATIONS);
    UserConfig {
        name: name.to_owned(),
        salt: credentials.salt,
        iterations: credentials.iterations,
        stored_key: credentials.stored_key.to_vec(),
        server_key: credentials.server_key.to_vec(),
        has_password: !password.is_empty(),
        permissions: Default::default(),
    }
}

fn credentials_of(user: &UserConfig) -> Option<StoredCredentials> {
    Some(StoredCredentials {
        salt: user.salt.clone(),
        iterations: user.iterations,
        stored_key: user.stored_key.clone().try_into().ok()?,
        server_key: user.server_key.clone().try_into().ok()?,
    })
}

/// Why a handshake ended without a session. The message has been sent to
/// the client (when there was one to send) and the connection must close.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the fields are read through Debug, in the connection log"
)]
pub enum Failure {
    Io(std::io::Error),
    Refused { code: u64, message: String },
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Io(error)
    }
}

/// Runs the handshake; returns the authenticated user name.
pub async fn run(transport: &mut Transport, engine: &Engine) -> Result<String, Failure> {
    let magic = transport.read_exact(4).await?;
    let magic = u32::from_le_bytes(magic.try_into().expect("4 bytes"));
    if magic != MAGIC_V1_0 {
        let message =
            "ERROR: Received an unsupported protocol version. This port is for RethinkDB queries. \
                       Does your client driver version not match the server?\n\0";
        transport.write_all(message.as_bytes()).await?;
        return Err(Failure::Refused {
            code: 0,
            message: format!("unsupported protocol magic {magic:#x}"),
        });
    }
    send(
        transport,
        &json!({
            "success": true,
            "min_protocol_version": 0,
            "max_protocol_version": 0,
            "server_version": SERVER_VERSION,
        }),
    )
    .await?;

    let first = receive(transport).await?;
    if first.get("protocol_version").and_then(Value::as_u64) != Some(0) {
        return refuse(transport, 3, "Unsupported protocol version.").await;
    }
    if first.get("authentication_method").and_then(Value::as_str) != Some("SCRAM-SHA-256") {
        return refuse(transport, 2, "Unsupported authentication method.").await;
    }
    let Some(client_first) = first.get("authentication").and_then(Value::as_str) else {
        return refuse(transport, 1, "Missing authentication field.").await;
    };
    let Some(client_first_bare) = client_first.strip_prefix("n,,") else {
        return refuse(transport, 15, "Channel binding is not supported.").await;
    };
    let attributes = parse_attributes(client_first_bare);
    let (Some(user), Some(client_nonce)) = (attributes.get("n"), attributes.get("r")) else {
        return refuse(transport, 1, "Malformed SCRAM client-first message.").await;
    };
    let user = user.replace("=2C", ",").replace("=3D", "=");
    // An unknown user goes through the whole exchange with made-up
    // credentials, so the reply does not reveal which users exist.
    let known = engine.user(&user).as_ref().and_then(credentials_of);
    let credentials = known.clone().unwrap_or_else(|| {
        StoredCredentials::derive(
            &base64_encode(&random_bytes(16)),
            random_bytes(16),
            ITERATIONS,
        )
    });
    let nonce = format!("{client_nonce}{}", base64_encode(&random_bytes(18)));
    let server_first = format!(
        "r={nonce},s={},i={}",
        base64_encode(&credentials.salt),
        credentials.iterations
    );
    send(
        transport,
        &json!({ "success": true, "authentication": server_first }),
    )
    .await?;

    let last = receive(transport).await?;
    let Some(client_final) = last.get("authentication").and_then(Value::as_str) else {
        return refuse(transport, 1, "Missing authentication field.").await;
    };
    let Some((without_proof, proof)) = client_final.rsplit_once(",p=") else {
        return refuse(transport, 1, "Malformed SCRAM client-final message.").await;
    };
    let final_attributes = parse_attributes(without_proof);
    if final_attributes.get("c").map(String::as_str) != Some("biws") {
        return refuse(transport, 15, "Channel binding is not supported.").await;
    }
    if final_attributes.get("r") != Some(&nonce) {
        return refuse(transport, 1, "Nonce mismatch.").await;
    }
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = base64_decode(proof)
        .ok()
        .and_then(|proof| credentials.verify(&auth_message, &proof));
    match (known, signature) {
        (Some(_), Some(signature)) => {
            send(transport, &json!({ "success": true, "authentication": format!("v={}", base64_encode(&signature)) })).await?;
            Ok(user)
        }
        (None, _) => refuse(transport, 17, "Unknown user").await,
        (Some(_), None) => refuse(transport, 12, "Wrong password").await,
    }
}

fn parse_attributes(text: &str) -> HashMap<String, String> {
    text.split(',')
        .filter_map(|part| part.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

async fn send(transport: &mut Transport, message: &Value) -> Result<(), Failure> {
    let mut bytes = serde_json::to_vec(message).expect("JSON values always serialize");
    bytes.push(0);
    transport.write_all(&bytes).await?;
    Ok(())
}

async fn receive(transport: &mut Transport) -> Result<Value, Failure> {
    let bytes = transport.read_until_nul(MESSAGE_LIMIT_BYTES).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => {
            let _ = send(
                transport,
                &json!({ "success": false, "error": "Expected a JSON object.", "error_code": 4 }),
            )
            .await;
            Err(Failure::Refused {
                code: 4,
                message: "malformed handshake JSON".into(),
            })
        }
    }
}

async fn refuse<T>(transport: &mut Transport, code: u64, message: &str) -> Result<T, Failure> {
    let _ = send(
        transport,
        &json!({ "success": false, "error": message, "error_code": code }),
    )
    .await;
    Err(Failure::Refused {
        code,
        message: message.to_owned(),
    })
}
