"""`VmappedStepper`: K seeds of one architecture trained in one process as one batched computation.

The K models' parameters are stacked along a leading model dimension
(`torch.func.stack_module_state`) and the model's own forward runs under `torch.func.vmap`
(`functional_call`), so every step is one batched forward, one backward and one AdamW update for
all K models. Seed k's run computes exactly what `train` computes for that seed (same init, same
per-step batches `data_seed(seed_k, step)`, per-model loss, per-model gradient clipping, AdamW is
elementwise): equal to float rounding, tested to 1e-5. The stacked state is copied back into the
K models (and per-model AdamW state) whenever the loop evaluates or writes a checkpoint, so every
run directory is in `train`'s format.

Where it pays: on a GPU, small models leave the device idle and K models in one kernel stream
run several times faster than one after another; on the CPU a demo-sized model is already
compute-bound, so the gain is one process and one command for K runs (benchmarks/multiseed.py).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch.func import functional_call, stack_module_state, vmap

from inducthead.recipe import TrainConfig
from inducthead.runs import RunDirError
from inducthead.tasks import Batch, Task
from inducthead.training.speed import compiled_forward
from inducthead.training.steppers import Stepper, batch_loss, data_seed, make_optimizer, set_lr


class VmappedStepper(Stepper):
    """The stacked models, their stacked AdamW state and the batched update."""

    def __init__(self, models, task: Task, configs: list[TrainConfig], device: torch.device):
        self.models, self.task, self.configs, self.device = list(models), task, configs, device
        self.cfg = configs[0]
        self.seeds = [c.seed for c in configs]
        self.K = len(self.models)
        self.label = f"train x{self.K}"
        self.amp = self.cfg.amp and device.type == "cuda"
        self.optimizers = [make_optimizer(m.parameters(), self.cfg, device) for m in self.models]
        self._synced: tuple[int, bool] | None = None
        # The meta-device copy whose forward runs under vmap with each model's parameters; hooks
        # registered on it run on every model's activations.
        self.base = copy.deepcopy(self.models[0]).to("meta")
        self.base.check_inputs = False  # no data-dependent checks under vmap; batches are checked
        for block in self.base.blocks:  # one attention call for all K models (model.kernels)
            block.attn.sdpa = block.attn.fold_vmap = True

    # -------------------------------------------------------------- state between the forms
    def start(self, writers):
        found = [
            w.restore(m, o) if w.resuming else (0, {})
            for w, m, o in zip(writers, self.models, self.optimizers, strict=True)
        ]
        steps = sorted({s for s, _ in found})
        if len(steps) > 1:
            where = ", ".join(
                f"seed {seed}: step {s}" for seed, (s, _) in zip(self.seeds, found, strict=True)
            )
            raise RunDirError(
                f"train_many: the runs to resume stand at different steps ({where}); resume "
                "them one by one with train(..., resume=True), or overwrite them."
            )
        start = steps[0]
        params, buffers = stack_module_state(self.models)
        self.names = list(params)
        self.params, self.buffers = params, buffers
        self.optim = make_optimizer(params.values(), self.cfg, self.device)
        if start:
            self._stack_optimizer_state()

        def loss_one(p, b, tokens, targets, mask):
            logits = functional_call(self.base, (p, b), (tokens,))
            return batch_loss(logits, Batch(tokens, targets, mask))

        self.losses = vmap(loss_one)
        if self.cfg.compile:
            self.losses = compiled_forward(self.losses, self.cfg.compile)
        tokens, _, _ = self._batches(start + 1)
        self.models[0].validate_tokens(tokens[0])
        return start, [e for _, e in found]

    def _stack_optimizer_state(self) -> None:
        for i, p in enumerate(self.optim.param_groups[0]["params"]):
            per_model = [o.state[o.param_groups[0]["params"][i]] for o in self.optimizers]
            state = {"step": per_model[0]["step"].clone()}
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = torch.stack([s[key] for s in per_model]).to(p.device)
            self.optim.state[p] = state

    def sync(self, step: int, with_optimizer: bool = False) -> None:
        """Copy the stacked weights (and AdamW state) into the K models (and their optimizers),
        once per step and form."""
        if self._synced in ((step, with_optimizer), (step, True)):
            return
        lr = self.optim.param_groups[0]["lr"]
        with torch.no_grad():
            for k, (model, optim) in enumerate(zip(self.models, self.optimizers, strict=True)):
                own = dict(model.named_parameters())
                for name in self.names:
                    own[name].copy_(self.params[name][k])
                if not with_optimizer:
                    continue
                optim.param_groups[0]["lr"] = lr
                for name, stacked in self.params.items():
                    state = self.optim.state.get(stacked)
                    if state:
                        optim.state[own[name]] = {
                            "step": state["step"].clone(),
                            "exp_avg": state["exp_avg"][k].clone(),
                            "exp_avg_sq": state["exp_avg_sq"][k].clone(),
                        }
        self._synced = (step, with_optimizer)

    # -------------------------------------------------------------- the update
    def _batches(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bs = [
            self.task.sample(self.cfg.batch_size, seed=data_seed(s, step), device=self.device)
            for s in self.seeds
        ]
        return (
            torch.stack([b.tokens for b in bs]),
            torch.stack([b.targets for b in bs]),
            torch.stack([b.mask for b in bs]),
        )

    def _clip(self, max_norm: float) -> None:
        """`clip_grad_norm_` of each model separately (its own total norm, its own factor)."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads])  # [params, K]
        total = norms.norm(dim=0)
        factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(factor.view(-1, *[1] * (g.ndim - 1)))

    def step(self, step: int) -> torch.Tensor:
        """One batched update producing step `step`: the K losses `[K]` (no host sync)."""
        set_lr(self.optim, self.cfg, step)
        tokens, targets, mask = self._batches(step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            losses = self.losses(self.params, self.buffers, tokens, targets, mask)
        self.optim.zero_grad(set_to_none=True)
        losses.sum().backward()  # model k's parameters get model k's gradient only
        if self.cfg.grad_clip is not None:
            self._clip(self.cfg.grad_clip)
        self.optim.step()
        return losses.detach().float()

    @contextlib.contextmanager
    def hooks(self, hooks) -> Iterator[None]:
        """Hooks on the vmapped forward, where they see each model's activations inside
        `torch.func.vmap` (tensor operations only; no `.item()` or data-dependent branches), and
        on the K models, where evaluation sees them as `train`'s does."""
        with contextlib.ExitStack() as stack:
            for module in (self.base, *self.models):
                stack.enter_context(module.hooks(fwd_hooks=hooks))
            yield
