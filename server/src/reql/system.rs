//! The `rethinkdb` system database: tables generated from the catalog on
//! every read. Reads only so far; writes (renaming through
//! `table_config`, managing `users`) come with users and permissions.

use photondb_datum::{json::to_json, Datum};
use photondb_storage::catalog::{uuid_string, DatabaseConfig, TableConfig};

use super::admin::{database_document, table_document, SERVER_NAME};
use super::error::ReqlError;
use super::eval::{object, Context};

pub const DATABASE: &str = "rethinkdb";
/// A fixed id for the system database (it is not in the catalog).
pub const DATABASE_ID: u128 = 0x9c4b_1f5e_2d3a_4e6b_8f70_0000_0000_0001;
const SERVER_ID: &str = "00000000-0000-4000-8000-000000000001";

/// RethinkDB's `_debug_scratch`: an ordinary table in the system database
/// (created on first use; not in `table_config`).
pub const DEBUG_SCRATCH: &str = "_debug_scratch";

pub const TABLES: &[&str] = &[
    "cluster_config",
    "current_issues",
    "db_config",
    "jobs",
    "logs",
    "permissions",
    "server_config",
    "server_status",
    "stats",
    "table_config",
    "table_status",
    "users",
];

/// The tables of user databases (not the system database's own).
fn user_tables(
    catalog: &photondb_runtime::Catalog,
) -> impl Iterator<Item = &photondb_storage::catalog::TableConfig> {
    catalog
        .tables
        .values()
        .filter(|table| table.database != DATABASE_ID)
}

pub fn database() -> DatabaseConfig {
    DatabaseConfig {
        id: DATABASE_ID,
        name: DATABASE.to_owned(),
    }
}

/// A stable id for a system table, for `info()`.
pub fn table_id(name: &str) -> String {
    uuid_string(table_number(name))
}

/// The id of system table `name`, as a number (the key of its grants).
pub fn table_number(name: &str) -> u128 {
    let hash = crc32c::crc32c(name.as_bytes()) as u128;
    DATABASE_ID ^ (hash << 32) ^ 0x4000_0000_0000_0000_0000
}

pub fn table_status_document(table: &TableConfig, database_name: &str) -> Datum {
    let replica = object([
        ("server", Datum::String(SERVER_NAME.into())),
        ("state", Datum::String("ready".into())),
    ]);
    let shard = object([
        (
            "primary_replicas",
            Datum::Array(vec![Datum::String(SERVER_NAME.into())]),
        ),
        ("replicas", Datum::Array(vec![replica])),
    ]);
    let status = object([
        ("all_replicas_ready", Datum::Bool(true)),
        ("ready_for_outdated_reads", Datum::Bool(true)),
        ("ready_for_reads", Datum::Bool(true)),
        ("ready_for_writes", Datum::Bool(true)),
    ]);
    object([
        ("db", Datum::String(database_name.to_owned())),
        ("id", Datum::String(uuid_string(table.id.0))),
        ("name", Datum::String(table.name.clone())),
        ("raft_leader", Datum::String(SERVER_NAME.into())),
        ("shards", Datum::Array(vec![shard])),
        ("status", status),
    ])
}

/// The rows of system table `name`.
pub fn rows(context: &Context, name: &str) -> Result<Vec<Datum>, ReqlError> {
    if !is_system_table(name) {
        return Err(ReqlError::op_failed(format!(
            "Table `{DATABASE}.{name}` does not exist."
        )));
    }
    context.require_on_system_table(super::permission::Permission::Read, name)?;
    let catalog = context.engine.catalog();
    let database_name = |id: u128| {
        catalog
            .databases
            .values()
            .find(|database| database.id == id)
            .map_or_else(String::new, |database| database.name.clone())
    };
    Ok(match name {
        "db_config" => catalog.databases.values().map(database_document).collect(),
        "table_config" => user_tables(&catalog)
            .map(|table| table_document(table, &database_name(table.database), &context.engine))
            .collect(),
        "table_status" => user_tables(&catalog)
            .map(|table| table_status_document(table, &database_name(table.database)))
            .collect(),
        "server_config" => vec![object([
            ("cache_size_mb", Datum::String("auto".into())),
            ("id", Datum::String(SERVER_ID.into())),
            ("name", Datum::String(SERVER_NAME.into())),
            ("tags", Datum::Array(vec![Datum::String("default".into())])),
        ])],
        "server_status" => vec![object([
            ("id", Datum::String(SERVER_ID.into())),
            ("name", Datum::String(SERVER_NAME.into())),
            (
                "process",
                object([
                    (
                        "argv",
                        Datum::Array(std::env::args().map(Datum::String).collect()),
                    ),
                    ("pid", Datum::Number(std::process::id() as f64)),
                    (
                        "version",
                        Datum::String(format!("PhotonDB {}", env!("CARGO_PKG_VERSION"))),
                    ),
                ]),
            ),
        ])],
        "users" => catalog
            .users
            .values()
            .map(|user| {
                object([
                    ("id", Datum::String(user.name.clone())),
                    ("password", Datum::Bool(user.has_password)),
                ])
            })
            .collect(),
        "cluster_config" => vec![object([
            ("heartbeat_timeout_secs", Datum::Number(10.0)),
            ("id", Datum::String("heartbeat".into())),
        ])],
        "permissions" => permission_rows(&catalog),
        "current_issues" | "jobs" | "stats" | "logs" => Vec::new(),
        other => {
            return Err(ReqlError::op_failed(format!(
                "Table `{DATABASE}.{other}` does not exist."
            )))
        }
    })
}

fn is_system_table(name: &str) -> bool {
    TABLES.contains(&name)
}

/// `rethinkdb.permissions`: a row per user and scope with permissions set
/// (`admin` holds all of them globally), scopes of dropped databases and
/// tables left out.
fn permission_rows(catalog: &photondb_runtime::Catalog) -> Vec<Datum> {
    let mut rows = Vec::new();
    let database_name = |id: u128| {
        if id == DATABASE_ID {
            return Some(DATABASE.to_owned());
        }
        catalog
            .databases
            .values()
            .find(|database| database.id == id)
            .map(|database| database.name.clone())
    };
    for user in catalog.users.values() {
        let name = Datum::String(user.name.clone());
        let mut global = user.permissions.global;
        if user.name == "admin" {
            global = photondb_storage::catalog::Permissions {
                read: Some(true),
                write: Some(true),
                config: Some(true),
                connect: Some(true),
            };
        }
        if !global.is_empty() {
            rows.push(object([
                ("id", Datum::Array(vec![name.clone()])),
                ("permissions", super::permission::document(&global)),
                ("user", name.clone()),
            ]));
        }
        for (database, permissions) in &user.permissions.databases {
            let Some(database_name) = database_name(*database) else {
                continue;
            };
            rows.push(object([
                ("database", Datum::String(database_name)),
                (
                    "id",
                    Datum::Array(vec![name.clone(), Datum::String(uuid_string(*database))]),
                ),
                ("permissions", super::permission::document(permissions)),
                ("user", name.clone()),
            ]));
        }
        for (table, permissions) in &user.permissions.tables {
            let found = catalog
                .tables
                .values()
                .find(|config| config.id.0 == *table)
                .map(|config| (config.database, config.name.clone()))
                .or_else(|| {
                    TABLES
                        .iter()
                        .find(|name| table_number(name) == *table)
                        .map(|name| (DATABASE_ID, (*name).to_owned()))
                });
            let Some((database, table_name)) = found else {
                continue;
            };
            let Some(database_name) = database_name(database) else {
                continue;
            };
            rows.push(object([
                ("database", Datum::String(database_name)),
                (
                    "id",
                    Datum::Array(vec![
                        name.clone(),
                        Datum::String(uuid_string(database)),
                        Datum::String(uuid_string(*table)),
                    ]),
                ),
                ("permissions", super::permission::document(permissions)),
                ("table", Datum::String(table_name)),
                ("user", name.clone()),
            ]));
        }
    }
    rows
}

/// Deletes rows of `rethinkdb.permissions` (the permissions of a user at
/// a scope); returns how many.
pub async fn delete_permissions(context: &Context, rows: Vec<Datum>) -> Result<u64, ReqlError> {
    context.require_on_system_table(super::permission::Permission::Write, "permissions")?;
    let mut deleted = 0;
    for row in rows {
        let Datum::Object(fields) = &row else {
            continue;
        };
        let Some(Datum::Array(id)) = fields.get("id") else {
            continue;
        };
        let Some(Datum::String(user)) = id.first() else {
            continue;
        };
        if user == "admin" {
            return Err(ReqlError::op_failed(
                "The permissions of the user `admin` can't be modified.",
            ));
        }
        let Some(mut config) = context.engine.user(user) else {
            continue;
        };
        let scope = |index: usize| match id.get(index) {
            Some(Datum::String(text)) => photondb_storage::catalog::parse_uuid(text),
            _ => None,
        };
        match id.len() {
            1 => config.permissions.global = Default::default(),
            2 => {
                config
                    .permissions
                    .databases
                    .remove(&scope(1).unwrap_or_default());
            }
            _ => {
                config
                    .permissions
                    .tables
                    .remove(&scope(2).unwrap_or_default());
            }
        }
        context.engine.put_user(config).await?;
        deleted += 1;
    }
    Ok(deleted)
}

/// Writes to `rethinkdb.users`: `insert({id, password})` creates a user,
/// `get(name).update({password})` changes a password (`false` clears it).
pub async fn write_user(
    context: &Context,
    name: &str,
    password: &Datum,
    create: bool,
) -> Result<(), ReqlError> {
    let exists = context.engine.user(name).is_some();
    if create && exists {
        return Err(ReqlError::op_failed(format!(
            "User `{name}` already exists."
        )));
    }
    if !create && !exists {
        return Err(ReqlError::op_failed(format!(
            "User `{name}` does not exist."
        )));
    }
    let password = match password {
        Datum::String(password) => password.clone(),
        Datum::Bool(false) => String::new(),
        other => {
            return Err(ReqlError::logic(format!(
                "Expected a string or `false` for `password`, got {}.",
                other.type_name()
            )))
        }
    };
    let mut user = crate::protocol::handshake::user_with_password(name, &password);
    // A new password keeps what was granted.
    if let Some(existing) = context.engine.user(name) {
        user.permissions = existing.permissions;
    }
    context.engine.put_user(user).await?;
    Ok(())
}

/// `info()` of a datum: its type and its JSON.
pub fn datum_info(datum: &Datum) -> Datum {
    object([
        ("type", Datum::String(datum.type_name().into())),
        ("value", Datum::String(to_json(datum).to_string())),
    ])
}
