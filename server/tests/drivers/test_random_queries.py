"""Random term trees and malformed queries against a live server: every
query gets an answer and the server never dies. Seeded and bounded;
PHOTONDB_FUZZ_SEED picks another seed for a longer hunt."""
import json
import random
import struct

from rethinkdb import RethinkDB

from test_protocol_errors import read_frame

r = RethinkDB()

TERM_TYPES = list(range(1, 200))
SCALARS = [0, 1, -1, 2.5, 1e300, "", "a", "id", "test", None, True, False, {"a": 1}, {"id": 1, "b": [1, 2]}]


def random_term(rng, depth):
    if depth == 0 or rng.random() < 0.3:
        value = rng.choice(SCALARS)
        if isinstance(value, list):
            return [2, value]
        return value
    kind = rng.choice(TERM_TYPES)
    args = [random_term(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    if kind == 69:  # a well-formed function now and then
        return [69, [[2, [1]], random_term(rng, depth - 1)]]
    if rng.random() < 0.2:
        return [kind, args, {rng.choice(["index", "default", "conflict", "durability", "x"]): random_term(rng, 0)}]
    return [kind, args]


def send(sock, token, payload):
    sock.sendall(struct.pack("<QI", token, len(payload)) + payload)


def test_random_terms_always_get_an_answer(server):
    import os
    rng = random.Random(int(os.environ.get("PHOTONDB_FUZZ_SEED", "20261127")))
    connection = r.connect(port=server.port)
    r.table_create("fuzz").run(connection)
    r.table("fuzz").insert([{"id": i, "b": [i]} for i in range(20)]).run(connection)
    sock = connection._instance._socket._socket
    table = [15, [[14, ["test"]], "fuzz"]]
    for token in range(1, 1501):
        term = random_term(rng, 4)
        if rng.random() < 0.3:
            term = [rng.choice(TERM_TYPES), [table, random_term(rng, 2)]]
        send(sock, token, json.dumps([1, term, {}]).encode())
        reply_token, reply = read_frame(sock)
        assert reply_token == token
        assert reply["t"] in (1, 2, 3, 16, 17, 18), reply
        if reply["t"] == 3:  # a partial stream: stop it
            send(sock, token, json.dumps([3]).encode())
            assert read_frame(sock)[0] == token
    # Malformed bodies.
    for token, body in enumerate([b"", b"[", b"null", b"[1]", b"[99, 1]", b"[1, [1, 2, 3, 4]]", b'{"a": 1}', b"[1, 1, 5]"], start=5000):
        send(sock, token, body)
        reply_token, reply = read_frame(sock)
        assert reply_token == token and reply["t"] in (16, 17, 18), (body, reply)
    assert r.expr("still alive").run(connection) == "still alive"
    connection.close()
