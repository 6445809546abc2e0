//! Query and response frames: `[token: u64 LE][length: u32 LE][UTF-8 JSON]`.

use serde_json::Value;

/// Queries of this size or more are refused and the connection closed.
pub const MAX_QUERY_BYTES: usize = 128 << 20;

pub const HEADER_BYTES: usize = 12;

pub fn parse_header(header: &[u8; HEADER_BYTES]) -> (u64, usize) {
    let token = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
    let length = u32::from_le_bytes(header[8..].try_into().expect("4 bytes")) as usize;
    (token, length)
}

pub fn encode_response(token: u64, body: &Value) -> Vec<u8> {
    encode_body(
        token,
        &serde_json::to_vec(body).expect("JSON values always serialize"),
    )
}

/// A response frame around JSON text written already.
pub fn encode_body(token: u64, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + json.len());
    out.extend_from_slice(&token.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
    out
}

/// Response types (`Response.ResponseType` in ql2.proto).
pub mod response_type {
    pub const SUCCESS_ATOM: u64 = 1;
    pub const SUCCESS_SEQUENCE: u64 = 2;
    pub const SUCCESS_PARTIAL: u64 = 3;
    pub const WAIT_COMPLETE: u64 = 4;
    pub const SERVER_INFO: u64 = 5;
    pub const CLIENT_ERROR: u64 = 16;
    pub const COMPILE_ERROR: u64 = 17;
    pub const RUNTIME_ERROR: u64 = 18;
}

/// Query types (`Query.QueryType`).
pub mod query_type {
    pub const START: u64 = 1;
    pub const CONTINUE: u64 = 2;
    pub const STOP: u64 = 3;
    pub const NOREPLY_WAIT: u64 = 4;
    pub const SERVER_INFO: u64 = 5;
}
