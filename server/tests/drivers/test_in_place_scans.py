"""Scans of a table read simple predicates and group keys on the stored
documents without decoding them (server/src/reql/in_place.rs). The same
queries over the same documents as an array literal go through the
interpreter alone: every answer, and every error, must be the same.
Seeded; PHOTONDB_FUZZ_SEED picks another seed."""
import os
import random

import pytest
from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlError

r = RethinkDB()

VALUES = [None, True, False, 0, -0.0, 1, -2.5, 7, 1e10, "", "a", "b", "category-050", "zz",
          [], [1], [1, "a"], {}, {"c": 1}, {"c": "x"}, r.epoch_time(0), r.epoch_time(10), r.binary(b"ab")]


def random_document(rng, number):
    document = {"id": number}
    for field in ("a", "n", "s"):
        if rng.random() < 0.85:
            document[field] = rng.choice(VALUES)
    if rng.random() < 0.7:
        document["b"] = rng.choice([{"c": rng.choice(VALUES)}, {"d": 1}, 5, "text", [{"c": 1}]])
    if rng.random() < 0.2:
        document["n"] = rng.randint(-3, 3)
    return document


def random_operand(rng, row):
    choice = rng.random()
    if choice < 0.35:
        return row["a"]
    if choice < 0.5:
        return row["b"]["c"]
    if choice < 0.6:
        return row["n"]
    if choice < 0.65:
        return row
    return r.expr(rng.choice(VALUES))


def random_predicate(rng, row, depth=0):
    choice = rng.random()
    if depth < 2 and choice < 0.2:
        parts = [random_predicate(rng, row, depth + 1) for _ in range(rng.randint(1, 3))]
        return r.and_(*parts) if rng.random() < 0.5 else r.or_(*parts)
    if depth < 2 and choice < 0.28:
        return r.not_(random_predicate(rng, row, depth + 1))
    if choice < 0.33:
        return random_operand(rng, row)
    comparison = rng.choice(["eq", "ne", "lt", "le", "gt", "ge"])
    operands = [random_operand(rng, row) for _ in range(rng.randint(1, 2))]
    return getattr(random_operand(rng, row), comparison)(*operands)


def predicate_from(seed):
    # The driver calls the function once per query it builds: the same
    # seed builds the same predicate each time.
    return lambda row: random_predicate(random.Random(seed), row)


def answer(query, connection):
    try:
        result = query.run(connection)
        if not isinstance(result, (list, dict, str, int, float, bool, type(None))):
            result = list(result)  # a cursor: read it to the end here
        return ("ok", result)
    except ReqlError as error:
        return ("error", type(error).__name__, error.message)


def outcome(query, connection):
    """The answer, or only the error's class: which row's error is met
    first depends on the order partitions are read in, in RethinkDB too."""
    found = answer(query, connection)
    return found[:2]


@pytest.fixture
def documents(server):
    rng = random.Random(int(os.environ.get("PHOTONDB_FUZZ_SEED", "20261127")))
    connection = r.connect(port=server.port)
    documents = [random_document(rng, number) for number in range(300)]
    r.table_create("scanned").run(connection)
    r.table("scanned").insert(documents).run(connection)
    yield connection, rng, documents
    connection.close()


def test_filtered_counts_agree_with_the_interpreter(documents):
    connection, rng, rows = documents
    table, array = r.table("scanned"), r.expr(rows)
    compared = 0
    for _ in range(300):
        seed = rng.random()
        options = {}
        if rng.random() < 0.2:
            options["default"] = rng.choice([True, False, r.error("missing")])

        predicate = predicate_from(seed)

        expected = outcome(array.filter(predicate, **options).count(), connection)
        actual = outcome(table.filter(predicate, **options).count(), connection)
        assert actual == expected, str(table.filter(predicate, **options))
        compared += expected[0] == "ok"
    # Most predicates must have run, or the comparison proves little.
    assert compared > 150


def test_filtered_rows_agree_with_the_interpreter(documents):
    """Filters leading a table read drop rows before they are decoded."""
    connection, rng, rows = documents
    table, array = r.table("scanned"), r.expr(rows)
    compared = 0
    for _ in range(150):
        first, second = predicate_from(rng.random()), predicate_from(rng.random())
        options = {"default": r.error("missing")} if rng.random() < 0.2 else {}
        single = lambda source: source.filter(first, **options)
        expected = answer(single(array), connection)
        assert answer(single(table), connection) == expected, str(single(table))
        compared += expected[0] == "ok"
        # An array is filtered stage by stage, a table row by row, so with
        # two filters a different row's error may come first.
        chained = lambda source: source.filter(first).filter(second, **options)
        expected = outcome(chained(array), connection)
        assert outcome(chained(table), connection) == expected, str(chained(table))
        # A table read stops at the limit; the array is filtered whole
        # first, so only its successes must be the same.
        limited = lambda source: source.filter(first).limit(3).coerce_to("array")
        expected = answer(limited(array), connection)
        if expected[0] == "ok":
            assert answer(limited(table), connection) == expected, str(limited(table))
    assert compared > 50


def test_templates_and_chained_filters_agree_with_the_interpreter(documents):
    connection, rng, rows = documents
    table, array = r.table("scanned"), r.expr(rows)
    templates = [{"a": "a"}, {"a": 1, "n": 1}, {"b": {"c": 1}}, {}, {"missing": 1}]
    for template in templates:
        assert answer(table.filter(template).count(), connection) == \
            answer(array.filter(template).count(), connection), template
    chained_table = table.filter(r.row["a"].gt(0)).filter(lambda row: row["b"]["c"].eq(1), default=True)
    chained_array = array.filter(r.row["a"].gt(0)).filter(lambda row: row["b"]["c"].eq(1), default=True)
    assert answer(chained_table.count(), connection) == answer(chained_array.count(), connection)


def test_grouped_reductions_agree_with_the_interpreter(documents):
    connection, rng, rows = documents
    table, array = r.table("scanned"), r.expr(rows)
    for group in ["a", lambda row: row["b"]["c"], ["a", "n"]]:
        by = group if isinstance(group, list) else [group]
        for reduce in [lambda grouped: grouped.count(), lambda grouped: grouped.sum("n"),
                       lambda grouped: grouped.avg("n"), lambda grouped: grouped.max("n")]:
            expected = outcome(reduce(array.group(*by)), connection)
            actual = outcome(reduce(table.group(*by)), connection)
            assert actual == expected, by
            filtered = lambda source: reduce(source.filter(r.row["n"].ge(0)).group(*by))
            assert outcome(filtered(table), connection) == outcome(filtered(array), connection)
    numbers = table.filter(lambda row: row["n"].type_of().eq("NUMBER"))
    assert answer(numbers.sum("n"), connection) == answer(r.expr(rows).filter(lambda row: row["n"].type_of().eq("NUMBER")).sum("n"), connection)
