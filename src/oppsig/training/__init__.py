"""Training: the loop, its hooks, checkpoints, the run-directory lock, and replay to any step."""

from .checkpoint import load_checkpoint, save_checkpoint
from .hooks import Hook, TrainState
from .loop import Trainer, TrainResult, batch_rows, train
from .replay import model_at
from .step import full_batch_backward

__all__ = ["train", "Trainer", "TrainResult", "TrainState", "Hook", "full_batch_backward", "batch_rows",
           "load_checkpoint", "save_checkpoint", "model_at"]
