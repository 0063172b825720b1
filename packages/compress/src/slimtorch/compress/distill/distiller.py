"""Train a student against a teacher with any mix of soft targets, FitNets hints and attention transfer.

    distiller = Distiller(student, teacher, DistillConfig(temperature=4, alpha=0.9,
                          attention_layers=(("3", "3"),)))
    distiller.fit(task, epochs=20, checkpoint="kd.safetensors")   # resumes from the checkpoint if present

One object describes a run: :class:`~slimtorch.core.distillation.DistillConfig` (core's, so the
zoo's ``DISTILLATION_RECIPES`` are instances of it and ``Distiller(student, teacher, recipe)``
trains by one). Loss per batch:
``soft_target_loss(s, t, y; T, alpha) + hint_weight · Σ hint_loss + attention_weight · Σ attention_loss``
over the ``(teacher module, student module)`` pairs, features captured by forward hooks.

**DDP.** When ``torch.distributed`` is initialised (torchrun, or ``mp.spawn`` + ``init_process_group``)
the student and the hint regressors are wrapped in one ``DistributedDataParallel``; each rank takes
its slice ``batch[rank::world]`` of every global batch (the same seeded order on every rank), so
``world`` processes with per-rank batch ``B / world`` take the same steps as one process with
batch ``B`` (mean losses). Rank 0 writes the checkpoints.

**Checkpoints** are safetensors (never pickle): the student's and regressors' state, the Adam
state flattened to tensors, and ``{"epoch": ...}`` in the metadata; ``fit`` resumes after the last
completed epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from slimtorch.compress.distill.losses import HintRegressor, attention_loss, hint_loss, soft_target_loss
from slimtorch.core.distillation import DistillConfig

CHECKPOINT_KEY = "slimtorch.distill"


class _Trainable(nn.Module):
    """The student and the hint regressors as one module (one DDP wrapper, one optimizer)."""

    def __init__(self, student: nn.Module, regressors: nn.ModuleDict):
        super().__init__()
        self.student = student
        self.regressors = regressors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


def _capture(model: nn.Module, names: list[str], store: dict[str, torch.Tensor]) -> list:
    handles = []
    for name in names:
        module = model.get_submodule(name)

        def hook(_m, _inp, out, name=name):
            store[name] = out

        handles.append(module.register_forward_hook(hook))
    return handles


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Distiller:
    """Distil ``teacher`` into ``student`` (module docstring)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        config: DistillConfig | None = None,
        *,
        probe: torch.Tensor | None = None,
    ):
        if not isinstance(student, nn.Module) or not isinstance(teacher, nn.Module):
            raise TypeError("student, teacher: expected torch.nn.Module instances")
        self.config = config or DistillConfig()
        self.student, self.teacher = student, teacher.eval()  # the teacher runs under no_grad, never trains
        self.regressors = nn.ModuleDict()
        self._pairs = list(self.config.hint_layers)
        if self._pairs:
            if probe is None:
                raise ValueError("probe: hint_layers need an example input batch to size the regressors")
            self._init_regressors(probe)
        self.trainable = _Trainable(student, self.regressors)
        self.optimizer = torch.optim.Adam(self.trainable.parameters(), lr=self.config.lr)
        self.epoch = 0
        rank, world = _world()
        self.rank, self.world = rank, world
        self.model: nn.Module = self.trainable
        if world > 1:
            self.model = nn.parallel.DistributedDataParallel(self.trainable)

    def _init_regressors(self, probe: torch.Tensor) -> None:
        """Size each regressor from one forward of both models on a probe batch."""
        feats_s: dict[str, torch.Tensor] = {}
        feats_t: dict[str, torch.Tensor] = {}
        hs = _capture(self.student, [s for _, s in self._pairs], feats_s)
        ht = _capture(self.teacher, [t for t, _ in self._pairs], feats_t)
        with torch.no_grad():
            self.student(probe)
            self.teacher(probe)
        for h in hs + ht:
            h.remove()
        for t_name, s_name in self._pairs:
            fs, ft = feats_s[s_name], feats_t[t_name]
            regressor = HintRegressor(fs.shape[1], ft.shape[1], spatial=fs.dim() == 4)
            self.regressors[_key(t_name, s_name)] = regressor.to(probe.device)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        feats_s: dict[str, torch.Tensor] = {}
        feats_t: dict[str, torch.Tensor] = {}
        s_names = sorted({s for _, s in (*cfg.hint_layers, *cfg.attention_layers)})
        t_names = sorted({t for t, _ in (*cfg.hint_layers, *cfg.attention_layers)})
        handles = _capture(self.student, s_names, feats_s) + _capture(self.teacher, t_names, feats_t)
        try:
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            student_logits = self.model(x)
        finally:
            for h in handles:
                h.remove()
        loss = soft_target_loss(student_logits, teacher_logits, y, temperature=cfg.temperature, alpha=cfg.alpha)
        for t_name, s_name in cfg.hint_layers:
            regressed = self.regressors[_key(t_name, s_name)](feats_s[s_name])
            loss = loss + cfg.hint_weight * hint_loss(regressed, feats_t[t_name])
        for t_name, s_name in cfg.attention_layers:
            loss = loss + cfg.attention_weight * attention_loss(feats_s[s_name], feats_t[t_name])
        return loss

    def fit(self, task, epochs: int | None = None, *, checkpoint: str | Path | None = None, progress: bool = True):
        """Train on ``task`` (a :class:`~slimtorch.compress.tasks.Task`) for ``epochs`` (default the
        config's), resuming from ``checkpoint`` when it exists and writing it after every epoch."""
        from tqdm.auto import tqdm

        epochs = self.config.epochs if epochs is None else epochs
        if checkpoint is not None and Path(checkpoint).exists():
            self.load_checkpoint(checkpoint)
        device = next(self.student.parameters()).device
        bs = self.config.batch_size
        steps_per_epoch = -(-len(task.x_train) // bs)
        self.trainable.train()
        total = max(0, epochs - self.epoch) * steps_per_epoch
        with tqdm(total=total, desc="distill", disable=not progress or self.rank > 0, leave=False) as bar:
            while self.epoch < epochs:
                for x, y in task.batches(bs, seed=self.config.seed * 1000 + self.epoch):
                    x, y = x[self.rank :: self.world].to(device), y[self.rank :: self.world].to(device)
                    loss = self.loss(x, y)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                self.epoch += 1
                if checkpoint is not None and self.rank == 0:
                    self.save_checkpoint(checkpoint)
        self.trainable.eval()
        return self.student

    # --- checkpoints (safetensors)
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.trainable.state_dict().items()}
        opt = self.optimizer.state_dict()
        for pid, state in opt["state"].items():
            for k, v in state.items():
                out[f"optim.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
        return out

    def save_checkpoint(self, path: str | Path) -> None:
        import safetensors.torch

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        meta = {CHECKPOINT_KEY: json.dumps({"epoch": self.epoch, "config": repr(self.config)})}
        safetensors.torch.save_file(self.state_tensors(), str(tmp), metadata=meta)
        tmp.replace(path)

    def load_checkpoint(self, path: str | Path) -> None:
        import safetensors
        import safetensors.torch

        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(CHECKPOINT_KEY, "null") or "null")
        if not isinstance(meta, dict) or "epoch" not in meta:
            raise ValueError(f"checkpoint: {path} is not a distillation checkpoint (no {CHECKPOINT_KEY!r} metadata)")
        tensors = safetensors.torch.load_file(str(path))
        device = next(self.student.parameters()).device
        model_state = {k.removeprefix("model."): v.to(device) for k, v in tensors.items() if k.startswith("model.")}
        self.trainable.load_state_dict(model_state, strict=True)
        opt = self.optimizer.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v.to(device) if name != "step" else v
        opt["state"] = state
        self.optimizer.load_state_dict(opt)
        self.epoch = int(meta["epoch"])


def _key(t_name: str, s_name: str) -> str:
    return f"{t_name}->{s_name}".replace(".", "_")
