"""Distillation: each loss against hand-computed values, the Distiller's resume, DDP on 2 CPU processes."""

import dataclasses
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from slimtorch.compress import tasks
from slimtorch.compress.distill import (
    DistillConfig,
    Distiller,
    attention_loss,
    attention_map,
    hint_loss,
    soft_target_loss,
)


def test_soft_target_loss_by_hand():
    # T = 2; teacher logits 2·(ln 4, 0) -> p_t = (0.8, 0.2); student (0, 0) -> p_s = (0.5, 0.5)
    s = torch.zeros(1, 2, requires_grad=True)
    t = torch.tensor([[2 * math.log(4.0), 0.0]])
    y = torch.tensor([0])
    kl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    ce = math.log(2.0)
    got = soft_target_loss(s, t, y, temperature=2.0, alpha=0.75)
    assert math.isclose(got.item(), 0.75 * 4 * kl + 0.25 * ce, rel_tol=1e-6)
    assert math.isclose(soft_target_loss(s, t, temperature=2.0).item(), 4 * kl, rel_tol=1e-6)
    got.backward()
    assert s.grad is not None and t.grad is None
    with pytest.raises(ValueError, match="temperature"):
        soft_target_loss(s, t, y, temperature=0)
    with pytest.raises(ValueError, match="teacher_logits"):
        soft_target_loss(s, torch.zeros(1, 3), y)


def test_attention_transfer_by_hand():
    fs = torch.tensor([[[[1.0, 2.0]], [[2.0, 0.0]]]])  # (1, 2, 1, 2): Σ_c f² = (5, 4)
    ft = torch.tensor([[[[3.0, 0.0]]]])  # (1, 1, 1, 2): (9, 0) -> (1, 0)
    r = math.sqrt(41.0)
    assert torch.allclose(attention_map(fs), torch.tensor([[5 / r, 4 / r]]))
    want = ((5 / r - 1) ** 2 + (4 / r) ** 2) / 2
    assert math.isclose(attention_loss(fs, ft).item(), want, rel_tol=1e-6)
    with pytest.raises(ValueError, match="teacher_feature"):
        attention_loss(fs, torch.zeros(1, 1, 2, 2))


def test_hint_loss_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    t = torch.tensor([[1.0, 0.0, 0.0]])
    assert math.isclose(hint_loss(r, t).item(), 13 / 3, rel_tol=1e-6)
    with pytest.raises(ValueError, match="teacher_feature"):
        hint_loss(r, torch.zeros(1, 2))


def _small_task(n=96):
    full = tasks.digits_task()
    return tasks.Task("digits-small", full.x_train[:n], full.y_train[:n], full.x_test[:64], full.y_test[:64], 10)


def _pair(seed=0):
    torch.manual_seed(seed)
    return tasks.lenet5(width=0.5), tasks.lenet5()


CONFIG = DistillConfig(
    temperature=3.0,
    alpha=0.7,
    hint_layers=(("3", "3"),),
    attention_layers=(("0", "0"), ("3", "3")),
    attention_weight=100.0,
    batch_size=16,
    lr=2e-3,
)


def test_resume_continues_exactly(tmp_path):
    task = _small_task()
    student, teacher = _pair()
    Distiller(student, teacher, CONFIG, probe=task.x_train[:2]).fit(task, 2, progress=False)
    student2, teacher2 = _pair()
    ckpt = tmp_path / "kd.safetensors"
    Distiller(student2, teacher2, CONFIG, probe=task.x_train[:2]).fit(task, 1, checkpoint=ckpt, progress=False)
    student3, _ = _pair(seed=5)  # fresh weights: everything must come from the checkpoint
    d = Distiller(student3, teacher2, CONFIG, probe=task.x_train[:2])
    d.fit(task, 2, checkpoint=ckpt, progress=False)
    assert d.epoch == 2
    for a, b in zip(student.state_dict().values(), student3.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_zoo_recipes_are_distill_configs():
    zoo = pytest.importorskip("slimtorch.zoo.variants")
    recipe = next(iter(zoo.DISTILLATION_RECIPES.values()))
    assert type(recipe) is DistillConfig  # one type describes a run: the zoo's recipes train as they are
    cfg = dataclasses.replace(recipe, epochs=3)
    assert cfg.teacher == recipe.teacher and cfg.attention_layers == recipe.attention_layers and cfg.epochs == 3
    for bad, message in [
        ({"alpha": 1.5}, r"alpha: expected a weight in \[0, 1\], got 1.5"),
        ({"temperature": 0.0}, "temperature: expected a positive value, got 0.0"),
        ({"epochs": -1}, "epochs: expected an int >= 0, got -1"),
        ({"batch_size": 0}, "batch_size: expected an int >= 1, got 0"),
        ({"lr": 0.0}, "lr: expected a positive learning rate"),
        ({"hint_layers": (("a",),)}, "hint_layers: expected .* name pairs"),
    ]:
        with pytest.raises(ValueError, match=message):
            DistillConfig(**bad)
    with pytest.raises(ValueError, match="probe"):
        Distiller(*_pair(), CONFIG)


WORKER = """
import sys, torch, torch.distributed as dist
sys.path[:0] = {paths!r}
from test_distill import CONFIG, _pair, _small_task
from slimtorch.compress.distill import Distiller
dist.init_process_group("gloo")
torch.set_num_threads(1)
task = _small_task()
student, teacher = _pair()
import dataclasses
cfg = dataclasses.replace(CONFIG, batch_size=16)
Distiller(student, teacher, cfg, probe=task.x_train[:2]).fit(task, 1, progress=False)
import safetensors.torch
safetensors.torch.save_file({{k: v.contiguous() for k, v in student.state_dict().items()}},
                            {out!r} + f"/rank{{dist.get_rank()}}.safetensors")
dist.destroy_process_group()
"""


def test_ddp_two_processes_match_one(tmp_path):
    import os

    import safetensors.torch

    here = os.path.dirname(__file__)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER.format(paths=[here, *sys.path], out=str(tmp_path))))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [safetensors.torch.load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    # one process, batch 16, the same seeded order: the same steps as 2 ranks x 8
    task = _small_task()
    student, teacher = _pair()
    Distiller(student, teacher, CONFIG, probe=task.x_train[:2]).fit(task, 1, progress=False)
    for key, ref in student.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # DDP keeps the ranks identical
        err = (ranks[0][key] - ref).norm() / ref.norm().clamp(min=1e-12)
        assert err < 1e-4, (key, err.item())
