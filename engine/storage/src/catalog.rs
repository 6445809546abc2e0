//! The catalog: databases, tables, indexes and users, stored as documents in the reserved
//! table [`TableId::CATALOG`] of partition 0, so it is made durable and
//! recovered by the same WAL and checkpoints as user data.
//!
//! Keys are the key encoding of `["db", <uuid>]`, `["table", <uuid>]`,
//! `["index", <uuid>]` and `["user", <name>]`.

use photondb_datum::{document, key, Datum, Object};

use crate::backend::Durability;
use crate::tables::TableId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub id: u128,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableConfig {
    pub id: TableId,
    pub database: u128,
    pub name: String,
    pub primary_key: String,
    pub durability: Durability,
    /// The shard count `reconfigure` asked for, as `table_config` reports
    /// it. Placement does not follow it: every table's rows are spread
    /// over all partitions by key hash.
    pub shards: u32,
}

/// Formats a 128-bit id as a canonical UUID string.
pub fn uuid_string(id: u128) -> String {
    let hex = format!("{id:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub fn parse_uuid(text: &str) -> Option<u128> {
    let hex: String = text.chars().filter(|character| *character != '-').collect();
    (hex.len() == 32)
        .then(|| u128::from_str_radix(&hex, 16).ok())
        .flatten()
}

pub fn database_key(id: u128) -> Vec<u8> {
    key::encode(&Datum::Array(vec![
        "db".into(),
        Datum::String(uuid_string(id)),
    ]))
}

pub fn table_key(id: TableId) -> Vec<u8> {
    key::encode(&Datum::Array(vec![
        "table".into(),
        Datum::String(uuid_string(id.0)),
    ]))
}

fn object(fields: &[(&str, Datum)]) -> Vec<u8> {
    let object: Object = fields
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();
    document::encode(&Datum::Object(object))
}

impl DatabaseConfig {
    pub fn encode(&self) -> Vec<u8> {
        object(&[
            ("kind", "db".into()),
            ("id", Datum::String(uuid_string(self.id))),
            ("name", self.name.as_str().into()),
        ])
    }
}

impl TableConfig {
    pub fn encode(&self) -> Vec<u8> {
        let durability = match self.durability {
            Durability::Hard => "hard",
            Durability::Soft => "soft",
        };
        object(&[
            ("kind", "table".into()),
            ("id", Datum::String(uuid_string(self.id.0))),
            ("db", Datum::String(uuid_string(self.database))),
            ("name", self.name.as_str().into()),
            ("primary_key", self.primary_key.as_str().into()),
            ("durability", durability.into()),
            ("shards", Datum::Number(self.shards as f64)),
        ])
    }
}

/// A secondary index of a table. Its entries live in each partition under
/// its own id, beside the table's rows there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexConfig {
    pub id: TableId,
    pub table: TableId,
    pub name: String,
    /// The index function: the wire JSON of its `FUNC` term, which the
    /// query layer compiles. Storage never reads it.
    pub function: String,
    pub multi: bool,
    pub geo: bool,
    /// Whether every row written before the index existed has its entries
    /// (the build finished). Writes keep a not-ready index in step too.
    pub ready: bool,
}

pub fn index_key(id: TableId) -> Vec<u8> {
    key::encode(&Datum::Array(vec![
        "index".into(),
        Datum::String(uuid_string(id.0)),
    ]))
}

impl IndexConfig {
    pub fn encode(&self) -> Vec<u8> {
        object(&[
            ("kind", "index".into()),
            ("id", Datum::String(uuid_string(self.id.0))),
            ("table", Datum::String(uuid_string(self.table.0))),
            ("name", self.name.as_str().into()),
            ("function", self.function.as_str().into()),
            ("multi", Datum::Bool(self.multi)),
            ("geo", Datum::Bool(self.geo)),
            ("ready", Datum::Bool(self.ready)),
        ])
    }
}

/// A user and what SCRAM-SHA-256 needs to check its password (never the
/// password itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserConfig {
    pub name: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    /// Whether a non-empty password is set (what `rethinkdb.users` shows).
    pub has_password: bool,
    /// What `grant` gave this user (nothing for a new user; `admin` is
    /// never checked).
    pub permissions: UserPermissions,
}

/// One scope's permissions; `None` inherits from the scope around it
/// (table, then database, then global), as `grant`'s `null` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub read: Option<bool>,
    pub write: Option<bool>,
    pub config: Option<bool>,
    /// Global scope only.
    pub connect: Option<bool>,
}

impl Permissions {
    pub fn is_empty(&self) -> bool {
        *self == Permissions::default()
    }

    /// The permissions set, as an object (`{"read": true, …}`).
    pub fn to_datum(&self) -> Datum {
        let mut fields = Object::new();
        for (name, value) in [
            ("read", self.read),
            ("write", self.write),
            ("config", self.config),
            ("connect", self.connect),
        ] {
            if let Some(value) = value {
                fields.insert(name.to_owned(), Datum::Bool(value));
            }
        }
        Datum::Object(fields)
    }

    fn decode(datum: &Datum) -> Permissions {
        let flag = |name: &str| match datum {
            Datum::Object(fields) => match fields.get(name) {
                Some(Datum::Bool(value)) => Some(*value),
                _ => None,
            },
            _ => None,
        };
        Permissions {
            read: flag("read"),
            write: flag("write"),
            config: flag("config"),
            connect: flag("connect"),
        }
    }
}

/// A user's permissions at every scope it was granted some.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPermissions {
    pub global: Permissions,
    /// By database id.
    pub databases: std::collections::BTreeMap<u128, Permissions>,
    /// By table id.
    pub tables: std::collections::BTreeMap<u128, Permissions>,
}

impl UserPermissions {
    fn encode(&self) -> Datum {
        let scoped = |scopes: &std::collections::BTreeMap<u128, Permissions>| {
            Datum::Object(
                scopes
                    .iter()
                    .map(|(id, permissions)| (uuid_string(*id), permissions.to_datum()))
                    .collect(),
            )
        };
        let mut fields = Object::new();
        fields.insert("global".into(), self.global.to_datum());
        fields.insert("databases".into(), scoped(&self.databases));
        fields.insert("tables".into(), scoped(&self.tables));
        Datum::Object(fields)
    }

    /// Entries missing (a user stored before permissions existed) are
    /// empty.
    fn decode(datum: Option<&Datum>) -> UserPermissions {
        let Some(Datum::Object(fields)) = datum else {
            return UserPermissions::default();
        };
        let scoped = |name: &str| match fields.get(name) {
            Some(Datum::Object(scopes)) => scopes
                .iter()
                .filter_map(|(id, permissions)| {
                    Some((parse_uuid(id)?, Permissions::decode(permissions)))
                })
                .collect(),
            _ => std::collections::BTreeMap::new(),
        };
        UserPermissions {
            global: fields
                .get("global")
                .map(Permissions::decode)
                .unwrap_or_default(),
            databases: scoped("databases"),
            tables: scoped("tables"),
        }
    }
}

pub fn user_key(name: &str) -> Vec<u8> {
    key::encode(&Datum::Array(vec![
        "user".into(),
        Datum::String(name.to_owned()),
    ]))
}

impl UserConfig {
    pub fn encode(&self) -> Vec<u8> {
        object(&[
            ("kind", "user".into()),
            ("name", self.name.as_str().into()),
            ("salt", Datum::Binary(self.salt.clone())),
            ("iterations", Datum::Number(self.iterations as f64)),
            ("stored_key", Datum::Binary(self.stored_key.clone())),
            ("server_key", Datum::Binary(self.server_key.clone())),
            ("has_password", Datum::Bool(self.has_password)),
            ("permissions", self.permissions.encode()),
        ])
    }
}

/// A catalog entry read back from storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Database(DatabaseConfig),
    Table(TableConfig),
    Index(IndexConfig),
    User(UserConfig),
}

/// Decodes a catalog document; `None` if it is not one this build knows.
pub fn decode(bytes: &[u8]) -> Option<Entry> {
    let Datum::Object(fields) = document::decode(bytes).ok()? else {
        return None;
    };
    let text = |name: &str| match fields.get(name) {
        Some(Datum::String(value)) => Some(value.clone()),
        _ => None,
    };
    let binary = |name: &str| match fields.get(name) {
        Some(Datum::Binary(bytes)) => Some(bytes.clone()),
        _ => None,
    };
    match text("kind")?.as_str() {
        "user" => Some(Entry::User(UserConfig {
            name: text("name")?,
            salt: binary("salt")?,
            iterations: match fields.get("iterations") {
                Some(Datum::Number(count)) => *count as u32,
                _ => return None,
            },
            stored_key: binary("stored_key")?,
            server_key: binary("server_key")?,
            has_password: matches!(fields.get("has_password"), Some(Datum::Bool(true))),
            permissions: UserPermissions::decode(fields.get("permissions")),
        })),
        "index" => Some(Entry::Index(IndexConfig {
            id: TableId(parse_uuid(&text("id")?)?),
            table: TableId(parse_uuid(&text("table")?)?),
            name: text("name")?,
            function: text("function")?,
            multi: matches!(fields.get("multi"), Some(Datum::Bool(true))),
            geo: matches!(fields.get("geo"), Some(Datum::Bool(true))),
            ready: matches!(fields.get("ready"), Some(Datum::Bool(true))),
        })),
        "db" => Some(Entry::Database(DatabaseConfig {
            id: parse_uuid(&text("id")?)?,
            name: text("name")?,
        })),
        "table" => Some(Entry::Table(TableConfig {
            id: TableId(parse_uuid(&text("id")?)?),
            database: parse_uuid(&text("db")?)?,
            name: text("name")?,
            primary_key: text("primary_key")?,
            durability: if text("durability")? == "soft" {
                Durability::Soft
            } else {
                Durability::Hard
            },
            // Written by every build since `reconfigure`; one shard before.
            shards: match fields.get("shards") {
                Some(Datum::Number(count)) if *count >= 1.0 => *count as u32,
                _ => 1,
            },
        })),
        _ => None,
    }
}
