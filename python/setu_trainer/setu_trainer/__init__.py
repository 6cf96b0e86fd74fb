"""setu_trainer: write `fit(weights, config)` and `evaluate(weights, config)`; Setu's site agent does the rest.

    import setu_trainer as setu

    class MyTrainer(setu.Trainer):
        def fit(self, weights, config):          # -> (weights, num_examples, metrics)
            ...
        def evaluate(self, weights, config):     # -> (num_examples, metrics)
            ...

    setu.run(MyTrainer(), format="torch")        # weights as a state_dict; "numpy" and "raw" work too

The core needs only the standard library; `setu_trainer.numpy` and `setu_trainer.torch` need NumPy and PyTorch.
See docs/python-sdk.md.
"""
from .contract import CONTRACT_VERSION, DpPlan, Task, Trainer, run, run_task, task_seed, tensors_from_lists
from .safetensors import DTYPES, SafetensorsError, Tensor, read_safetensors, write_safetensors

__version__ = "0.2.0"
__all__ = [
    "CONTRACT_VERSION", "DTYPES", "DpPlan", "SafetensorsError", "Task", "Tensor", "Trainer", "read_safetensors", "run",
    "run_task", "task_seed", "tensors_from_lists", "write_safetensors",
]
