"""A small authoritative DNS server on loopback UDP for tests: it answers A queries for
the names it is given (mutable while it runs: a replica that leaves is taken out of the
answer), NOERROR with no records for other types of a known name (AAAA, TXT), and
NXDOMAIN for unknown names. Enough for gRPC's c-ares resolver pointed at it with a
`dns://127.0.0.1:PORT/NAME:PORT` target. Counts A queries per name, so a test can see
the client re-resolve."""
import socket
import struct
import threading

QTYPE_A = 1


class DnsServer:
    def __init__(self, records):
        self.records = {k.lower().rstrip("."): list(v) for k, v in records.items()}
        self.a_queries = {}
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def set(self, name, addrs):
        with self.lock:
            self.records[name.lower().rstrip(".")] = list(addrs)

    def queries(self, name):
        with self.lock:
            return self.a_queries.get(name.lower().rstrip("."), 0)

    def close(self):
        self.sock.close()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            reply = self._answer(data)
            if reply:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    return

    def _answer(self, data):
        if len(data) < 12:
            return None
        qid, flags, qdcount = struct.unpack(">HHH", data[:6])
        if flags & 0x8000 or qdcount != 1:
            return None
        labels, i = [], 12
        while i < len(data) and data[i]:
            n = data[i]
            labels.append(data[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        if i + 5 > len(data):
            return None
        question = data[12:i + 5]
        qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
        name = ".".join(labels).lower()
        with self.lock:
            addrs = self.records.get(name)
            if qtype == QTYPE_A and addrs is not None:
                self.a_queries[name] = self.a_queries.get(name, 0) + 1
        rcode = 0 if addrs is not None else 3
        answers = b""
        count = 0
        if qtype == QTYPE_A and addrs:
            for a in addrs:
                # A pointer to the question's name (offset 12), class IN, TTL 1 s.
                answers += struct.pack(">HHHIH", 0xC00C, QTYPE_A, 1, 1, 4) + socket.inet_aton(a)
                count += 1
        # Response, authoritative, recursion desired copied, recursion available.
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        return struct.pack(">HHHHHH", qid, rflags, 1, count, 0, 0) + question + answers
