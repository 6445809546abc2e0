#!/usr/bin/env python3
"""Runs RethinkDB's ReQL test suite against PhotonDB through the official
Python driver, and scores it per file.

    run.py SUITE_DIR [--binary PATH] [--floor-file FILE] [--only SUBSTRING ...]
                     [--show N]

It starts a fresh `photondb serve` on a free port with a temporary data
directory, creates the tables each file names, runs every test as
`shared/reql-suite/README.md` describes (queries with `max_batch_rows=3`),
prints per-file pass counts and the failures with expected and actual
values, and ends with `N passed, N failed`. With --floor-file, it exits 1
when fewer tests pass than the number in that file.
"""
import argparse
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid as uuid_module

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import suite_reader  # noqa: E402

from rethinkdb import RethinkDB  # noqa: E402
from rethinkdb import errors as reql_errors  # noqa: E402
from rethinkdb.net import Cursor  # noqa: E402

r = RethinkDB()
ROOT = pathlib.Path(__file__).resolve().parents[2]
LANGUAGE_KEYS = ("py3", "py", "cd")
QUERY_TIMEOUT_SECONDS = 30


# ----- expected-value helpers, as the suite uses them ------------------------

class Matcher:
    def matches(self, actual, precision):
        raise NotImplementedError


class Error(Matcher):
    def __init__(self, kind, message=None, frames=None, regex=False):
        self.kind, self.message, self.regex = kind, message, regex

    def matches(self, actual, precision):
        if not isinstance(actual, Exception):
            return False
        if type(actual).__name__ != self.kind and not _class_named(actual, self.kind):
            return False
        if self.message is None:
            return True
        got = getattr(actual, "message", str(actual))
        if self.regex:
            return re.match(self.message, got) is not None
        # As RethinkDB's own runner: whatever follows ":\n" (the offending
        # value) is not compared; the colon is.
        return _without_value(got) == _without_value(self.message)

    def __repr__(self):
        return "err(%r, %r)" % (self.kind, self.message)


def _without_value(message):
    return re.sub(r":\n.*", ":", message, flags=re.S)


def _class_named(error, name):
    return any(cls.__name__ == name for cls in type(error).__mro__)


class Bag(Matcher):
    def __init__(self, items, partial=False):
        self.items, self.partial = list(items), partial

    def matches(self, actual, precision):
        if not isinstance(actual, (list, tuple)):
            return False
        remaining = list(actual)
        for expected in self.items:
            for index, candidate in enumerate(remaining):
                if compare(expected, candidate, precision):
                    del remaining[index]
                    break
            else:
                return False
        return self.partial or not remaining

    def __repr__(self):
        return "bag(%r)" % (self.items,)


class Partial(Matcher):
    def __init__(self, expected):
        self.expected = expected

    def matches(self, actual, precision):
        if isinstance(self.expected, dict):
            return isinstance(actual, dict) and all(
                key in actual and compare(value, actual[key], precision) for key, value in self.expected.items())
        return Bag(self.expected, partial=True).matches(actual, precision)

    def __repr__(self):
        return "partial(%r)" % (self.expected,)


class Predicate(Matcher):
    def __init__(self, name, test):
        self.name, self.test = name, test

    def matches(self, actual, precision):
        return not isinstance(actual, Exception) and self.test(actual)

    def __repr__(self):
        return self.name


class ArrayLength(Matcher):
    def __init__(self, length, thing=None):
        self.length, self.thing = length, thing

    def matches(self, actual, precision):
        return isinstance(actual, list) and len(actual) == self.length and (
            self.thing is None or all(compare(self.thing, item, precision) for item in actual))

    def __repr__(self):
        return "arrlen(%r, %r)" % (self.length, self.thing)


def _is_uuid(value):
    try:
        return isinstance(value, str) and str(uuid_module.UUID(value)) == value
    except ValueError:
        return False


class _FixedOffset(__import__("datetime").tzinfo):
    """The time zones RethinkDB's runner gives the shim tests."""

    def __init__(self, hours, name):
        self._offset = __import__("datetime").timedelta(hours=hours)
        self._name = name

    def utcoffset(self, moment):
        return self._offset

    def dst(self, moment):
        return __import__("datetime").timedelta(0)

    def tzname(self, moment):
        return self._name


def _format_term(*args):
    """`r.format`, which the Python driver this runner installs predates:
    the FORMAT term (197 in ql2.proto) built with the driver's own AST."""
    from rethinkdb import ast

    class Format(ast.RqlTopLevelQuery):
        term_type = 197
        statement = "format"

    return Format(*args)


def helpers():
    r.format = _format_term
    return {
        "err": lambda kind, message=None, frames=None: Error(kind, message, frames),
        "err_regex": lambda kind, message=None, frames=None: Error(kind, message, frames, regex=True),
        "bag": lambda items: Bag(items),
        "partial": Partial,
        "uuid": lambda: Predicate("uuid()", _is_uuid),
        "int_cmp": lambda value: Predicate("int_cmp(%r)" % value, lambda actual: type(actual) is int and actual == value),
        "float_cmp": lambda value: Predicate("float_cmp(%r)" % value, lambda actual: type(actual) is float and actual == value),
        "arrlen": ArrayLength,
        "anything": lambda: Predicate("anything()", lambda actual: True),
        "repeat": lambda value, count: [value] * count,
        "fetch": fetch,
        "PacificTimeZone": lambda: _FixedOffset(-7, "PDT"),
        "UTCTimeZone": lambda: _FixedOffset(0, "UTC"),
        "regex": lambda pattern: Predicate("regex(%r)" % pattern, lambda actual: isinstance(actual, str) and re.match(pattern, actual) is not None),
        "wait": lambda seconds: time.sleep(min(float(seconds), 2.0)),
        "null": None, "nil": None, "true": True, "false": False,
        "long": int, "unicode": str, "xrange": range,
        "r": r, "math": math, "sys": sys,
        # The suite's Python expects `from datetime import datetime, timedelta, tzinfo`.
        "datetime": __import__("datetime").datetime, "timedelta": __import__("datetime").timedelta,
        "tzinfo": __import__("datetime").tzinfo,
    }


def compare(expected, actual, precision):
    if isinstance(expected, Matcher):
        return expected.matches(actual, precision)
    if isinstance(actual, Exception):
        return False
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        if precision:
            return abs(expected - actual) <= precision
        return expected == actual
    if isinstance(expected, dict):
        return isinstance(actual, dict) and set(expected) == set(actual) and all(
            compare(value, actual[key], precision) for key, value in expected.items())
    if isinstance(expected, (list, tuple)):
        return isinstance(actual, (list, tuple)) and len(expected) == len(actual) and all(
            compare(a, b, precision) for a, b in zip(expected, actual))
    return expected == actual


# ----- the server ----------------------------------------------------------

def start_server(binary, directory):
    """Starts a server on ports it picks itself; returns it and its driver port."""
    log_path = os.path.join(directory, "server.log")
    log = open(log_path, "w")
    process = subprocess.Popen(
        [binary, "serve", "--data-dir", os.path.join(directory, "data"), "--driver-port", "0",
         "--partitions", "4", "--wal-ring-size", "8MiB", "--http-port", "0"],
        stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 60
    while True:
        text = open(log_path, errors="replace").read()
        listening = re.search(r"listening for RethinkDB drivers driver_address=\S+:(\d+)", text)
        if listening:
            return process, int(listening.group(1))
        if process.poll() is not None or time.time() > deadline:
            raise RuntimeError("server did not start:\n" + text)
        time.sleep(0.05)


# ----- running one file ----------------------------------------------------

def pick(entry):
    """The Python form of a per-language value, or None for other languages."""
    if isinstance(entry, dict):
        for key in LANGUAGE_KEYS:
            if key in entry:
                return entry[key]
        return None
    return entry


ASSIGNMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*=(?!=)\s*(.+)$", re.S)


USER_CONNECTIONS = {}


def connection_as(connection, user):
    """A connection as `user` (empty password), for `runopts: user`."""
    key = (connection.port, user)
    if key not in USER_CONNECTIONS:
        USER_CONNECTIONS[key] = r.connect(host=connection.host, port=connection.port, user=user, password="",
                                          timeout=QUERY_TIMEOUT_SECONDS)
    return USER_CONNECTIONS[key]


def run_source(source, scope, connection, runopts, keep_cursor=False):
    runopts = dict(runopts)
    user = runopts.pop("user", None)
    if user is not None:
        connection = connection_as(connection, user)
    match = ASSIGNMENT.match(source)
    target, expression = (match.group(1), match.group(2)) if match else (None, source)
    value = eval(expression, scope)
    if isinstance(value, r.RqlQuery if hasattr(r, "RqlQuery") else object) or hasattr(value, "run") and hasattr(value, "build"):
        options = {"max_batch_rows": 3}
        options.update(runopts)
        value = value.run(connection, **options)
    if isinstance(value, Cursor):
        if target and keep_cursor:
            # Kept open: a changefeed assigned here is read later by `fetch`.
            scope[target] = value
            return value
        value = drain(value)
    if target:
        scope[target] = value
    return value


def drain(cursor, wait=10.0):
    """Every item of a cursor; a changefeed that stops delivering before it
    ends is an error rather than a hang."""
    items = []
    while True:
        try:
            items.append(cursor.next(wait=wait))
        except (StopIteration, reql_errors.ReqlCursorEmpty):
            return items


def fetch(cursor, limit=None, timeout=0.2):
    """RethinkDB's test helper: up to `limit` items from a (feed) cursor,
    as many as arrive in time. The time allowed is generous: CI machines
    are slow, and with a limit it only matters when items are missing."""
    limit = int(limit) if limit is not None else None
    deadline = time.time() + max(float(timeout), 2.0)
    items = []
    while limit is None or len(items) < limit:
        remaining = deadline - time.time()
        if remaining <= 0:
            break
        try:
            items.append(cursor.next(wait=remaining))
        except (StopIteration, reql_errors.ReqlCursorEmpty, reql_errors.ReqlTimeoutError):
            break
    return items


def prepare(connection, table_names):
    if "test" not in r.db_list().run(connection):
        r.db_create("test").run(connection)
    for name in r.db_list().run(connection):
        if name not in ("test", "rethinkdb"):
            r.db_drop(name).run(connection)
    for name in r.db("test").table_list().run(connection):
        r.db("test").table_drop(name).run(connection)
    for name in table_names:
        r.db("test").table_create(name).run(connection)
    # As RethinkDB's runner does between files.
    r.db("rethinkdb").table("_debug_scratch").delete().run(connection)


def run_file(path, connection, show, report):
    document = suite_reader.read(path.read_text())
    table_names = (document.get("table_variable_name") or "").replace(",", " ").split()
    scope = helpers()
    try:
        prepare(connection, table_names)
    except Exception as error:  # noqa: BLE001 - any failure here fails the file's setup
        report.append("  setup failed: %s" % error)
        return 0, 1
    if "test_user" in path.read_text():
        # RethinkDB's harness gives the files that use it a `test_user`
        # holding every global permission.
        users = r.db("rethinkdb").table("users")
        if users.get("test_user").run(connection) is None:
            users.insert({"id": "test_user", "password": False}).run(connection)
        r.grant("test_user", {"read": True, "write": True, "config": True, "connect": True}).run(connection)
    for name in table_names:
        scope[name] = r.db("test").table(name)
    passed = failed = 0
    for entry in document.get("tests") or []:
        if not isinstance(entry, dict):
            continue
        definition = pick(entry.get("def")) if "def" in entry else None
        if definition:
            for source in definition if isinstance(definition, list) else [definition]:
                try:
                    match = ASSIGNMENT.match(source)
                    if match:
                        scope[match.group(1)] = eval(match.group(2), scope)
                    else:
                        exec(source, scope)
                except Exception:  # noqa: BLE001 - a broken definition fails the tests using it
                    pass
            if not any(key in entry for key in LANGUAGE_KEYS):
                continue
        commands = None
        for key in LANGUAGE_KEYS:
            if key in entry:
                commands = entry[key]
                break
        if commands is None:
            continue
        commands = commands if isinstance(commands, list) else [commands]
        expected_source = pick(entry.get("ot")) if "ot" in entry else None
        runopts = {}
        for name, source in (entry.get("runopts") or {}).items():
            if name == "user":
                runopts[name] = str(source)  # a user name, not an expression
                continue
            try:
                runopts[name] = eval(source, scope)
            except Exception:  # noqa: BLE001
                pass
        precision = 0
        testopts = entry.get("testopts") or {}
        if isinstance(testopts, dict) and testopts.get("precision"):
            precision = float(testopts["precision"])
        for source in commands:
            if not isinstance(source, str):
                continue
            try:
                actual = run_source(source, scope, connection, runopts, keep_cursor=expected_source is None)
            except (reql_errors.ReqlError, Exception) as error:  # noqa: BLE001 - errors are results here
                actual = error
            try:
                expected = eval(expected_source, scope) if expected_source is not None else Predicate("no error", lambda value: True)
                ok = compare(expected, actual, precision)
            except Exception as error:  # noqa: BLE001
                expected, ok = "<cannot evaluate %r: %s>" % (expected_source, error), False
            if ok:
                passed += 1
            else:
                failed += 1
                if show and failed <= show:
                    report.append("  FAIL %s\n       expected: %r\n       actual:   %r" % (source, expected, _describe(actual)))
    return passed, failed


def _describe(actual):
    if isinstance(actual, Exception):
        return "%s(%r)" % (type(actual).__name__, getattr(actual, "message", str(actual)))
    return actual


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite")
    parser.add_argument("--binary", default=os.environ.get("PHOTONDB_BIN", str(ROOT / "target" / "debug" / "photondb")))
    parser.add_argument("--floor-file")
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--show", type=int, default=5, help="failures shown per file")
    parser.add_argument("--markdown", help="also write the per-file table to this file")
    arguments = parser.parse_args()

    suite = pathlib.Path(arguments.suite)
    files = sorted(path for path in suite.rglob("*.yaml") if not arguments.only or any(part in str(path) for part in arguments.only))
    total_passed = total_failed = 0
    per_file = []
    with tempfile.TemporaryDirectory(prefix="photondb-conformance-") as directory:
        process, port = start_server(arguments.binary, directory)
        try:
            for path in files:
                report = []
                try:
                    connection = r.connect(port=port, timeout=QUERY_TIMEOUT_SECONDS)
                    try:
                        passed, failed = run_file(path, connection, arguments.show, report)
                    finally:
                        try:
                            connection.close()
                        except Exception:  # noqa: BLE001 - a dead connection has nothing to close
                            pass
                except Exception as error:  # noqa: BLE001 - one broken file must not stop the run
                    passed, failed = 0, 1
                    report.append("  file aborted: %s" % "".join(traceback.format_exception_only(type(error), error)).strip())
                if process.poll() is not None:
                    print("%s: the server died:\n%s" % (path.relative_to(suite), open(os.path.join(directory, "server.log"), errors="replace").read()[-4000:]))
                    print("conformance: server crashed")
                    return 1
                total_passed += passed
                total_failed += failed
                per_file.append((str(path.relative_to(suite)), passed, failed))
                print("%-40s %4d passed, %4d failed" % (path.relative_to(suite), passed, failed))
                for line in report:
                    print(line)
                sys.stdout.flush()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    print("conformance: %d passed, %d failed" % (total_passed, total_failed))
    if arguments.markdown:
        lines = ["| file | passed | of | % |", "|---|---:|---:|---:|"]
        for name, passed, failed in per_file:
            total = passed + failed
            lines.append("| %s | %d | %d | %s |" % (name, passed, total, "%.0f" % (100.0 * passed / total) if total else "–"))
        lines.append("| **all** | **%d** | **%d** | **%.0f** |" % (total_passed, total_passed + total_failed, 100.0 * total_passed / max(1, total_passed + total_failed)))
        pathlib.Path(arguments.markdown).write_text("\n".join(lines) + "\n")
    if arguments.floor_file:
        floor = int(pathlib.Path(arguments.floor_file).read_text().split()[0])
        if total_passed < floor:
            print("below the floor: %d passed, the floor is %d" % (total_passed, floor))
            return 1
        print("floor %d held" % floor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
