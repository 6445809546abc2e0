//! A small typed builder for ReQL terms in the wire JSON drivers send:
//! `[type, [arguments…], {optargs}]`, with data as plain JSON except arrays,
//! which are `MAKE_ARRAY` terms.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Map, Value};

use crate::term_type::*;

/// A ReQL term.
#[derive(Clone, Debug, PartialEq)]
pub struct Term(Value);

/// The builder's entry points, named as the drivers name them (`r.db(…)`).
pub mod r {
    use super::*;

    /// A value as a term: arrays (at any depth) become `MAKE_ARRAY`.
    pub fn expr(value: impl Into<Value>) -> Term {
        Term(datum(value.into()))
    }

    pub fn db(name: &str) -> Term {
        Term::call(DB, vec![expr(name)])
    }

    pub fn db_create(name: &str) -> Term {
        Term::call(DB_CREATE, vec![expr(name)])
    }

    pub fn db_drop(name: &str) -> Term {
        Term::call(DB_DROP, vec![expr(name)])
    }

    pub fn db_list() -> Term {
        Term::call(DB_LIST, vec![])
    }

    /// The value above every other, for open-ended `between`.
    pub fn maxval() -> Term {
        Term::call(MAXVAL, vec![])
    }

    pub fn desc(field: &str) -> Term {
        Term::call(DESC, vec![expr(field)])
    }

    pub fn asc(field: &str) -> Term {
        Term::call(ASC, vec![expr(field)])
    }

    /// A one-argument function: `body` gets the argument as a term.
    pub fn func(body: impl FnOnce(Term) -> Term) -> Term {
        static NEXT_VARIABLE: AtomicU64 = AtomicU64::new(1);
        let variable = NEXT_VARIABLE.fetch_add(1, Ordering::Relaxed);
        let result = body(Term::call(VAR, vec![expr(variable)]));
        Term::call(FUNC, vec![expr(vec![variable]), result])
    }
}

fn datum(value: Value) -> Value {
    match value {
        Value::Array(items) => {
            json!([MAKE_ARRAY, items.into_iter().map(datum).collect::<Vec<_>>()])
        }
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (key, datum(value)))
                .collect(),
        ),
        scalar => scalar,
    }
}

impl From<&str> for Term {
    fn from(value: &str) -> Term {
        r::expr(value)
    }
}

macro_rules! datum_terms {
    ($($type:ty),*) => {$(
        impl From<$type> for Term {
            fn from(value: $type) -> Term {
                r::expr(value)
            }
        }
    )*};
}
datum_terms!(Value, String, bool, i32, i64, u64, f64);

impl Term {
    /// Wire JSON as it is, for any term the builder lacks.
    pub fn raw(wire: Value) -> Term {
        Term(wire)
    }

    pub fn wire(&self) -> &Value {
        &self.0
    }

    fn call(kind: u64, arguments: Vec<Term>) -> Term {
        Term(json!([
            kind,
            arguments
                .into_iter()
                .map(|argument| argument.0)
                .collect::<Vec<_>>()
        ]))
    }

    fn method(&self, kind: u64, mut arguments: Vec<Term>) -> Term {
        arguments.insert(0, self.clone());
        Term::call(kind, arguments)
    }

    /// Sets an optarg (`conflict`, `index`, `durability`, …).
    pub fn opt(mut self, name: &str, value: impl Into<Value>) -> Term {
        let value = datum(value.into());
        let wire = self.0.as_array_mut().expect("a built term is an array");
        if wire.len() < 3 {
            wire.push(Value::Object(Map::new()));
        }
        wire[2]
            .as_object_mut()
            .expect("optargs are an object")
            .insert(name.to_owned(), value);
        self
    }

    pub fn table(&self, name: &str) -> Term {
        self.method(TABLE, vec![r::expr(name)])
    }

    pub fn table_create(&self, name: &str) -> Term {
        self.method(TABLE_CREATE, vec![r::expr(name)])
    }

    pub fn table_drop(&self, name: &str) -> Term {
        self.method(TABLE_DROP, vec![r::expr(name)])
    }

    pub fn table_list(&self) -> Term {
        self.method(TABLE_LIST, vec![])
    }

    pub fn config(&self) -> Term {
        self.method(CONFIG, vec![])
    }

    /// `index_create(name)` (indexes the field of that name) or, with a
    /// function, `index_create(name, function)`; the function may also be
    /// the binary `index_status` hands out.
    pub fn index_create(&self, name: &str, function: Option<Term>) -> Term {
        let mut arguments = vec![r::expr(name)];
        arguments.extend(function);
        self.method(INDEX_CREATE, arguments)
    }

    pub fn index_drop(&self, name: &str) -> Term {
        self.method(INDEX_DROP, vec![r::expr(name)])
    }

    pub fn index_list(&self) -> Term {
        self.method(INDEX_LIST, vec![])
    }

    pub fn index_status(&self) -> Term {
        self.method(INDEX_STATUS, vec![])
    }

    pub fn index_wait(&self) -> Term {
        self.method(INDEX_WAIT, vec![])
    }

    pub fn get(&self, key: impl Into<Term>) -> Term {
        self.method(GET, vec![key.into()])
    }

    pub fn get_all(&self, keys: Vec<Term>) -> Term {
        self.method(GET_ALL, keys)
    }

    pub fn between(&self, lower: impl Into<Term>, upper: impl Into<Term>) -> Term {
        self.method(BETWEEN, vec![lower.into(), upper.into()])
    }

    pub fn insert(&self, documents: impl Into<Value>) -> Term {
        self.method(INSERT, vec![r::expr(documents)])
    }

    pub fn update(&self, change: impl Into<Term>) -> Term {
        self.method(UPDATE, vec![change.into()])
    }

    pub fn replace(&self, document: impl Into<Term>) -> Term {
        self.method(REPLACE, vec![document.into()])
    }

    pub fn delete(&self) -> Term {
        self.method(DELETE, vec![])
    }

    pub fn filter(&self, predicate: impl Into<Term>) -> Term {
        self.method(FILTER, vec![predicate.into()])
    }

    pub fn map(&self, function: Term) -> Term {
        self.method(MAP, vec![function])
    }

    pub fn pluck(&self, fields: &[&str]) -> Term {
        self.method(PLUCK, fields.iter().map(|field| r::expr(*field)).collect())
    }

    pub fn order_by(&self, key: Term) -> Term {
        self.method(ORDER_BY, vec![key])
    }

    /// `order_by(index=name)`: rows in the order of an index, read from it.
    pub fn order_by_index(&self, index: &str) -> Term {
        self.method(ORDER_BY, vec![]).opt("index", index)
    }

    pub fn limit(&self, count: u64) -> Term {
        self.method(LIMIT, vec![r::expr(count)])
    }

    pub fn count(&self) -> Term {
        self.method(COUNT, vec![])
    }

    pub fn group(&self, field: &str) -> Term {
        self.method(GROUP, vec![r::expr(field)])
    }

    pub fn changes(&self) -> Term {
        self.method(CHANGES, vec![])
    }

    /// `term(field)`: a field of an object.
    pub fn field(&self, name: &str) -> Term {
        self.method(GET_FIELD, vec![r::expr(name)])
    }

    pub fn eq(&self, other: impl Into<Term>) -> Term {
        self.method(EQ, vec![other.into()])
    }

    pub fn lt(&self, other: impl Into<Term>) -> Term {
        self.method(LT, vec![other.into()])
    }

    pub fn gt(&self, other: impl Into<Term>) -> Term {
        self.method(GT, vec![other.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_the_wire_json_drivers_send() {
        let query = r::db("test")
            .table("people")
            .insert(json!([{"id": 1, "tags": ["a"]}]))
            .opt("conflict", "replace");
        assert_eq!(
            query.wire(),
            &json!([56, [[15, [[14, ["test"]], "people"]], [2, [{"id": 1, "tags": [2, ["a"]]}]]], {"conflict": "replace"}])
        );
        let filter = r::db("test")
            .table("people")
            .filter(r::func(|row| row.field("age").gt(30)));
        let wire = filter.wire();
        let variable = &wire[1][1][1][0][1][0];
        assert_eq!(wire[1][1][0], json!(69));
        assert_eq!(
            wire[1][1][1][1],
            json!([21, [[31, [[10, [variable]], "age"]], 30]])
        );
    }
}
