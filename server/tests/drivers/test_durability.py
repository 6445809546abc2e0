"""Hard-durability inserts from several connections, the server SIGKILLed
mid-stream, restarted on the same data directory: every acknowledged
document is there."""
import threading
import time

from rethinkdb import RethinkDB

from conftest import Server

r = RethinkDB()


def test_acknowledged_inserts_survive_sigkill(data_dir):
    server = Server(data_dir).start()
    setup = r.connect(port=server.port)
    r.table_create("ledger").run(setup)
    setup.close()

    acknowledged = [[] for _ in range(6)]
    stop = threading.Event()

    def writer(index):
        connection = r.connect(port=server.port)
        sequence = 0
        try:
            while not stop.is_set():
                document = {"id": "w%d-%d" % (index, sequence), "writer": index}
                result = r.table("ledger").insert(document, durability="hard").run(connection)
                if result["inserted"] == 1:
                    acknowledged[index].append(document["id"])
                sequence += 1
        except Exception:
            pass  # the kill cuts the connection mid-query

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join()
    total = sum(len(ids) for ids in acknowledged)
    assert total > 50, "the writers made progress before the kill"

    server = Server(data_dir, port=server.port).start()
    connection = r.connect(port=server.port)
    for ids in acknowledged:
        for document_id in ids:
            assert r.table("ledger").get(document_id).run(connection) is not None, document_id
    assert r.table("ledger").count().run(connection) >= total
    connection.close()
    server.stop()
