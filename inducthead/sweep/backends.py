"""Where sweep cells run: one after another in this process, or as Ray tasks."""

from __future__ import annotations

import contextlib
import traceback
from typing import Any

from inducthead.sweep.cells import run_cell
from inducthead.sweep.spec import SweepError


class LocalBackend:
    """Cells one after another in this process."""

    name = "local"

    def __init__(self) -> None:
        self._queue: list[tuple[Any, dict, str, float]] = []

    def submit(self, key, cell, sweep_dir, threshold) -> None:
        self._queue.append((key, cell, sweep_dir, threshold))

    def next_done(self):
        key, cell, sweep_dir, threshold = self._queue.pop(0)
        try:
            return key, run_cell(cell, sweep_dir, threshold), None
        except Exception as e:  # reported and retried by the driver (Ctrl-C is not caught)
            return key, None, _describe(e)

    def close(self) -> None:
        pass


class RayBackend:
    """Each cell a Ray task: on a local Ray cluster started here, or on `address`."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_cell: float = 1,
        gpus_per_cell: float = 0,
        num_cpus: int | None = None,
    ):
        try:
            import ray
        except ImportError:
            raise SweepError(
                "the ray backend needs Ray: pip install 'inducthead[ray]' (or use --backend local)."
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            kwargs = dict(include_dashboard=False, log_to_driver=False)
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
        self.remote = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=0)(
            run_cell
        )
        self.pending: dict[Any, Any] = {}

    def submit(self, key, cell, sweep_dir, threshold) -> None:
        self.pending[self.remote.remote(cell, sweep_dir, threshold)] = key

    def next_done(self):
        ready, _ = self.ray.wait(list(self.pending), num_returns=1)
        ref = ready[0]
        key = self.pending.pop(ref)
        try:
            return key, self.ray.get(ref), None
        except Exception as e:  # the task raised, or its worker died
            cause = getattr(e, "cause", None)
            return key, None, _describe(cause if isinstance(cause, BaseException) else e)

    def close(self) -> None:
        for ref in self.pending:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()


def _describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return " ".join(text.split())[:500] or "".join(traceback.format_exception_only(e))
