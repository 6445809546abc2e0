//! Databases, tables and documents as REST resources. Each request is
//! turned into the ReQL term a driver would send and evaluated like one, so
//! the rules (names, primary keys, conflicts, durability) are ReQL's.
//!
//! ```text
//! GET    /api/v1/dbs                                  names
//! POST   /api/v1/dbs                     {"name"}     201
//! DELETE /api/v1/dbs/{db}                             204 | 404
//! GET    /api/v1/dbs/{db}/tables                      names | 404
//! POST   /api/v1/dbs/{db}/tables         {"name", "primary_key"?, "durability"?}  201
//! DELETE /api/v1/dbs/{db}/tables/{table}              204 | 404
//! GET    /api/v1/dbs/{db}/tables/{table}/docs?limit=N&cursor=C
//!                                        {"docs": […], "cursor": C | null}
//! POST   /api/v1/dbs/{db}/tables/{table}/docs  document or array  201 | 409
//! GET    /api/v1/dbs/{db}/tables/{table}/docs/{id}    200 | 404
//! PUT    …/docs/{id}                     replaces (the body's key must match)
//! PATCH  …/docs/{id}                     merges, as `update`
//! DELETE …/docs/{id}                                  204 | 404
//! ```
//!
//! A document id in a path is a number when it reads as one, else a
//! string. The listing cursor is opaque: the base64 of the last key's JSON.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use photondb_datum::document;
use photondb_datum::json::{base64_decode, base64_encode, from_json};
use photondb_runtime::partition_of;
use photondb_storage::Backend;
use serde_json::{json, Value as Json};

use super::{auth, error_body, json_response, run_on_shard, status_of, QueryFailure, Shared};
use crate::metrics::metrics;
use crate::reql::error::ErrorClass;
use crate::reql::eval::primary_key_bytes;
use crate::reql::permission;
use crate::reql::term_type as kind;

/// Documents a listing returns when no `limit` is given, and at most.
const DEFAULT_PAGE: u64 = 100;
const MAX_PAGE: u64 = 10_000;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/dbs", get(list_databases).post(create_database))
        .route("/api/v1/dbs/{db}", axum::routing::delete(drop_database))
        .route(
            "/api/v1/dbs/{db}/tables",
            get(list_tables).post(create_table),
        )
        .route(
            "/api/v1/dbs/{db}/tables/{table}",
            axum::routing::delete(drop_table),
        )
        .route(
            "/api/v1/dbs/{db}/tables/{table}/docs",
            get(list_documents).post(insert_documents),
        )
        .route(
            "/api/v1/dbs/{db}/tables/{table}/docs/{id}",
            get(get_document)
                .put(replace_document)
                .patch(update_document)
                .delete(delete_document),
        )
}

fn term(term_type: u64, args: Vec<Json>) -> Json {
    json!([term_type, args])
}

fn term_with(term_type: u64, args: Vec<Json>, optargs: Json) -> Json {
    json!([term_type, args, optargs])
}

fn database(name: &str) -> Json {
    term(kind::DB, vec![json!(name)])
}

fn table(db: &str, name: &str) -> Json {
    term(kind::TABLE, vec![database(db), json!(name)])
}

/// A literal value inside a term (arrays must not read as terms).
fn literal(value: Json) -> Json {
    match value {
        Json::Array(_) => json!([kind::DATUM, value]),
        other => other,
    }
}

fn document_key(id: &str) -> Json {
    id.parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
        .map_or_else(|| json!(id), |number| json!(number))
}

/// A query failure as a response: a missing database, table or document
/// is 404; anything else by its class.
fn failure(error: QueryFailure) -> Response {
    let (class, message, backtrace) = error;
    let status = if class == ErrorClass::OpFailed && message.ends_with("does not exist.") {
        StatusCode::NOT_FOUND
    } else {
        status_of(class)
    };
    json_response(status, error_body(class.driver_name(), &message, backtrace))
}

fn bad_request(message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        error_body("ReqlClientError", message, json!([])),
    )
}

/// The JSON body of a request: 415 without a JSON content type, 400 (with
/// where) when it does not parse.
fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Json, Response> {
    let json_content = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !json_content {
        return Err(json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error_body(
                "ReqlClientError",
                "Expected a JSON body (Content-Type: application/json).",
                json!([]),
            ),
        ));
    }
    serde_json::from_slice(body).map_err(|error| {
        bad_request(&format!(
            "Malformed JSON at line {}, column {}: {error}",
            error.line(),
            error.column()
        ))
    })
}

async fn run(shared: &Shared, query: Json) -> Result<Json, Response> {
    run_on_shard(shared, query, serde_json::Map::new())
        .await
        .map_err(failure)
}

/// A write's summary as a response: conflicts are 409, other per-document
/// errors 400.
fn write_summary(summary: Json, success: StatusCode) -> Response {
    if summary["errors"].as_u64().unwrap_or(0) > 0 {
        let message = summary["first_error"]
            .as_str()
            .unwrap_or("The write failed.")
            .to_owned();
        let status = if message.starts_with("Duplicate primary key") {
            StatusCode::CONFLICT
        } else {
            StatusCode::BAD_REQUEST
        };
        return json_response(
            status,
            json!({"error": {"type": "ReqlOpFailedError", "message": message, "backtrace": []}, "result": summary}),
        );
    }
    json_response(success, summary)
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn list_databases(State(shared): State<Arc<Shared>>) -> Response {
    match run(&shared, term(kind::DB_LIST, vec![])).await {
        Ok(names) => json_response(StatusCode::OK, names),
        Err(response) => response,
    }
}

async fn create_database(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = async {
        let request = json_body(&headers, &body)?;
        let Some(name) = request.get("name").and_then(Json::as_str) else {
            return Err(bad_request("Expected an object with a string `name`."));
        };
        let result = run(&shared, term(kind::DB_CREATE, vec![json!(name)])).await?;
        Ok(json_response(
            StatusCode::CREATED,
            result["config_changes"][0]["new_val"].clone(),
        ))
    }
    .await;
    response.unwrap_or_else(|response| response)
}

async fn drop_database(State(shared): State<Arc<Shared>>, Path(db): Path<String>) -> Response {
    match run(&shared, term(kind::DB_DROP, vec![json!(db)])).await {
        Ok(_) => no_content(),
        Err(response) => response,
    }
}

async fn list_tables(State(shared): State<Arc<Shared>>, Path(db): Path<String>) -> Response {
    match run(&shared, term(kind::TABLE_LIST, vec![database(&db)])).await {
        Ok(names) => json_response(StatusCode::OK, names),
        Err(response) => response,
    }
}

async fn create_table(
    State(shared): State<Arc<Shared>>,
    Path(db): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = async {
        let request = json_body(&headers, &body)?;
        let Some(name) = request.get("name").and_then(Json::as_str) else {
            return Err(bad_request("Expected an object with a string `name`."));
        };
        let mut optargs = serde_json::Map::new();
        for option in ["primary_key", "durability"] {
            if let Some(value) = request.get(option) {
                optargs.insert(option.into(), value.clone());
            }
        }
        let result = run(
            &shared,
            term_with(
                kind::TABLE_CREATE,
                vec![database(&db), json!(name)],
                Json::Object(optargs),
            ),
        )
        .await?;
        Ok(json_response(
            StatusCode::CREATED,
            result["config_changes"][0]["new_val"].clone(),
        ))
    }
    .await;
    response.unwrap_or_else(|response| response)
}

async fn drop_table(
    State(shared): State<Arc<Shared>>,
    Path((db, name)): Path<(String, String)>,
) -> Response {
    match run(
        &shared,
        term(kind::TABLE_DROP, vec![database(&db), json!(name)]),
    )
    .await
    {
        Ok(_) => no_content(),
        Err(response) => response,
    }
}

async fn list_documents(
    State(shared): State<Arc<Shared>>,
    Path((db, name)): Path<(String, String)>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Response {
    let response = async {
        let limit = match parameters.get("limit") {
            None => DEFAULT_PAGE,
            Some(text) => match text.parse::<u64>() {
                Ok(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
                _ => {
                    return Err(bad_request(&format!(
                        "`limit` must be a whole number from 1 to {MAX_PAGE}."
                    )))
                }
            },
        };
        // Rows come in primary-key order: a page starts after the last key
        // of the one before, so pages never repeat or skip a row that
        // stays put.
        let after = match parameters.get("cursor") {
            None => None,
            Some(cursor) => {
                let decoded = base64_decode(cursor)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Json>(&bytes).ok());
                match decoded {
                    Some(key) => Some(key),
                    None => return Err(bad_request("`cursor` is not one this server gave out.")),
                }
            }
        };
        let rows = match after {
            None => table(&db, &name),
            Some(key) => term_with(
                kind::BETWEEN,
                vec![table(&db, &name), literal(key), term(kind::MAXVAL, vec![])],
                json!({"left_bound": "open"}),
            ),
        };
        let primary_key = run(
            &shared,
            json!([
                kind::GET_FIELD,
                [term(kind::CONFIG, vec![table(&db, &name)]), "primary_key"]
            ]),
        )
        .await?;
        let page = run(&shared, term(kind::LIMIT, vec![rows, json!(limit)])).await?;
        let documents = page.as_array().cloned().unwrap_or_default();
        let cursor = match (
            documents.len() as u64 == limit,
            documents.last(),
            primary_key.as_str(),
        ) {
            (true, Some(last), Some(field)) => {
                Json::String(base64_encode(last[field].to_string().as_bytes()))
            }
            _ => Json::Null,
        };
        Ok(json_response(
            StatusCode::OK,
            json!({"docs": documents, "cursor": cursor}),
        ))
    }
    .await;
    response.unwrap_or_else(|response| response)
}

async fn insert_documents(
    State(shared): State<Arc<Shared>>,
    Path((db, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = async {
        let documents = json_body(&headers, &body)?;
        if !matches!(documents, Json::Object(_) | Json::Array(_)) {
            return Err(bad_request("Expected a document or an array of documents."));
        }
        let summary = run(
            &shared,
            term(kind::INSERT, vec![table(&db, &name), literal(documents)]),
        )
        .await?;
        Ok(write_summary(summary, StatusCode::CREATED))
    }
    .await;
    response.unwrap_or_else(|response| response)
}

fn get_term(db: &str, name: &str, id: &str) -> Json {
    term(kind::GET, vec![table(db, name), document_key(id)])
}

async fn get_document(
    State(shared): State<Arc<Shared>>,
    Path((db, name, id)): Path<(String, String, String)>,
) -> Response {
    if let Some(found) = read_document(&shared, &db, &name, &id).await {
        return found;
    }
    // Whatever the direct read did not answer (a missing database, table or
    // document, a denied user, a bad key) goes the general way, for the
    // same errors a driver gets.
    match run(&shared, get_term(&db, &name, &id)).await {
        Ok(Json::Null) => json_response(
            StatusCode::NOT_FOUND,
            error_body(
                "ReqlNonExistenceError",
                &format!("Document `{id}` does not exist in `{db}.{name}`."),
                json!([]),
            ),
        ),
        Ok(document) => json_response(StatusCode::OK, document),
        Err(response) => response,
    }
}

/// The common case of `GET …/docs/{id}`, a document that exists, read
/// straight from the shard that owns its partition and written out as JSON
/// with no ReQL term in between: the general path would evaluate the query
/// on some shard, which then asks the owner (half the time another shard),
/// and decode the document before writing it as JSON. `None`: not answered here.
async fn read_document(shared: &Shared, db: &str, name: &str, id: &str) -> Option<Response> {
    let started = std::time::Instant::now();
    let table = shared.engine.table(db, name)?;
    if let Some(user) = auth::current_user() {
        let scope = permission::Scope::table(&table);
        if !permission::allows(&shared.engine, &user, permission::Permission::Read, scope) {
            return None;
        }
    }
    let key = primary_key_bytes(&from_json(&document_key(id)).ok()?).ok()?;
    let partition = partition_of(&key, shared.engine.partitions());
    let table_id = table.id;
    let stored = shared
        .engine
        .run_on_partition_from_outside(partition, move |backend| async move {
            backend.get(table_id, &key).await
        })
        .await
        .ok()?
        .ok()??;
    let mut body = Vec::with_capacity(stored.len() + stored.len() / 4);
    document::write_json(&stored, &mut body).ok()?;
    metrics().query_answered("http", "success", started.elapsed().as_secs_f64());
    Some(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// PUT (replace) or PATCH (update) of one document that must exist.
async fn change_document(
    shared: &Shared,
    db: &str,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    term_type: u64,
) -> Result<Response, Response> {
    let document = json_body(headers, body)?;
    if !document.is_object() {
        return Err(bad_request("Expected a document (a JSON object)."));
    }
    let summary = run(
        shared,
        term_with(
            term_type,
            vec![get_term(db, name, id), literal(document)],
            json!({"return_changes": true}),
        ),
    )
    .await?;
    if summary["skipped"].as_u64().unwrap_or(0) > 0 {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            error_body(
                "ReqlNonExistenceError",
                &format!("Document `{id}` does not exist in `{db}.{name}`."),
                json!([]),
            ),
        ));
    }
    if summary["errors"].as_u64().unwrap_or(0) > 0 {
        return Ok(write_summary(summary, StatusCode::OK));
    }
    let changed = summary["changes"][0]["new_val"].clone();
    if changed.is_null() {
        // Unchanged: nothing in `changes`; answer with the document as it is.
        return Ok(json_response(
            StatusCode::OK,
            run(shared, get_term(db, name, id)).await?,
        ));
    }
    Ok(json_response(StatusCode::OK, changed))
}

async fn replace_document(
    State(shared): State<Arc<Shared>>,
    Path((db, name, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change_document(&shared, &db, &name, &id, &headers, &body, kind::REPLACE)
        .await
        .unwrap_or_else(|response| response)
}

async fn update_document(
    State(shared): State<Arc<Shared>>,
    Path((db, name, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change_document(&shared, &db, &name, &id, &headers, &body, kind::UPDATE)
        .await
        .unwrap_or_else(|response| response)
}

async fn delete_document(
    State(shared): State<Arc<Shared>>,
    Path((db, name, id)): Path<(String, String, String)>,
) -> Response {
    match run(&shared, term(kind::DELETE, vec![get_term(&db, &name, &id)])).await {
        Ok(summary) if summary["deleted"].as_u64() == Some(1) => no_content(),
        Ok(_) => json_response(
            StatusCode::NOT_FOUND,
            error_body(
                "ReqlNonExistenceError",
                &format!("Document `{id}` does not exist in `{db}.{name}`."),
                json!([]),
            ),
        ),
        Err(response) => response,
    }
}
