import contextlib
import io
import json
import os
import subprocess
import sys
import unittest

import setu_trainer as setu
from setu_trainer import Tensor, read_safetensors, run_task, task_seed, tensors_from_lists

from helpers import make_task, read_result

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.dirname(HERE)


def weights():
    return {"w": Tensor.from_list("F16", (2,), [0.5, 1.0]), "n": Tensor.from_list("I64", (), [3]), "b": Tensor.from_list("F32", (1,), [0.0])}


class AddOne(setu.Trainer):
    """Adds one to every float; counts the batches in `n`."""

    def fit(self, w, config):
        config.progress(step=1, of=1, loss=0.25)
        out = {k: [v + 1 for v in t.tolist()] if t.dtype != "I64" else [t.tolist()[0] + 2] for k, t in w.items()}
        return tensors_from_lists(out, w), 10, {"loss": 0.25}

    def evaluate(self, w, config):
        return 4, {"auroc": 0.75, "undefined": float("nan")}


class ContractTest(unittest.TestCase):
    def test_fit_writes_the_same_names_shapes_and_dtypes_and_evaluates_the_incoming_weights(self):
        work, paths = make_task(weights())
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            run_task(AddOne(), work)
        self.assertEqual(printed.getvalue(), 'setu:progress {"step": 1, "of": 1, "metrics": {"loss": 0.25}}\n')
        out, meta = read_safetensors(paths["output"])
        self.assertEqual({k: (t.dtype, t.shape) for k, t in out.items()}, {k: (t.dtype, t.shape) for k, t in weights().items()})
        self.assertEqual(out["w"].tolist(), [1.5, 2.0])
        self.assertEqual(out["n"].tolist(), [5])
        self.assertEqual(read_result(paths), {"evaluate": {"numExamples": 4, "metrics": {"auroc": 0.75}}, "fit": {"numExamples": 10, "metrics": {"loss": 0.25}}})

    def test_evaluate_task_writes_only_the_evaluation(self):
        work, paths = make_task(weights(), kind="evaluate")
        run_task(AddOne(), work)
        self.assertFalse(os.path.exists(paths["output"]))
        self.assertEqual(read_result(paths), {"evaluate": {"numExamples": 4, "metrics": {"auroc": 0.75}}})

    def test_numpy_format_casts_back_to_the_model_dtypes(self):
        import numpy as np

        class Numpy(setu.Trainer):
            def fit(self, w, config):
                self.seen = {k: (v.dtype.name, v.shape) for k, v in w.items()}
                return {k: v.astype(np.float64) * 2 for k, v in w.items()}, 3, {}

        t = Numpy()
        work, paths = make_task(weights())
        run_task(t, work, format="numpy")
        self.assertEqual(t.seen, {"w": ("float16", (2,)), "n": ("int64", ()), "b": ("float32", (1,))})
        out, _ = read_safetensors(paths["output"])
        self.assertEqual((out["w"].dtype, out["w"].tolist(), out["n"].dtype, out["n"].tolist()), ("F16", [1.0, 2.0], "I64", [6]))

    def test_wrong_outputs_are_refused_before_anything_is_written(self):
        class Wrong(setu.Trainer):
            def __init__(self, out, n=1):
                self.out, self.n = out, n

            def fit(self, w, config):
                return self.out(w), self.n, {}

        cases = [
            (lambda w: {k: v for k, v in w.items() if k != "b"}, 1, "missing \\['b'\\]"),
            (lambda w: {**w, "extra": w["b"]}, 1, "unexpected \\['extra'\\]"),
            (lambda w: {**w, "b": Tensor.from_list("F32", (2,), [0, 0])}, 1, 'tensor "b" of shape \\[2\\]'),
            (lambda w: {**w, "b": Tensor.from_list("F32", (1,), [float("nan")])}, 1, 'non-finite value in tensor "b"'),
            (lambda w: {**w, "b": Tensor.from_list("F16", (1,), [0])}, 1, 'tensor "b" as F16, the model has F32'),
            (lambda w: w, 0, "positive number of training examples"),
        ]
        for out, n, want in cases:
            work, paths = make_task(weights())
            with self.assertRaisesRegex(Exception, want):
                run_task(Wrong(out, n), work)
            self.assertFalse(os.path.exists(paths["output"]) or os.path.exists(paths["result"]))

    def test_dp_sgd_tasks_must_declare_what_they_did(self):
        plan = {"clipNorm": 1.0, "noiseMultiplier": 1.2, "sampleRate": 0.1, "steps": 5, "seed": "c2VjcmV0"}

        class Dp(setu.Trainer):
            def __init__(self, declare):
                self.declare = declare

            def fit(self, w, config):
                self.plan = config.dp
                if self.declare:
                    config.declare_dp_sgd(config.dp.noise_multiplier, config.dp.sample_rate, 4)
                return w, 2, {}

        work, paths = make_task(weights(), dp=plan)
        t = Dp(True)
        run_task(t, work)
        self.assertEqual((t.plan.clip_norm, t.plan.steps), (1.0, 5))
        self.assertEqual(read_result(paths)["dpSgd"], {"noiseMultiplier": 1.2, "sampleRate": 0.1, "steps": 4})
        work, _ = make_task(weights(), dp=plan)
        with self.assertRaisesRegex(RuntimeError, "declared none"):
            run_task(Dp(False), work)

    def test_task_seed_is_per_site_and_round_and_stable(self):
        self.assertEqual(task_seed(42, 1, "alpha"), task_seed(42, 1, "alpha"))
        self.assertEqual(len({task_seed(42, r, s) for r in (1, 2) for s in ("alpha", "beta")}), 4)
        self.assertEqual(task_seed(42, 1, "alpha"), 431564670)  # pinned: a plain-PyTorch reference reproduces it

    def test_run_exits_non_zero_with_the_reason_on_stderr_and_progress_on_stdout(self):
        program = "import setu_trainer as s\n" \
            "class T(s.Trainer):\n" \
            "    def fit(self, w, c):\n" \
            "        c.progress(step=1, of=2, loss=float('nan'), acc=0.5)\n" \
            "        raise RuntimeError('column age is empty')\n" \
            "s.run(T())\n"
        work, paths = make_task(weights())
        env = {**os.environ, "SETU_WORKDIR": work, "PYTHONPATH": SDK}
        p = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("setu_trainer: RuntimeError: column age is empty", p.stderr)
        self.assertEqual(p.stdout.strip(), 'setu:progress ' + json.dumps({"step": 1, "of": 2, "metrics": {"acc": 0.5}}))
        q = subprocess.run([sys.executable, "-c", program], env={k: v for k, v in env.items() if k != "SETU_WORKDIR"}, capture_output=True, text=True)
        self.assertEqual(q.returncode, 2)
        self.assertIn("SETU_WORKDIR is not set", q.stderr)

    def test_the_core_needs_neither_numpy_nor_torch(self):
        program = "import sys\n" \
            "sys.modules['numpy'] = sys.modules['torch'] = None  # any import of them fails\n" \
            "import setu_trainer as s\n" \
            "class T(s.Trainer):\n" \
            "    def fit(self, w, c):\n" \
            "        return w, 1, {}\n" \
            "s.run(T())\n"
        work, paths = make_task(weights())
        p = subprocess.run([sys.executable, "-c", program], env={**os.environ, "SETU_WORKDIR": work, "PYTHONPATH": SDK}, capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(read_result(paths), {"fit": {"numExamples": 1, "metrics": {}}})

    def test_refuses_a_task_of_another_contract_version(self):
        work, _ = make_task(weights())
        with open(os.path.join(work, "task.json")) as f:
            doc = json.load(f)
        doc["setu"] = 1
        with open(os.path.join(work, "task.json"), "w") as f:
            json.dump(doc, f)
        with self.assertRaisesRegex(ValueError, "contract version 1; this SDK speaks version 2"):
            run_task(AddOne(), work)


if __name__ == "__main__":
    unittest.main()
