//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as RethinkDB uses it: 4096
//! iterations, a 16-byte salt, channel binding `n,,`.

pub use photondb_client::scram::random_bytes;
use photondb_client::scram::{hmac_sha256 as hmac, sha256, Keys};

pub const ITERATIONS: u32 = 4096;

/// What the server keeps of a password: never the password itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCredentials {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl StoredCredentials {
    pub fn derive(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let keys = Keys::derive(password, &salt, iterations);
        StoredCredentials {
            salt,
            iterations,
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        }
    }

    /// Checks a client proof for `auth_message`; on success returns the
    /// server signature the client will verify.
    pub fn verify(&self, auth_message: &str, proof: &[u8]) -> Option<[u8; 32]> {
        if proof.len() != 32 {
            return None;
        }
        let client_signature = hmac(&self.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let candidate = sha256(&client_key);
        // Constant-time comparison: fold every byte before deciding.
        let difference = candidate
            .iter()
            .zip(self.stored_key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (difference == 0).then(|| hmac(&self.server_key, auth_message.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use photondb_datum::json::{base64_decode, base64_encode};

    /// The vector in `shared/design/PROTOCOL.md`, computed independently.
    #[test]
    fn matches_the_protocol_test_vector() {
        let salt = base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credentials = StoredCredentials::derive("", salt, 4096);
        let client_nonce = "rOprNGfwEbeRWgbNEkqO";
        let nonce = format!("{client_nonce}%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let auth_message = format!(
            "n=admin,r={client_nonce},r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
        );
        let proof = base64_decode("OkbuESfuxuY+w/WtxXhV9p1wrKTxO8vSpKRZORUwJxY=").unwrap();
        let signature = credentials
            .verify(&auth_message, &proof)
            .expect("the proof is valid");
        assert_eq!(
            base64_encode(&signature),
            "PH9dpmfOMvaWZuonGClIn310jaApnm03JsjECx/r/dw="
        );
        let mut wrong = proof.clone();
        wrong[0] ^= 1;
        assert!(credentials.verify(&auth_message, &wrong).is_none());
    }
}
