//! Term numbers (`Term.TermType` in ql2.proto) used by the evaluator.

pub const DATUM: u64 = 1;
pub const MAKE_ARRAY: u64 = 2;
pub const MAKE_OBJ: u64 = 3;
pub const DB: u64 = 14;
pub const TABLE: u64 = 15;
pub const GET: u64 = 16;
pub const EQ: u64 = 17;
pub const NE: u64 = 18;
pub const LT: u64 = 19;
pub const LE: u64 = 20;
pub const GT: u64 = 21;
pub const GE: u64 = 22;
pub const NOT: u64 = 23;
pub const ADD: u64 = 24;
pub const SUB: u64 = 25;
pub const MUL: u64 = 26;
pub const DIV: u64 = 27;
pub const GET_FIELD: u64 = 31;
pub const COUNT: u64 = 43;
pub const TYPE_OF: u64 = 52;
pub const DELETE: u64 = 54;
pub const INSERT: u64 = 56;
pub const DB_CREATE: u64 = 57;
pub const DB_DROP: u64 = 58;
pub const DB_LIST: u64 = 59;
pub const TABLE_CREATE: u64 = 60;
pub const TABLE_DROP: u64 = 61;
pub const TABLE_LIST: u64 = 62;
pub const OR: u64 = 66;
pub const AND: u64 = 67;
pub const SYNC: u64 = 138;
pub const BRACKET: u64 = 170;

/// Names for error messages, from ql2.proto.
pub fn name(term_type: u64) -> Option<&'static str> {
    Some(match term_type {
        DATUM => "DATUM",
        MAKE_ARRAY => "MAKE_ARRAY",
        MAKE_OBJ => "MAKE_OBJ",
        DB => "DB",
        TABLE => "TABLE",
        GET => "GET",
        EQ => "EQ",
        NE => "NE",
        LT => "LT",
        LE => "LE",
        GT => "GT",
        GE => "GE",
        NOT => "NOT",
        ADD => "ADD",
        SUB => "SUB",
        MUL => "MUL",
        DIV => "DIV",
        GET_FIELD => "GET_FIELD",
        COUNT => "COUNT",
        TYPE_OF => "TYPE_OF",
        DELETE => "DELETE",
        INSERT => "INSERT",
        DB_CREATE => "DB_CREATE",
        DB_DROP => "DB_DROP",
        DB_LIST => "DB_LIST",
        TABLE_CREATE => "TABLE_CREATE",
        TABLE_DROP => "TABLE_DROP",
        TABLE_LIST => "TABLE_LIST",
        OR => "OR",
        AND => "AND",
        SYNC => "SYNC",
        BRACKET => "BRACKET",
        _ => return None,
    })
}
