#!/usr/bin/env python3
"""A bulk sink for the `es` case of benches/e2e.py: the Elasticsearch `_bulk` API reduced to
what a client needs to go on, answered at once, so the daemon under test is what is measured.

    benches/es_sink.py PORT [--dump FILE]

- `POST`/`PUT` `.../_bulk`: counts the action lines of the NDJSON body without parsing the
  documents (lines starting `{"index"` or `{"create"`, as the clients benchmarked write them;
  a source line cannot start so, and rsyslog adds blank lines, so lines / 2 would not do) and
  answers `200 {"took":0,"errors":false,"items":[...]}` with one
  item per action, named after the body's first action (`create` or `index`), status 201.
- `GET /_sink` answers `{"docs":N,"requests":R,"last":T}`: documents counted, bulk requests,
  and when (time.time()) the last one arrived. `POST /_sink/reset` zeroes them.
- Any other `GET`/`HEAD` (`/`, `/_cat/health`, ...): 200 with a small cluster-info body, as
  clients ask before their first bulk. `Expect: 100-continue` is answered (libcurl sends it).
- HTTP/1.1 keep-alive, a thread per connection; bodies in `Content-Length` or chunked.
  `--dump FILE` appends each bulk body to FILE (for looking at what a client sends).
"""
import socket
import sys
import threading
import time

LOCK = threading.Lock()
STATE = {"docs": 0, "requests": 0, "last": 0.0}
DUMP = None
INFO = (b'{"name":"es-sink","cluster_name":"es-sink","version":{"number":"8.15.0",'
        b'"build_flavor":"default"},"tagline":"You Know, for Search"}')


def reply(conn, status, body, ctype=b"application/json"):
    conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nX-elastic-product: Elasticsearch\r\n"
                 b"Content-Length: %d\r\n\r\n" % (status, b"OK" if status == 200 else b"Error",
                                                  ctype, len(body)) + body)


class Conn:
    def __init__(self, sock):
        self.sock, self.buf = sock, bytearray()

    def fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError
        self.buf += data

    def line(self):
        while (i := self.buf.find(b"\r\n")) < 0:
            self.fill()
        line = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return line

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


def body_of(c, headers):
    if headers.get(b"expect", b"").lower() == b"100-continue":
        c.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        parts = []
        while True:
            size = int(c.line().split(b";")[0], 16)
            if size == 0:
                while c.line():
                    pass
                return b"".join(parts)
            parts.append(c.exactly(size))
            c.exactly(2)
    return c.exactly(int(headers.get(b"content-length", b"0")))


def bulk(c, body):
    if DUMP:
        with LOCK, open(DUMP, "ab") as f:
            f.write(body if body.endswith(b"\n") else body + b"\n")
    n = body.count(b'\n{"index"') + body.count(b'\n{"create"') + \
        (1 if body.startswith((b'{"index"', b'{"create"')) else 0)
    op = b"create" if body.lstrip()[:9] == b'{"create"' else b"index"
    item = b'{"%s":{"_index":"sink","_id":"x","_version":1,"result":"created","status":201}}' % op
    answer = b'{"took":0,"errors":false,"items":[' + b",".join([item] * n) + b"]}"
    with LOCK:
        STATE["docs"] += n
        STATE["requests"] += 1
        STATE["last"] = time.time()
    reply(c.sock, 200, answer)


def serve(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c = Conn(sock)
    try:
        while True:
            request = c.line()
            if not request:
                continue
            method, path = request.split(b" ")[:2]
            headers = {}
            while line := c.line():
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
            body = body_of(c, headers)
            path = path.split(b"?")[0]
            if path.endswith(b"/_bulk") and method in (b"POST", b"PUT"):
                bulk(c, body)
            elif path == b"/_sink":
                with LOCK:
                    s = b'{"docs":%d,"requests":%d,"last":%.6f}' % (
                        STATE["docs"], STATE["requests"], STATE["last"])
                reply(sock, 200, s)
            elif path == b"/_sink/reset":
                with LOCK:
                    STATE.update(docs=0, requests=0, last=0.0)
                reply(sock, 200, b"{}")
            elif path.startswith(b"/_cat/health"):
                reply(sock, 200, b"1700000000 00:00:00 es-sink green 1 1 0 0 0 0 0 0 - 100.0%\n",
                      b"text/plain")
            else:
                reply(sock, 200, INFO)
    except (EOFError, ConnectionError, ValueError):
        pass
    finally:
        sock.close()


def main():
    global DUMP
    args = sys.argv[1:]
    if "--dump" in args:
        i = args.index("--dump")
        DUMP = args[i + 1]
        del args[i:i + 2]
    port = int(args[0]) if args else 0
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)
    print(srv.getsockname()[1], flush=True)
    while True:
        sock, _ = srv.accept()
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
