"""A large model through the NumPy format holds about one copy of its weights: the file is read into one buffer, the
arrays are views of it, fit changes them in place, and the output is written from the same memory (no tobytes, no
Python float per value in the output checks). Measured with tracemalloc, which counts NumPy's and bytearray's memory."""
import os
import tracemalloc
import unittest

import numpy as np

from helpers import make_task, read_result
from setu_trainer import Tensor, read_safetensors, run_task
from setu_trainer.numpy import from_numpy
import setu_trainer as setu

N = 8_000_000  # 32 MB of float32 in two tensors


class InPlace(setu.Trainer):
    def fit(self, weights, config):
        for a in weights.values():
            a += np.float32(0.25)
        return weights, 3, {"loss": 0.5}

    def evaluate(self, weights, config):
        # Evaluate's arrays are read-only views: fit must start from the weights as they came.
        self.evaluate_writable = [a.flags.writeable for a in weights.values()]
        return 3, {"loss": 0.5}


class NumpyMemoryTest(unittest.TestCase):
    def test_fit_holds_about_one_copy_of_the_weights(self):
        half = N // 2
        weights = {"a": from_numpy(np.arange(half, dtype=np.float32), "F32"), "b": from_numpy(np.full(half, 2.0, dtype=np.float32), "F32")}
        work, paths = make_task(weights)
        del weights
        tracemalloc.start()
        try:
            trainer = InPlace()
            run_task(trainer, work, format="numpy")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 1.25 * 4 * N, f"peak {peak / 1e6:.1f} MB for {4 * N / 1e6:.0f} MB of weights")
        self.assertEqual(trainer.evaluate_writable, [False, False])
        out, _ = read_safetensors(paths["output"])
        a = np.frombuffer(out["a"].data, dtype="<f4")
        self.assertEqual(a[0], 0.25)
        self.assertEqual(a[-1], np.float32(half - 1) + np.float32(0.25))
        self.assertTrue(np.all(np.frombuffer(out["b"].data, dtype="<f4") == 2.25))
        self.assertEqual(read_result(paths)["fit"]["numExamples"], 3)

    def test_a_non_finite_output_is_still_refused(self):
        class Nan(setu.Trainer):
            def fit(self, weights, config):
                weights["a"][N // 4 - 1] = np.nan
                return weights, 3, {}

        work, paths = make_task({"a": from_numpy(np.zeros(N // 2, dtype=np.float32), "F32")})
        with self.assertRaisesRegex(ValueError, 'non-finite value in tensor "a"'):
            run_task(Nan(), work, format="numpy")
        self.assertFalse(os.path.exists(paths["output"]))

    def test_tensor_views_compare_as_bytes(self):
        self.assertEqual(Tensor("F32", (1,), memoryview(bytearray(b"\0\0\x80?"))), Tensor.from_list("F32", (1,), [1.0]))


if __name__ == "__main__":
    unittest.main()
