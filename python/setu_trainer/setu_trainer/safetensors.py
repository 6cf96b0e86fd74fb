"""A safetensors reader and writer in the standard library (https://github.com/huggingface/safetensors, "Format").

Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON header, then the byte buffer. Each tensor's
bytes stay as they are (little-endian, its own dtype) in a `Tensor`; `Tensor.tolist()` decodes them, including F16
(struct's "e") and BF16 (the top half of a float32). The NumPy and PyTorch helpers convert the same bytes without a
Python loop.
"""
import json
import math
import os
import struct

__all__ = ["Tensor", "DTYPES", "read_safetensors", "write_safetensors", "SafetensorsError"]

#: dtype -> (bytes per element, struct format or None for BF16)
DTYPES = {
    "F64": (8, "d"),
    "F32": (4, "f"),
    "F16": (2, "e"),
    "BF16": (2, None),
    "I64": (8, "q"),
    "I32": (4, "i"),
    "I16": (2, "h"),
    "I8": (1, "b"),
    "U8": (1, "B"),
    "BOOL": (1, "?"),
}

_MAX_HEADER = 100_000_000


class SafetensorsError(ValueError):
    """A file that is not valid safetensors, with what is wrong."""


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class Tensor:
    """One tensor: its dtype, shape and raw little-endian bytes."""

    __slots__ = ("dtype", "shape", "data")

    def __init__(self, dtype, shape, data):
        if dtype not in DTYPES:
            raise SafetensorsError(f"unsupported dtype {dtype!r} (supported: {', '.join(DTYPES)})")
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise SafetensorsError(f"shape {shape} has a negative dimension")
        # A read file's buffer (or an array's) is kept as a view, not copied: one copy of a large model in memory.
        if isinstance(data, (memoryview, bytearray)):
            data = memoryview(data)
            if data.ndim != 1 or data.format != "B":
                data = data.cast("B")
        elif not isinstance(data, bytes):
            data = bytes(data)
        if len(data) != _count(shape) * DTYPES[dtype][0]:
            raise SafetensorsError(f"{dtype}{list(shape)} needs {_count(shape) * DTYPES[dtype][0]} bytes, got {len(data)}")
        self.dtype, self.shape, self.data = dtype, shape, data

    @property
    def numel(self):
        return _count(self.shape)

    def tolist(self):
        """The values, flat, as Python numbers (floats for floating dtypes, ints for integers, bools for BOOL)."""
        n = self.numel
        if self.dtype == "BF16":
            halves = struct.unpack(f"<{n}H", self.data)
            return list(struct.unpack(f"<{n}f", struct.pack(f"<{n}I", *(h << 16 for h in halves))))
        return list(struct.unpack(f"<{n}{DTYPES[self.dtype][1]}", self.data))

    @classmethod
    def from_list(cls, dtype, shape, values):
        """Packs flat `values` as `dtype`: floats round to nearest even (F16, BF16); integers must be in range."""
        values = list(values)
        if len(values) != _count(shape):
            raise SafetensorsError(f"{len(values)} values for shape {list(shape)}")
        if dtype == "BF16":
            bits = struct.unpack(f"<{len(values)}I", struct.pack(f"<{len(values)}f", *values))
            return cls(dtype, shape, struct.pack(f"<{len(values)}H", *(_bf16_round(b) for b in bits)))
        fmt = DTYPES[dtype][1]
        if fmt in "qihbB":
            values = [_exact_int(v, dtype) for v in values]
        try:
            return cls(dtype, shape, struct.pack(f"<{len(values)}{fmt}", *values))
        except (struct.error, OverflowError) as e:
            raise SafetensorsError(f"values do not fit {dtype}: {e}") from None

    def __eq__(self, other):
        return isinstance(other, Tensor) and (self.dtype, self.shape, self.data) == (other.dtype, other.shape, other.data)

    def __repr__(self):
        return f"Tensor({self.dtype}, {list(self.shape)})"


def _bf16_round(bits):
    if (bits & 0x7F800000) == 0x7F800000 and bits & 0x7FFFFF:
        return ((bits >> 16) | 0x40) & 0xFFFF  # NaN stays NaN
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def _exact_int(v, dtype):
    if isinstance(v, float):
        if not math.isfinite(v) or v != int(v):
            raise SafetensorsError(f"{v!r} is not an integer; {dtype} holds integers")
        v = int(v)
    return v


def read_safetensors(path_or_bytes):
    """Returns (tensors, metadata): a dict name -> Tensor in the file's order, and the __metadata__ strings.

    A file is read into one writable buffer and each tensor's data is a view of it (no second copy): the NumPy
    helpers hand those views out as arrays.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        raw = bytes(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            raw = bytearray(os.fstat(f.fileno()).st_size)
            got = f.readinto(raw)
        if got != len(raw):
            raise SafetensorsError(f"read {got} of the file's {len(raw)} bytes (was it changed while being read?)")
    if len(raw) < 8:
        raise SafetensorsError(f"file is {len(raw)} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack_from("<Q", raw, 0)
    if n > len(raw) - 8 or n > _MAX_HEADER:
        raise SafetensorsError(f"header length {n} runs past the end of the file or over the limit")
    try:
        header = json.loads(bytes(memoryview(raw)[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError(f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header must be a JSON object")
    buf = memoryview(raw)[8 + n :]
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise SafetensorsError("__metadata__ must be an object of strings")
    tensors, spans = {}, []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f'tensor "{name}": entry must have dtype, shape and data_offsets') from None
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= len(buf)):
            raise SafetensorsError(f'tensor "{name}": data_offsets [{begin}, {end}] out of range (buffer is {len(buf)} bytes)')
        try:
            tensors[name] = Tensor(dtype, shape, buf[begin:end])
        except SafetensorsError as e:
            raise SafetensorsError(f'tensor "{name}": {e}') from None
        spans.append((begin, end, name))
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            raise SafetensorsError(f'tensor "{name}" starts at {begin}: the tensors must tile the buffer exactly')
        at = end
    if at != len(buf):
        raise SafetensorsError(f"bytes {at}..{len(buf)} of the buffer belong to no tensor")
    return tensors, dict(meta)


def write_safetensors(path, tensors, metadata=None):
    """Writes `tensors` (name -> Tensor) sorted by name, the buffer 8-aligned, atomically (temp file + rename)."""
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, Tensor):
            raise TypeError(f'tensor "{name}" is a {type(t).__name__}, not a setu_trainer.Tensor')
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(t.data)]}
        offset += len(t.data)
        blobs.append(t.data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)  # a reader never sees a half-written file
