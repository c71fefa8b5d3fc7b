"""Reads a GGUF v3 file into editable parts and writes it back, byte for byte when
nothing changed: for tests that make hostile variants of a good model.

Nothing here validates: a test may set a count, a length or a type to anything, and
the writer puts it on disk as told. Keys keep their raw value bytes unless a test
replaces the value (set/set_raw); tensors are [name, dims, type, offset] lists."""
import struct

# GGUF value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FIXED = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q",
          F64: "d"}


def pack_str(s):
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack("<Q", len(b)) + b


def pack_value(vtype, v):
    """The bytes of value v of type vtype (an ARR value is (item type, [items]))."""
    if vtype in _FIXED:
        return struct.pack("<" + _FIXED[vtype], v)
    if vtype == STR:
        return pack_str(v)
    if vtype == ARR:
        itype, items = v
        return struct.pack("<IQ", itype, len(items)) + b"".join(pack_value(itype, x) for x in items)
    raise ValueError(vtype)


class _Reader:
    def __init__(self, data):
        self.d, self.o = data, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.d, self.o)
        self.o += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take("Q")
        s = self.d[self.o:self.o + n]
        self.o += n
        return s.decode()

    def value(self, vtype):
        if vtype in _FIXED:
            return self.take(_FIXED[vtype])
        if vtype == STR:
            return self.string()
        itype, n = self.take("IQ")
        return (itype, [self.value(itype) for _ in range(n)])


class Gguf:
    def __init__(self, path):
        with open(path, "rb") as f:
            data = f.read()
        r = _Reader(data)
        assert data[:4] == b"GGUF"
        r.o = 4
        self.version, n_tensors, n_kv = r.take("IQQ")
        self.kvs = []  # [key, type, value bytes]
        for _ in range(n_kv):
            key, vtype = r.string(), r.take("I")
            start = r.o
            r.value(vtype)
            self.kvs.append([key, vtype, data[start:r.o]])
        self.tensors = []
        for _ in range(n_tensors):
            name = r.string()
            nd = r.take("I")
            dims = [r.take("Q") for _ in range(nd)]
            ttype, off = r.take("IQ")
            self.tensors.append([name, dims, ttype, off])
        self.align = self.get("general.alignment", 32)
        self.data = data[(r.o + self.align - 1) // self.align * self.align:]
        # What the writer puts in the header; tests may set them to lie.
        self.n_tensors = self.n_kv = None

    def get(self, key, default=None):
        for k, t, raw in self.kvs:
            if k == key:
                return _Reader(raw).value(t)
        return default

    def set(self, key, vtype, v):
        self.set_raw(key, vtype, pack_value(vtype, v))

    def set_raw(self, key, vtype, raw):
        for kv in self.kvs:
            if kv[0] == key:
                kv[1], kv[2] = vtype, raw
                return
        self.kvs.append([key, vtype, raw])

    def drop(self, key):
        self.kvs = [kv for kv in self.kvs if kv[0] != key]

    def tensor(self, name):
        return next(t for t in self.tensors if t[0] == name)

    def header(self):
        n_t = len(self.tensors) if self.n_tensors is None else self.n_tensors
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        return b"GGUF" + struct.pack("<IQQ", self.version, n_t, n_kv)

    def kv_bytes(self):
        return b"".join(pack_str(k) + struct.pack("<I", t) + raw for k, t, raw in self.kvs)

    def tensor_bytes(self):
        out = b""
        for name, dims, ttype, off in self.tensors:
            out += pack_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            out += struct.pack("<IQ", ttype, off)
        return out

    def to_bytes(self):
        meta = self.header() + self.kv_bytes() + self.tensor_bytes()
        return meta + b"\0" * (-len(meta) % self.align) + self.data

    def write(self, path):
        with open(path, "wb") as f:
            f.write(self.to_bytes())
