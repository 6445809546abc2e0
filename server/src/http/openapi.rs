//! The OpenAPI 3 description of the HTTP API, served at
//! `/api/v1/openapi.json`. A driver test requests every path and method it
//! lists, so it cannot drift from the routes.

use serde_json::{json, Value as Json};

fn error_response(description: &str) -> Json {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn json_response(description: &str, schema: Json) -> Json {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn parameter(name: &str, description: &str) -> Json {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn json_body(schema: Json) -> Json {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

pub fn document() -> Json {
    let any = json!({});
    let names = json!({"type": "array", "items": {"type": "string"}});
    let db = parameter("db", "Database name.");
    let table = parameter("table", "Table name.");
    let id = parameter(
        "id",
        "Primary key: a number when it reads as one, else a string.",
    );
    let missing = error_response("The database, table or document does not exist.");
    let malformed = error_response(
        "Malformed JSON (with line and column), or a request that is not what the route takes.",
    );
    let media = error_response("The body is not `application/json`.");
    json!({
        "openapi": "3.0.3",
        "info": {"title": "PhotonDB HTTP API", "version": env!("CARGO_PKG_VERSION"),
            "description": "Everything under /api/v1 but this document needs HTTP Basic credentials of a PhotonDB user, or a bearer token from /api/v1/auth/token, once `admin` has a password."},
        "paths": {
            "/health/live": {"get": {"summary": "Liveness: 200 while the process serves (no I/O).", "responses": {"200": json_response("Live.", any.clone())}}},
            "/health/ready": {"get": {"summary": "Readiness: 200 once recovered and accepting queries, 503 once shutdown begins.", "responses": {
                "200": json_response("Ready.", any.clone()), "503": json_response("Not ready, with the reason.", any.clone())}}},
            "/_metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4).", "responses": {"200": {"description": "Metrics.", "content": {"text/plain": {}}}}}},
            "/api/v1/ws": {"get": {"summary": "A WebSocket for queries, cursors and changefeeds (messages in docs/api/http.md).", "responses": {
                "101": {"description": "Switching to the WebSocket protocol."},
                "400": {"description": "Not a WebSocket upgrade request."},
                "405": {"description": "Not a GET."},
                "426": {"description": "Upgrade required."}}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document.", "responses": {"200": json_response("OpenAPI 3.", any.clone())}}},
            "/api/v1/auth/token": {"post": {
                "summary": "A bearer token (JWT, HS256) for the user this request authenticates as; send it as `Authorization: Bearer <token>`. A password change revokes it.",
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {"expires_in": {"type": "integer", "minimum": 1, "maximum": 604800, "default": 3600}}}}}},
                "responses": {"200": json_response("`{\"token\": …, \"token_type\": \"Bearer\", \"expires_in\": seconds, \"user\": name}`", any.clone()),
                    "400": malformed.clone(), "401": error_response("No, wrong or expired credentials.")}}},
            "/api/v1/query": {"post": {
                "summary": "Runs a ReQL query given as the wire JSON drivers send. With `Accept: application/x-ndjson` the result streams as one JSON value per line (an error after the first row is the last line, `{\"error\": …}`); otherwise the whole result is returned as `{\"result\": …}`.",
                "requestBody": json_body(json!({"type": "object", "required": ["query"], "properties": {"query": {}, "optargs": {"type": "object"}}})),
                "responses": {"200": json_response("`{\"result\": …}`", any.clone()), "400": error_response("The query failed (RethinkDB's error type, message and backtrace)."),
                    "413": error_response("The body is over 16 MiB."), "415": media.clone(), "503": error_response("Shutting down; the query was not run.")}}},
            "/api/v1/dbs": {
                "get": {"summary": "Database names.", "responses": {"200": json_response("Names.", names.clone())}},
                "post": {"summary": "Creates a database.", "requestBody": json_body(json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}})),
                    "responses": {"201": json_response("The database.", any.clone()), "400": malformed.clone(), "415": media.clone()}}},
            "/api/v1/dbs/{db}": {"parameters": [db.clone()],
                "delete": {"summary": "Drops a database and its tables.", "responses": {"204": {"description": "Dropped."}, "404": missing.clone()}}},
            "/api/v1/dbs/{db}/tables": {"parameters": [db.clone()],
                "get": {"summary": "Table names.", "responses": {"200": json_response("Names.", names), "404": missing.clone()}},
                "post": {"summary": "Creates a table.", "requestBody": json_body(json!({"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "primary_key": {"type": "string"}, "durability": {"type": "string", "enum": ["hard", "soft"]}}})),
                    "responses": {"201": json_response("The table's configuration.", any.clone()), "400": malformed.clone(), "404": missing.clone(), "415": media.clone()}}},
            "/api/v1/dbs/{db}/tables/{table}": {"parameters": [db.clone(), table.clone()],
                "delete": {"summary": "Drops a table.", "responses": {"204": {"description": "Dropped."}, "404": missing.clone()}}},
            "/api/v1/dbs/{db}/tables/{table}/docs": {"parameters": [db.clone(), table.clone()],
                "get": {"summary": "A page of documents in primary-key order.", "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}},
                        {"name": "cursor", "in": "query", "description": "The `cursor` of the previous page.", "schema": {"type": "string"}}],
                    "responses": {"200": json_response("`{\"docs\": […], \"cursor\": string | null}`", any.clone()), "400": malformed.clone(), "404": missing.clone()}},
                "post": {"summary": "Inserts a document or an array of documents.", "requestBody": json_body(any.clone()),
                    "responses": {"201": json_response("RethinkDB's write summary.", any.clone()), "400": malformed.clone(), "404": missing.clone(),
                        "409": error_response("A document's primary key exists already."), "415": media.clone()}}},
            "/api/v1/dbs/{db}/tables/{table}/docs/{id}": {"parameters": [db, table, id],
                "get": {"summary": "One document.", "responses": {"200": json_response("The document.", any.clone()), "404": missing.clone()}},
                "put": {"summary": "Replaces a document.", "requestBody": json_body(any.clone()),
                    "responses": {"200": json_response("The document now.", any.clone()), "400": malformed.clone(), "404": missing.clone(), "415": media.clone()}},
                "patch": {"summary": "Merges fields into a document (ReQL `update`).", "requestBody": json_body(any.clone()),
                    "responses": {"200": json_response("The document now.", any.clone()), "400": malformed, "404": missing.clone(), "415": media}},
                "delete": {"summary": "Deletes a document.", "responses": {"204": {"description": "Deleted."}, "404": missing}}}
        },
        "security": [{"basic": []}],
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}, "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
            "type": {"type": "string", "description": "RethinkDB's error type, e.g. ReqlQueryLogicError."},
            "message": {"type": "string"},
            "backtrace": {"type": "array"}}}}}}}
    })
}
