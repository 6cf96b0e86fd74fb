"""NumPy helpers: weights as a dict of arrays (`run(trainer, format="numpy")`), and conversion to and from Tensors.

NumPy has no bfloat16, so BF16 tensors arrive as float32 arrays and are rounded back to BF16 (nearest even) on the
way out. Integer buffers must come back holding integers. The other arrays are views of the one buffer the weights
file was read into, and the arrays returned are written from their own memory: a trainer that changes its weights in
place holds about one copy of the model.
"""
import numpy as np

from .safetensors import Tensor

__all__ = ["to_numpy", "from_numpy", "NumpyFormat"]

_NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def to_numpy(t):
    """A writable array of the tensor's values (BF16 as float32): a view of a writable buffer (a file read by
    read_safetensors), else a copy."""
    if t.dtype == "BF16":
        bits = np.frombuffer(t.data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(t.shape)
    a = np.frombuffer(t.data, dtype=_NP[t.dtype]).reshape(t.shape)
    return a if a.flags.writeable else a.copy()


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
    # No copy when the array already is contiguous in the tensor's dtype (a trainer that changed its weights in place).
    out = np.ascontiguousarray(a).astype(_NP[dtype], copy=False)
    return Tensor(dtype, a.shape, memoryview(out.reshape(-1).view(np.uint8)))


class NumpyFormat:
    #: to_user gives views of the buffer read (contract.run_task makes evaluate's read-only, so fit's start unchanged)
    shares_buffer = True

    def to_user(self, tensors, task, readonly=False):
        out = {k: to_numpy(t) for k, t in tensors.items()}
        if readonly:
            for a in out.values():
                a.flags.writeable = False
        return out

    def from_user(self, weights, like):
        return {k: from_numpy(v, like[k].dtype if k in like else "F32") for k, v in weights.items()}
