"""The progress bar of a training run: steps, loss, accuracy and the sharpness against its threshold.

The first step of a process carries the warm-up (data on the device, the first sharpness measurement
with its presample), so it is shown on a bar of its own; the bar of the ordinary steps starts after
it, and its rate and time left describe ordinary steps only.
"""

from __future__ import annotations


def postfix(m: dict) -> dict:
    """What the bar shows of a metrics row: loss, accuracy, and the sharpness over its threshold when measured.

    Example:
        >>> postfix({"loss": 0.5, "accuracy": 0.75, "sharpness": 19.5, "threshold": 20.0})
        {'loss': '0.5000', 'acc': '0.750', 'sharp': '19.5/20.0'}
    """
    post = {"loss": f"{m['loss']:.4f}", "acc": f"{m['accuracy']:.3f}"}
    key = "precond_sharpness" if "precond_sharpness" in m else "sharpness"  # the one the threshold is for
    if key in m and "threshold" in m:
        unconverged = m.get(f"converged/{key}") == 0.0
        post["precond" if key != "sharpness" else "sharp"] = (f"{m[key]:.1f}/{m['threshold']:.1f}"
                                                             + (" (not converged)" if unconverged else ""))
    return post


class Progress:
    """A tqdm bar of the steps ``initial .. total - 1`` (nothing shown when ``enabled`` is False).

    Example:
        >>> bar = Progress(total=3, initial=0, desc="run", enabled=False)
        >>> for _ in range(3):
        ...     bar.step({"loss": 1.0, "accuracy": 0.5})
        >>> bar.close()
    """

    def __init__(self, total: int, initial: int, desc: str, enabled: bool) -> None:
        self.enabled, self.n = enabled, initial
        self._kw = dict(total=total, desc=desc, dynamic_ncols=True, unit="step", mininterval=0.5)
        self._bar = self._open(initial, leave=False) if enabled else None  # the warm-up step's bar
        self._warm = False

    def _open(self, initial: int, leave: bool = True):
        from tqdm.auto import tqdm

        return tqdm(initial=initial, leave=leave, **self._kw)

    def step(self, metrics: dict) -> None:
        """Count one step done, showing ``metrics``."""
        self.n += 1
        if not self.enabled:
            return
        if not self._warm:  # the ordinary steps' bar starts now, without the warm-up in its rate
            self._bar.close()
            self._bar = self._open(self.n)
            self._bar.set_postfix(postfix(metrics), refresh=True)
            self._warm = True
            return
        self._bar.set_postfix(postfix(metrics), refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
