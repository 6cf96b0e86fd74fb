"""NumPy helpers: weights as a dict of arrays (`run(trainer, format="numpy")`), and conversion to and from Tensors.

NumPy has no bfloat16, so BF16 tensors arrive as float32 arrays and are rounded back to BF16 (nearest even) on the
way out. Integer buffers must come back holding integers.
"""
import numpy as np

from .safetensors import Tensor

__all__ = ["to_numpy", "from_numpy", "NumpyFormat"]

_NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def to_numpy(t):
    """A writable array of the tensor's values (BF16 as float32)."""
    if t.dtype == "BF16":
        bits = np.frombuffer(t.data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(t.shape).copy()
    return np.frombuffer(t.data, dtype=_NP[t.dtype]).reshape(t.shape).copy()


def from_numpy(a, dtype):
    """Packs array `a` as a Tensor of `dtype`; floats round to nearest even, integers must be whole."""
    a = np.asarray(a)
    if dtype == "BF16":
        bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
        nan = np.isnan(a.astype(np.float32))
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        rounded[nan] = 0x7FC0
        return Tensor("BF16", a.shape, rounded.astype("<u2").tobytes())
    if dtype not in ("F64", "F32", "F16") and a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.rint(a)):
            raise ValueError(f"an integer ({dtype}) tensor came back holding non-integers")
    return Tensor(dtype, a.shape, np.ascontiguousarray(a).astype(_NP[dtype]).tobytes())


class NumpyFormat:
    def to_user(self, tensors, task):
        return {k: to_numpy(t) for k, t in tensors.items()}

    def from_user(self, weights, like):
        return {k: from_numpy(v, like[k].dtype if k in like else "F32") for k, v in weights.items()}
