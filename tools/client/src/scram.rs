//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as RethinkDB uses it: the arithmetic
//! both sides share, and the client's side of the exchange.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The keys a password yields for one salt and iteration count.
pub struct Keys {
    pub client_key: [u8; 32],
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl Keys {
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Keys {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac_sha256(&salted, b"Client Key");
        Keys {
            client_key,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// The client's proof for `auth_message`: its key XOR its signature.
    pub fn client_proof(&self, auth_message: &str) -> [u8; 32] {
        let signature = hmac_sha256(&self.stored_key, auth_message.as_bytes());
        std::array::from_fn(|i| self.client_key[i] ^ signature[i])
    }

    /// The signature a genuine server sends back for `auth_message`.
    pub fn server_signature(&self, auth_message: &str) -> [u8; 32] {
        hmac_sha256(&self.server_key, auth_message.as_bytes())
    }
}

/// Random bytes from the kernel (nonces, salts, UUIDs).
pub fn random_bytes(count: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = vec![0u8; count];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .expect("the kernel's random source is readable");
    bytes
}

/// Escapes a user name for a SCRAM attribute (RFC 5802: `=` and `,`).
pub fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// The `key=value` attributes of a SCRAM message.
pub fn attribute<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .split(',')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;
    use photondb_datum::json::{base64_decode, base64_encode};

    /// The vector in `shared/design/PROTOCOL.md`, from the client's side.
    #[test]
    fn matches_the_protocol_test_vector() {
        let salt = base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = Keys::derive("", &salt, 4096);
        let client_nonce = "rOprNGfwEbeRWgbNEkqO";
        let nonce = format!("{client_nonce}%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let auth_message = format!(
            "n=admin,r={client_nonce},r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
        );
        assert_eq!(
            base64_encode(&keys.client_proof(&auth_message)),
            "OkbuESfuxuY+w/WtxXhV9p1wrKTxO8vSpKRZORUwJxY="
        );
        assert_eq!(
            base64_encode(&keys.server_signature(&auth_message)),
            "PH9dpmfOMvaWZuonGClIn310jaApnm03JsjECx/r/dw="
        );
    }

    #[test]
    fn attributes_and_names() {
        assert_eq!(attribute("r=abc,s=c2FsdA==,i=4096", "s"), Some("c2FsdA=="));
        assert_eq!(attribute("r=abc,s=x", "i"), None);
        assert_eq!(escape_name("a=b,c"), "a=3Db=2Cc");
    }
}
