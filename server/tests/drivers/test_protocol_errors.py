"""Hostile and malformed clients at the wire level: a clear error, never a
crash, and the server keeps serving others."""
import json
import socket
import struct

from rethinkdb import RethinkDB

r = RethinkDB()


def handshake(port):
    """A V1_0 handshake for admin with an empty password, done with the
    driver's own SCRAM code so the bytes are exactly a driver's."""
    connection = r.connect(port=port)
    return connection


def raw(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_nul(sock):
    data = b""
    while not data.endswith(b"\0"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_unknown_magic_gets_the_plain_text_error(server):
    with raw(server.port) as sock:
        sock.sendall(struct.pack("<I", 0x12345678))
        reply = read_until_nul(sock)
        assert reply.startswith(b"ERROR: Received an unsupported protocol version.")


def test_malformed_handshake_json_is_refused(server):
    with raw(server.port) as sock:
        sock.sendall(struct.pack("<I", 0x34C2BDC3))
        hello = json.loads(read_until_nul(sock)[:-1])
        assert hello["success"] is True and hello["max_protocol_version"] == 0
        sock.sendall(b"{not json\0")
        reply = json.loads(read_until_nul(sock)[:-1])
        assert reply["success"] is False and reply["error_code"] == 4


def read_frame(sock):
    header = b""
    while len(header) < 12:
        header += sock.recv(12 - len(header))
    token, length = struct.unpack("<QI", header)
    data = b""
    while len(data) < length:
        data += sock.recv(length - len(data))
    return token, json.loads(data)


def query(connection, token, body):
    """Sends a raw query frame on the driver's authenticated socket."""
    payload = json.dumps(body).encode() if not isinstance(body, bytes) else body
    sock = connection._instance._socket._socket
    sock.sendall(struct.pack("<QI", token, len(payload)) + payload)
    reply_token, reply = read_frame(sock)
    assert reply_token == token
    return reply


def test_bad_queries_get_errors_and_the_connection_stays_open(server):
    connection = handshake(server.port)
    assert query(connection, 900, b"[1, [") ["t"] == 16
    assert query(connection, 901, [2])["r"] == ["Token 901 not in stream cache."]
    unknown_optarg = query(connection, 902, [1, 1, {"bogus": 1}])
    assert unknown_optarg["t"] == 17 and "Unrecognized global optional argument `bogus`" in unknown_optarg["r"][0]
    assert query(connection, 903, [1, [999999, []]])["t"] == 17
    assert query(connection, 904, [1, [24, [1, "a"]]])["t"] == 18
    assert query(connection, 905, [1, 41])["r"] == [41]
    connection.close()


def test_parses_after_a_large_query_see_only_their_own_bytes(server):
    """The parser's working memory is kept between queries: a large query,
    then small, malformed and large ones again, each answered as itself."""
    connection = handshake(server.port)
    big = [{"id": n, "text": "x" * 2000, "nested": {"n": n}} for n in range(1500)]
    answer = query(connection, 910, [1, [2, big]])
    assert answer["t"] == 1 and answer["r"][0][1499] == big[1499]
    assert query(connection, 911, [1, [2, [1, 2]]])["r"] == [[1, 2]]
    assert query(connection, 912, b'[1, ["unterminated')["t"] == 16
    assert query(connection, 913, [1, {"a": "b"}])["r"] == [{"a": "b"}]
    smaller = big[:700]
    answer = query(connection, 914, [1, [2, smaller]])
    assert answer["r"][0] == smaller
    connection.close()


def test_an_oversized_frame_closes_only_that_connection(server):
    connection = handshake(server.port)
    sock = connection._instance._socket._socket
    sock.sendall(struct.pack("<QI", 1, 128 << 20))
    header = sock.recv(12)
    token, length = struct.unpack("<QI", header)
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    assert json.loads(body)["t"] == 16
    assert sock.recv(1) == b"", "the server closes the connection"
    other = handshake(server.port)
    assert r.expr("fine").run(other) == "fine"
    other.close()


def test_deep_queries_never_kill_the_server(server):
    """Regression: evaluation recursed past a 2 MiB shard stack on an
    8-level query over a 100,000-element array, aborting the process."""
    connection = handshake(server.port)
    r.table_create("deep").run(connection)
    ten = r.expr(list(range(10)))
    huge = ten.concat_map(lambda row: list(range(10))).concat_map(lambda row: list(range(10))) \
        .concat_map(lambda row: list(range(10))).concat_map(lambda row: list(range(10)))
    result = r.table("deep").insert({"id": 0, "count": huge.append(1).count()}).run(connection, array_limit=100001)
    assert result["inserted"] == 1
    assert r.table("deep").get(0)["count"].run(connection) == 100001
    too_large = r.table("deep").insert({"id": 1, "array": huge.append(1)}).run(connection, array_limit=100001)
    assert too_large["first_error"] == "Array too large for disk writes (limit 100,000 elements)." 
    nested = r.expr(1)
    for _ in range(60):
        nested = r.expr([nested])
    assert str(nested.run(connection)).count("[") == 60
    too_deep = r.expr(1)
    for _ in range(200):
        too_deep = r.expr([too_deep])
    try:
        too_deep.run(connection)
    except Exception:
        pass  # refused with an error is fine; the server must live on
    assert r.expr("alive").run(connection) == "alive"
    connection.close()


def test_queries_on_one_connection_run_concurrently(server):
    connection = handshake(server.port)
    sock = connection._instance._socket._socket
    ten = [2, list(range(10))]
    # A query that takes a while: 10^5 rows built by nested concat_maps.
    body = ten
    for _ in range(4):
        body = [40, [body, [69, [[2, [1]], [2, list(range(10))]]]]]
    slow = json.dumps([1, [43, [body]], {}]).encode()
    fast = json.dumps([1, "quick", {}]).encode()
    sock.sendall(struct.pack("<QI", 1, len(slow)) + slow + struct.pack("<QI", 2, len(fast)) + fast)
    first = read_frame(sock)
    second = read_frame(sock)
    assert first == (2, {"t": 1, "r": ["quick"]}), "the quick query is answered before the slow one"
    assert second[0] == 1 and second[1]["r"] == [100000]
    # NOREPLY_WAIT answers only after earlier queries finished.
    noreply = json.dumps([1, [43, [body]], {"noreply": True}]).encode()
    wait = json.dumps([4]).encode()
    sock.sendall(struct.pack("<QI", 3, len(noreply)) + noreply + struct.pack("<QI", 4, len(wait)) + wait)
    assert read_frame(sock) == (4, {"t": 4, "r": []})
    connection.close()


def test_batch_options_shape_the_batches(server):
    connection = handshake(server.port)
    range_query = [173, [0, 100]]  # r.range(0, 100)
    first = query(connection, 1000, [1, range_query, {"max_batch_rows": 8}])
    assert first["t"] == 3 and first["r"] == list(range(2)), "first batch is scaled down 4x by default"
    scaled = query(connection, 1001, [1, range_query, {"max_batch_rows": 8, "first_batch_scaledown_factor": 1}])
    assert scaled["r"] == list(range(8))
    following = query(connection, 1001, [2])
    assert following["t"] == 3 and following["r"] == list(range(8, 16))
    assert query(connection, 1001, [3])["t"] == 2, "STOP ends the stream"
    bad = query(connection, 1002, [1, range_query, {"max_batch_rows": "many"}])
    assert bad["t"] == 18 and bad["r"] == ["Expected type NUMBER but found STRING."]
    connection.close()


def test_profile_is_returned_when_asked(server):
    connection = handshake(server.port)
    result = r.expr(2).add(3).run(connection, profile=True)
    assert result["value"] == 5
    assert result["profile"][0]["duration(ms)"] >= 0
    raw_reply = query(connection, 1100, [1, 1])
    assert "p" not in raw_reply
    connection.close()
