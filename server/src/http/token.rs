//! Bearer tokens: `POST /api/v1/auth/token` trades a user's credentials
//! for a JSON Web Token (HS256) that later requests send as
//! `Authorization: Bearer <token>`, so clients need not send (and the
//! server need not check, 4,096 rounds each) a password per request.
//!
//! A token names its user and expiry and is signed with
//! HMAC-SHA256(server key, the user's stored SCRAM key): changing a user's
//! password or deleting the user revokes every token issued before, and a
//! token is worthless without the server key, which lives in the data
//! directory (`http-token.key`, readable by the owner only) so tokens
//! survive restarts. HS256 is computed with the same HMAC-SHA256 the SCRAM
//! handshake uses; no other cryptography is involved.

use std::io::Write;
use std::path::Path;

use photondb_client::scram::{hmac_sha256, random_bytes};
use photondb_datum::json::{base64_decode, base64_encode};
use serde_json::{json, Value as Json};

/// Lifetime of a token unless the request asks for another.
pub const DEFAULT_LIFETIME_SECONDS: u64 = 3600;
/// The longest lifetime a request may ask for.
pub const MAX_LIFETIME_SECONDS: u64 = 7 * 24 * 3600;

/// The key every token is signed with (with the user's stored key mixed in).
#[derive(Clone)]
pub struct ServerKey([u8; 32]);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ServerKey(…)")
    }
}

impl ServerKey {
    /// A key for this process only (in-memory storage: nothing survives
    /// a restart anyway).
    pub fn ephemeral() -> ServerKey {
        ServerKey(random_bytes(32).try_into().expect("32 bytes"))
    }

    /// The key kept in `path`, made (owner-only) on first use.
    pub fn load_or_create(path: &Path) -> std::io::Result<ServerKey> {
        match std::fs::read(path) {
            Ok(bytes) => bytes.try_into().map(ServerKey).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a 32-byte key", path.display()),
                )
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = ServerKey::ephemeral();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path)?;
                file.write_all(&key.0)?;
                file.sync_all()?;
                Ok(key)
            }
            Err(error) => Err(error),
        }
    }

    fn signing_key(&self, stored_key: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.0, stored_key)
    }
}

fn base64url(bytes: &[u8]) -> String {
    base64_encode(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn from_base64url(text: &str) -> Option<Vec<u8>> {
    if text.contains(['+', '/', '=']) {
        return None;
    }
    let mut standard = text.replace('-', "+").replace('_', "/");
    while !standard.len().is_multiple_of(4) {
        standard.push('=');
    }
    base64_decode(&standard).ok()
}

/// `header.payload` of a token, both base64url.
fn signed_part(user: &str, issued: u64, expires: u64) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let claims = json!({"sub": user, "iat": issued, "exp": expires, "iss": "photondb"});
    format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    )
}

/// A token for `user` (whose stored SCRAM key is `stored_key`), valid from
/// `now` for `lifetime` seconds.
pub fn issue(key: &ServerKey, user: &str, stored_key: &[u8], now: u64, lifetime: u64) -> String {
    let signed = signed_part(user, now, now + lifetime);
    let signature = hmac_sha256(&key.signing_key(stored_key), signed.as_bytes());
    format!("{signed}.{}", base64url(&signature))
}

/// Why a token is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    UnknownUser,
    BadSignature,
    Expired,
}

impl Refused {
    pub fn message(&self) -> &'static str {
        match self {
            Refused::Malformed => "The bearer token is not a token this server issued.",
            Refused::UnknownUser | Refused::BadSignature => {
                "The bearer token is not valid (its user's password may have changed)."
            }
            Refused::Expired => {
                "The bearer token has expired; ask /api/v1/auth/token for a new one."
            }
        }
    }
}

/// The user a token was issued to, if it is genuine and unexpired;
/// `stored_key_of` looks a user's current stored key up.
pub fn verify(
    key: &ServerKey,
    token: &str,
    now: u64,
    stored_key_of: impl FnOnce(&str) -> Option<Vec<u8>>,
) -> Result<String, Refused> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused::Malformed);
    };
    let header: Json = serde_json::from_slice(&from_base64url(header).ok_or(Refused::Malformed)?)
        .map_err(|_| Refused::Malformed)?;
    // Only what this server issues: no `alg: none`, no other algorithm.
    if header["alg"] != "HS256" {
        return Err(Refused::Malformed);
    }
    let claims: Json = serde_json::from_slice(&from_base64url(claims).ok_or(Refused::Malformed)?)
        .map_err(|_| Refused::Malformed)?;
    let (Some(user), Some(expires)) = (claims["sub"].as_str(), claims["exp"].as_u64()) else {
        return Err(Refused::Malformed);
    };
    let signature = from_base64url(signature).ok_or(Refused::Malformed)?;
    let stored_key = stored_key_of(user).ok_or(Refused::UnknownUser)?;
    let signed = &token[..token.rfind('.').expect("three parts")];
    let expected = hmac_sha256(&key.signing_key(&stored_key), signed.as_bytes());
    // Constant time: fold every byte before deciding.
    let differs = signature.len() != expected.len()
        || signature
            .iter()
            .zip(&expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0;
    if differs {
        return Err(Refused::BadSignature);
    }
    if now >= expires {
        return Err(Refused::Expired);
    }
    Ok(user.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_expiry_and_only_with_their_key_and_user_key() {
        let key = ServerKey::ephemeral();
        let token = issue(&key, "ann", b"stored-1", 1000, 60);
        let lookup =
            |stored: &'static [u8]| move |user: &str| (user == "ann").then(|| stored.to_vec());
        assert_eq!(
            verify(&key, &token, 1059, lookup(b"stored-1")),
            Ok("ann".into())
        );
        assert_eq!(
            verify(&key, &token, 1060, lookup(b"stored-1")),
            Err(Refused::Expired)
        );
        // A password change (new stored key) revokes it.
        assert_eq!(
            verify(&key, &token, 1001, lookup(b"stored-2")),
            Err(Refused::BadSignature)
        );
        // Another server's key does not verify it.
        assert_eq!(
            verify(&ServerKey::ephemeral(), &token, 1001, lookup(b"stored-1")),
            Err(Refused::BadSignature)
        );
        // Claims edited to another user or a later expiry break the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = base64url(br#"{"sub":"ann","iat":1000,"exp":99999,"iss":"photondb"}"#);
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(
            verify(&key, &forged, 1001, lookup(b"stored-1")),
            Err(Refused::BadSignature)
        );
        // `alg: none` and garbage are malformed.
        let none = format!("{}.{}.", base64url(br#"{"alg":"none"}"#), parts[1]);
        assert_eq!(
            verify(&key, &none, 1001, lookup(b"stored-1")),
            Err(Refused::Malformed)
        );
        for garbage in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            assert_eq!(
                verify(&key, garbage, 1001, lookup(b"stored-1")),
                Err(Refused::Malformed)
            );
        }
        assert_eq!(
            verify(&key, &token, 1001, |_| None),
            Err(Refused::UnknownUser)
        );
    }

    #[test]
    fn the_key_file_is_made_once_and_read_back() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("http-token.key");
        let made = ServerKey::load_or_create(&path).unwrap();
        let again = ServerKey::load_or_create(&path).unwrap();
        assert_eq!(made.0, again.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(ServerKey::load_or_create(&path).is_err());
    }
}
