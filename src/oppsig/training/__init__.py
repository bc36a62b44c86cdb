"""Training: the loop, its hooks, checkpoints, the run-directory lock, and replay to any step.

- :mod:`.build`: what a run is made of (:func:`build_run` -> :class:`RunParts`), built once from a config.
- :mod:`.loop`: :func:`train`, the loop itself.
- :mod:`.step`: one step's rows, gradient and optimiser step.
- :mod:`.record`: config, meta.json, the per-example record and metrics as the run goes.
- :mod:`.resume`: where a run starts (new, resumed, branched); :mod:`.checkpoint`: checkpoint files.
- :mod:`.hooks`: the extension points; :mod:`.progress`: the progress bar; :mod:`.replay`: a run's model at any step.
"""

from .build import RunParts, TrainOptions, build_run, resolve_device
from .checkpoint import load_checkpoint, save_checkpoint
from .hooks import Hook, TrainState
from .loop import Trainer, TrainResult, train
from .replay import model_at
from .step import batch_rows, full_batch_backward

__all__ = ["train", "Trainer", "TrainResult", "TrainOptions", "TrainState", "Hook", "RunParts", "build_run",
           "resolve_device", "full_batch_backward", "batch_rows", "load_checkpoint", "save_checkpoint", "model_at"]
