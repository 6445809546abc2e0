//! Who may do what, as RethinkDB decides it: `read`, `write` and `config`
//! granted (`r.grant`) at the global, database or table scope, the
//! narrowest scope that says yes or no deciding; `connect` at the global
//! scope only. `admin` may do everything and cannot be changed. The system
//! database `rethinkdb` is reached only through permissions granted on it
//! or its tables, never through global ones.

use photondb_datum::Datum;
use photondb_storage::catalog::{Permissions, UserConfig};

use super::error::{ErrorClass, ReqlError};
use super::eval::Context;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
    Config,
}

impl Permission {
    fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Config => "config",
        }
    }

    fn in_scope(self, permissions: &Permissions) -> Option<bool> {
        match self {
            Permission::Read => permissions.read,
            Permission::Write => permissions.write,
            Permission::Config => permissions.config,
        }
    }
}

/// Where a permission is needed.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    Global,
    Database(u128),
    Table { database: u128, table: u128 },
}

impl Scope {
    /// A user table.
    pub fn table(table: &photondb_storage::catalog::TableConfig) -> Scope {
        Scope::Table {
            database: table.database,
            table: table.id.0,
        }
    }

    /// A table of the system database `rethinkdb`.
    pub fn system_table(name: &str) -> Scope {
        Scope::Table {
            database: super::system::DATABASE_ID,
            table: super::system::table_number(name),
        }
    }
}

/// Whether `user` holds `permission` in `scope`.
pub fn holds(user: &UserConfig, permission: Permission, scope: Scope) -> bool {
    if user.name == "admin" {
        return true;
    }
    let granted = &user.permissions;
    let (database, table) = match scope {
        Scope::Global => (None, None),
        Scope::Database(database) => (Some(database), None),
        Scope::Table { database, table } => (Some(database), Some(table)),
    };
    let from_table = table
        .and_then(|table| granted.tables.get(&table))
        .and_then(|permissions| permission.in_scope(permissions));
    let from_database = database
        .and_then(|database| granted.databases.get(&database))
        .and_then(|permissions| permission.in_scope(permissions));
    let system = database == Some(super::system::DATABASE_ID);
    let from_global = if system {
        None
    } else {
        permission.in_scope(&granted.global)
    };
    from_table
        .or(from_database)
        .or(from_global)
        .unwrap_or(false)
}

/// Whether user `name` holds `permission` in `scope` (an unknown user holds
/// nothing).
pub fn allows(
    engine: &photondb_runtime::Engine,
    name: &str,
    permission: Permission,
    scope: Scope,
) -> bool {
    // `admin` may do everything (and cannot be changed): no lookup.
    name == "admin"
        || engine
            .user(name)
            .is_some_and(|user| holds(&user, permission, scope))
}

impl Context {
    /// Fails with RethinkDB's `ReqlPermissionError` unless the query's user
    /// holds `permission` in `scope`.
    pub fn require(&self, permission: Permission, scope: Scope) -> Result<(), ReqlError> {
        let Some(name) = &self.user else {
            return Ok(());
        };
        if allows(&self.engine, name, permission, scope) {
            Ok(())
        } else {
            Err(ReqlError::new(
                ErrorClass::Permission,
                format!(
                    "User `{name}` does not have the required `{}` permission.",
                    permission.name()
                ),
            ))
        }
    }

    /// [`Context::require`] on a user table.
    pub fn require_on_table(
        &self,
        permission: Permission,
        table: &photondb_storage::catalog::TableConfig,
    ) -> Result<(), ReqlError> {
        self.require(permission, Scope::table(table))
    }

    /// [`Context::require`] on a table of the system database.
    pub fn require_on_system_table(
        &self,
        permission: Permission,
        name: &str,
    ) -> Result<(), ReqlError> {
        self.require(permission, Scope::system_table(name))
    }
}

/// A scope's permissions as `grant` and `rethinkdb.permissions` show them:
/// `null` when none is set.
pub fn document(permissions: &Permissions) -> Datum {
    if permissions.is_empty() {
        Datum::Null
    } else {
        permissions.to_datum()
    }
}

/// `r.grant(user, permissions)`, `db.grant(…)`, `table.grant(…)`.
pub async fn grant(
    context: &Context,
    scope: Scope,
    user: &str,
    asked: &Datum,
) -> Result<Datum, ReqlError> {
    let Datum::Object(asked) = asked else {
        return Err(ReqlError::op_failed(format!(
            "Expected an object for the permissions, got {}.",
            super::eval::pretty(asked)
        )));
    };
    let unknown: Vec<String> = asked
        .keys()
        .filter(|key| !matches!(key.as_str(), "read" | "write" | "config" | "connect"))
        .map(|key| format!("`{key}`"))
        .collect();
    if !unknown.is_empty() {
        return Err(ReqlError::op_failed(format!(
            "Unexpected key(s) {}.",
            unknown.join(", ")
        )));
    }
    let mut changes: Vec<(&str, Option<bool>)> = Vec::new();
    for (key, value) in asked {
        let value = match value {
            Datum::Bool(value) => Some(*value),
            Datum::Null => None,
            other => {
                return Err(ReqlError::op_failed(format!(
                    "Expected a boolean or null for `{key}`, got {}.",
                    super::eval::pretty(other)
                )))
            }
        };
        changes.push((key.as_str(), value));
    }
    if asked.contains_key("connect") && !matches!(scope, Scope::Global) {
        return Err(ReqlError::op_failed(
            "The `connect` permission is only valid at the global scope.",
        ));
    }
    if user == "admin" {
        return Err(ReqlError::op_failed(
            "The permissions of the user `admin` can't be modified.",
        ));
    }
    // Granting is writing `rethinkdb.permissions`.
    context.require_on_system_table(Permission::Read, "permissions")?;
    context.require_on_system_table(Permission::Write, "permissions")?;
    let Some(mut config) = context.engine.user(user) else {
        return Err(ReqlError::op_failed(format!("User `{user}` not found.")));
    };
    let slot = match scope {
        Scope::Global => &mut config.permissions.global,
        Scope::Database(database) => config.permissions.databases.entry(database).or_default(),
        Scope::Table { table, .. } => config.permissions.tables.entry(table).or_default(),
    };
    let old = *slot;
    for (key, value) in changes {
        match key {
            "read" => slot.read = value,
            "write" => slot.write = value,
            "config" => slot.config = value,
            _ => slot.connect = value,
        }
    }
    let new = *slot;
    config
        .permissions
        .databases
        .retain(|_, permissions| !permissions.is_empty());
    config
        .permissions
        .tables
        .retain(|_, permissions| !permissions.is_empty());
    context.engine.put_user(config).await?;
    let mut change = photondb_datum::Object::new();
    change.insert("old_val".into(), document(&old));
    change.insert("new_val".into(), document(&new));
    let mut result = photondb_datum::Object::new();
    result.insert("granted".into(), Datum::Number(1.0));
    result.insert(
        "permissions_changes".into(),
        Datum::Array(vec![Datum::Object(change)]),
    );
    Ok(Datum::Object(result))
}
