"""PyTorch helpers: a model's state_dict as the study's weights and back, in their own dtypes (F16, BF16, the I64
`num_batches_tracked` of BatchNorm, …); saving initial weights and loading a downloaded model; seeding and device
choice; FedProx's proximal term; and sample-level DP-SGD by the agent's plan.
"""
import collections
import os
import random

import torch

from .contract import note_device
from .safetensors import Tensor, read_safetensors, write_safetensors

__all__ = [
    "to_state_dict", "from_state_dict", "save", "load", "load_state_dict", "device", "seed_everything",
    "proximal_term", "dp_sgd", "TorchFormat",
]

_TORCH = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
_DTYPE = {v: k for k, v in _TORCH.items()}


def to_torch(t):
    """A CPU tensor holding the Tensor's values in its own dtype."""
    if t.numel == 0:
        return torch.empty(t.shape, dtype=_TORCH[t.dtype])
    # frombuffer reads native byte order: Setu's files are little-endian, as every platform PyTorch runs on.
    return torch.frombuffer(bytearray(t.data), dtype=_TORCH[t.dtype]).reshape(t.shape).clone()


def from_torch(x, dtype=None):
    """A Tensor from a torch tensor (any device), cast to `dtype` when given (integers must be whole)."""
    x = x.detach().to("cpu").contiguous()
    if dtype is not None and _TORCH[dtype] != x.dtype:
        target = _TORCH[dtype]
        if not target.is_floating_point and x.is_floating_point() and not torch.equal(x, x.round()):
            raise ValueError(f"an integer ({dtype}) tensor came back holding non-integers")
        x = x.to(target)
    if x.dtype not in _DTYPE:
        raise TypeError(f"torch dtype {x.dtype} has no safetensors dtype Setu carries")
    raw = x.view(torch.int16) if x.dtype == torch.bfloat16 else x  # NumPy has no bfloat16: take its bits
    return Tensor(_DTYPE[x.dtype], tuple(x.shape), raw.numpy().tobytes())


def to_state_dict(weights):
    """Setu weights (name -> Tensor) as an OrderedDict for `model.load_state_dict`."""
    return collections.OrderedDict((k, to_torch(t)) for k, t in weights.items())


def from_state_dict(state_dict, like=None):
    """A state_dict as Setu weights; with `like` (name -> Tensor), cast to its dtypes."""
    return {k: from_torch(v, like[k].dtype if like is not None and k in like else None) for k, v in state_dict.items()}


def save(state_dict, path, metadata=None):
    """Writes a state_dict as safetensors: the initial weights a study lead uploads (setu study create --weights)."""
    write_safetensors(path, from_state_dict(state_dict), metadata)


def load(path):
    """Reads a safetensors file (e.g. `setu model download`) as an OrderedDict of torch tensors."""
    tensors, _ = read_safetensors(path)
    return to_state_dict(tensors)


def load_state_dict(model, path, strict=True):
    """Loads a safetensors file into `model` (`model.load_state_dict`, strict by default)."""
    return model.load_state_dict(load(path), strict=strict)


def device():
    """Where to train: $SETU_DEVICE if set, else CUDA when PyTorch sees a GPU, else the CPU.

    Under Slurm a job sees only the GPUs it was given (CUDA_VISIBLE_DEVICES, set by Slurm for `--gres=gpu:N`; a
    Setu job given no GPU sees none), so "cuda" is the first of its own. The choice is declared in result.json
    (`device`), from which the agent counts GPU-seconds for training on the site's own machine.
    """
    name = os.environ.get("SETU_DEVICE")
    d = torch.device(name) if name else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d.type == "cuda":
        index = d.index if d.index is not None else torch.cuda.current_device()
        note_device("cuda", 1, [torch.cuda.get_device_name(index)])
    else:
        note_device(d.type, 0)
    return d


def seed_everything(seed):
    """Seeds Python's, NumPy's (if installed) and PyTorch's generators, on every device."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    torch.manual_seed(seed)


def proximal_term(model, global_state, mu):
    """FedProx's (mu/2)·Σ‖w − w_global‖² over the model's trainable parameters; add it to the loss."""
    if not mu:
        return torch.zeros((), device=next(model.parameters()).device)
    total = 0.0
    for name, p in model.named_parameters():
        if p.requires_grad:
            total = total + (p - global_state[name].to(p.device, p.dtype)).pow(2).sum()
    return 0.5 * mu * total


def _functional():
    try:
        from torch.func import functional_call, grad, vmap  # PyTorch >= 2.0
    except ImportError:
        from functorch import grad, vmap  # PyTorch 1.13 (Debian 12)
        from torch.nn.utils.stateless import functional_call
    return functional_call, grad, vmap


def dp_sgd(model, loss_fn, inputs, targets, plan, optimizer, config=None):
    """Trains `model` with sample-level DP-SGD exactly as `plan` (config.dp) says, and returns what it did.

    Each of plan.steps steps draws a Poisson sample of the rows (each with probability plan.sample_rate), clips
    every example's gradient to plan.clip_norm, sums them, adds N(0, (noise_multiplier·clip_norm)²) to each
    coordinate and divides by the expected batch size (sample_rate·n) before `optimizer.step()`. The sampling and
    the noise are drawn from the plan's secret seed. `loss_fn(output, target)` must be a mean over its batch.
    Models with BatchNorm are refused (their statistics mix examples); use GroupNorm or LayerNorm.
    Passing `config` declares the result to the agent (config.declare_dp_sgd).
    """
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError("DP-SGD cannot train a model with BatchNorm (its statistics mix examples): use GroupNorm or LayerNorm")
    functional_call, grad, vmap = _functional()
    n = len(inputs)
    q, clip, sigma = plan.sample_rate, plan.clip_norm, plan.noise_multiplier
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())

    def loss_one(trainable, x, y):
        out = functional_call(model, {**params, **buffers, **trainable}, (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0), randomness="different")
    gen = torch.Generator().manual_seed(plan.seed_int)
    for _ in range(plan.steps):
        take = (torch.rand(n, generator=gen) < q).nonzero().squeeze(1)
        trainable = {k: params[k].detach() for k in names}
        if len(take):
            g = per_example(trainable, inputs[take.to(inputs.device)], targets[take.to(targets.device)])
            norms = torch.sqrt(sum(g[k].reshape(len(take), -1).pow(2).sum(1) for k in names))
            scale = (clip / (norms + 1e-12)).clamp(max=1.0)
            summed = {k: (g[k] * scale.reshape(-1, *([1] * (g[k].dim() - 1)))).sum(0) for k in names}
        else:
            summed = {k: torch.zeros_like(params[k]) for k in names}
        for k in names:
            noise = torch.normal(0.0, sigma * clip, size=tuple(params[k].shape), generator=gen).to(params[k].device, params[k].dtype)
            params[k].grad = (summed[k] + noise) / (q * n)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    done = {"noise_multiplier": sigma, "sample_rate": q, "steps": plan.steps}
    if config is not None:
        config.declare_dp_sgd(**done)
    return done


class TorchFormat:
    """`run(trainer, format="torch")`: fit and evaluate get an OrderedDict of CPU tensors and return a state_dict."""

    def to_user(self, tensors, task):
        return to_state_dict(tensors)

    def from_user(self, weights, like):
        return from_state_dict(weights, like)
