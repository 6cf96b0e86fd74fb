"""The PyTorch helpers, run with real PyTorch (Debian's python3-torch). Skipped only where PyTorch is not installed;
Setu's own test run (src/site/trainers/python-sdk.test.ts) insists on it in CI."""
import contextlib
import io
import os
import unittest

try:
    import torch
    from torch import nn

    import setu_trainer.torch as st
except ImportError:  # pragma: no cover
    torch = None

import setu_trainer as setu
from setu_trainer import read_safetensors, run_task

from helpers import load_task, make_task, read_result, temp_dir


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 1))


@unittest.skipUnless(torch is not None, "PyTorch is not installed")
class TorchTest(unittest.TestCase):
    def test_state_dict_round_trips_exactly_with_its_dtypes(self):
        m = net()
        m(torch.randn(8, 4))  # moves the BatchNorm statistics and its I64 counter
        sd = m.state_dict()
        sd["half"] = torch.tensor([0.1, -2.5], dtype=torch.float16)
        sd["bf"] = torch.tensor([[1.01171875, 3.0]], dtype=torch.bfloat16)
        sd["mask"] = torch.tensor([True, False])
        w = st.from_state_dict(sd)
        self.assertEqual(w["1.num_batches_tracked"].dtype, "I64")
        self.assertEqual(w["1.num_batches_tracked"].tolist(), [1])
        self.assertEqual((w["half"].dtype, w["bf"].dtype, w["mask"].dtype, w["0.weight"].dtype), ("F16", "BF16", "BOOL", "F32"))
        back = st.to_state_dict(w)
        self.assertEqual(list(back), list(sd))
        for k in sd:
            self.assertEqual(back[k].dtype, sd[k].dtype, k)
            self.assertTrue(torch.equal(back[k], sd[k]), k)

    def test_save_then_load_state_dict_into_a_fresh_model(self):
        m = net()
        m(torch.randn(8, 4))
        path = os.path.join(temp_dir(), "init.safetensors")
        st.save(m.state_dict(), path)
        fresh = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 1))
        st.load_state_dict(fresh, path)
        for (k, a), b in zip(m.state_dict().items(), fresh.state_dict().values()):
            self.assertTrue(torch.equal(a, b), k)
        tensors, _ = read_safetensors(path)
        self.assertEqual(tensors["1.num_batches_tracked"].dtype, "I64")

    def test_a_torch_trainer_through_the_contract(self):
        torch.manual_seed(1)
        x, y = torch.randn(64, 4), torch.randint(0, 2, (64, 1)).float()

        class Trainer(setu.Trainer):
            def fit(self, weights, config):
                model = net()
                model.load_state_dict(weights)
                st.seed_everything(config.seed)
                opt = torch.optim.SGD(model.parameters(), lr=config.fit["optimizer"]["lr"])
                model.train()
                for step in range(5):
                    opt.zero_grad()
                    loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
                    loss.backward()
                    opt.step()
                    config.progress(step=step + 1, of=5, loss=loss.item())
                return model.state_dict(), len(x), {"loss": loss.item()}

            def evaluate(self, weights, config):
                model = net()
                model.load_state_dict(weights)
                model.eval()
                with torch.no_grad():
                    acc = ((model(x) > 0).float() == y).float().mean().item()
                return len(x), {"accuracy": acc}

        initial = st.from_state_dict(net().state_dict())
        work, paths = make_task(initial)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            run_task(Trainer(), work, format="torch")
        self.assertEqual(out.getvalue().count("setu:progress "), 5)
        trained, _ = read_safetensors(paths["output"])
        self.assertEqual(trained["1.num_batches_tracked"].tolist(), [5])
        self.assertNotEqual(trained["0.weight"].data, initial["0.weight"].data)
        result = read_result(paths)
        self.assertEqual(result["fit"]["numExamples"], 64)
        self.assertIn("accuracy", result["evaluate"]["metrics"])
        # The same task again trains to the same bytes: the seed comes from the task.
        work2, paths2 = make_task(initial)
        with contextlib.redirect_stdout(io.StringIO()):
            run_task(Trainer(), work2, format="torch")
        self.assertEqual(read_safetensors(paths2["output"])[0], trained)

    def test_proximal_term(self):
        m = nn.Linear(2, 1)
        g = {k: v.detach().clone() for k, v in m.state_dict().items()}
        self.assertEqual(st.proximal_term(m, g, 0.5).item(), 0.0)
        with torch.no_grad():
            m.weight += 1.0
        self.assertAlmostEqual(st.proximal_term(m, g, 0.5).item(), 0.25 * 2, places=6)

    def test_device_is_cuda_when_available_and_settable(self):
        self.assertEqual(st.device().type, "cuda" if torch.cuda.is_available() else "cpu")
        os.environ["SETU_DEVICE"] = "cpu"
        try:
            self.assertEqual(st.device(), torch.device("cpu"))
        finally:
            del os.environ["SETU_DEVICE"]


@unittest.skipUnless(torch is not None, "PyTorch is not installed")
class DpSgdTest(unittest.TestCase):
    def plan(self, **kw):
        d = {"clipNorm": 1.0, "noiseMultiplier": 0.0, "sampleRate": 1.0, "steps": 1, "seed": "c2l0ZS1zZWNyZXQ"}
        d.update(kw)
        return setu.DpPlan(d)

    def data(self):
        torch.manual_seed(3)
        return torch.randn(12, 3), torch.randn(12, 1)

    def test_per_example_clipping_matches_a_loop_over_examples(self):
        x, y = self.data()
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        ref = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        ref.load_state_dict(model.state_dict())
        clip = 0.05  # small: every example is clipped
        st.dp_sgd(model, nn.functional.mse_loss, x, y, self.plan(clipNorm=clip), torch.optim.SGD(model.parameters(), lr=0.5))
        total = [torch.zeros_like(p) for p in ref.parameters()]
        for i in range(len(x)):
            ref.zero_grad()
            nn.functional.mse_loss(ref(x[i : i + 1]), y[i : i + 1]).backward()
            gs = [p.grad.detach().clone() for p in ref.parameters()]
            norm = torch.sqrt(sum(g.pow(2).sum() for g in gs))
            for t, g in zip(total, gs):
                t += g * min(1.0, clip / (norm.item() + 1e-12))
        with torch.no_grad():
            for p, t in zip(ref.parameters(), total):
                p -= 0.5 * t / len(x)
        for a, b in zip(model.parameters(), ref.parameters()):
            self.assertTrue(torch.allclose(a, b, atol=1e-6), (a, b))

    def test_noise_and_sampling_follow_the_secret_seed_and_the_result_is_declared(self):
        x, y = self.data()
        runs = []
        for seed in ("one", "one", "two"):
            torch.manual_seed(0)
            model = nn.Linear(3, 1)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            work, _ = make_task({"w": setu.Tensor.from_list("F32", (1,), [0])}, dp={"clipNorm": 1, "noiseMultiplier": 1.3, "sampleRate": 0.25, "steps": 6, "seed": seed})
            config = load_task(work)
            done = st.dp_sgd(model, nn.functional.mse_loss, x, y, config.dp, opt, config=config)
            self.assertEqual(done, {"noise_multiplier": 1.3, "sample_rate": 0.25, "steps": 6})
            self.assertEqual(config._dp_done, {"noiseMultiplier": 1.3, "sampleRate": 0.25, "steps": 6})
            runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        self.assertTrue(torch.equal(runs[0], runs[1]), "the same seed releases the same model")
        self.assertFalse(torch.equal(runs[0], runs[2]))

    def test_batchnorm_is_refused(self):
        x, y = self.data()
        model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
        with self.assertRaisesRegex(ValueError, "BatchNorm"):
            st.dp_sgd(model, nn.functional.mse_loss, x, y, self.plan(), torch.optim.SGD(model.parameters(), lr=0.1))


if __name__ == "__main__":
    unittest.main()


@unittest.skipUnless(torch is not None, "PyTorch is not installed")
class DeviceReportTest(unittest.TestCase):
    def trainer(self, declare=None):
        class T(setu.Trainer):
            def fit(self, weights, config):
                dev = st.device()
                if declare:
                    config.declare_device(*declare)
                model = nn.Linear(2, 1).to(dev)
                model.load_state_dict(weights)
                return model.state_dict(), 3, {}

        return T()

    def test_the_device_the_helper_picks_is_declared_in_the_result(self):
        initial = st.from_state_dict(nn.Linear(2, 1).state_dict())
        work, paths = make_task(initial)
        run_task(self.trainer(), work, format="torch")
        d = read_result(paths)["device"]
        if torch.cuda.is_available():
            self.assertEqual((d["type"], d["count"]), ("cuda", 1))
            self.assertEqual(d["names"], [torch.cuda.get_device_name(torch.cuda.current_device())])
        else:
            self.assertEqual(d, {"type": "cpu", "count": 0})
        # A trainer's own declaration (DataParallel over two GPUs, say) wins over the helper's note.
        work, paths = make_task(initial)
        run_task(self.trainer(("cuda", 2, ["A", "B"])), work, format="torch")
        self.assertEqual(read_result(paths)["device"], {"type": "cuda", "count": 2, "names": ["A", "B"]})
        with self.assertRaisesRegex(ValueError, "device count must be an integer from 0 to 1024"):
            run_task(self.trainer(("cuda", -1)), make_task(initial)[0], format="torch")
