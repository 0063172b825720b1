"""Recipes: bad keys and values are named by path; steps run through the conversion walk."""

import pytest
import torch

from slimtorch.compress import tasks
from slimtorch.compress.pipeline import RecipeError, load_recipe, parse_recipe, run_recipe
from slimtorch.compress.pipeline.sharing import WeightSharingConfig, share_weights_, to_codebook_
from slimtorch.compress.prune import UnstructuredConfig, finalize_, prune_unstructured_

GOOD = """
name = "mix"
coder = "huffman"
[[step]]
prune = {method = "magnitude", sparsity = 0.5, scope = "layer"}
[[step]]
quantize = {format = "int4", group_size = 32}
[[step]]
distill = {teacher = "baseline", T = 4}
"""


def test_a_good_recipe_parses_with_defaults():
    r = load_recipe(GOOD)
    assert r.name == "mix" and r.coder == "huffman" and [s.kind for s in r.steps] == ["prune", "quantize", "distill"]
    assert r.steps[0].options["iterations"] == 1 and r.steps[2].options["alpha"] == 0.9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[step]]\nquantize = {format = "int4", group_size = 100}',
            r"step\[0\]\.quantize\.group_size: expected one of 32, 64, 128, got 100",
        ),
        ("[[step]]\nprune = {sparsity = 1.5}", r"step\[0\]\.prune\.sparsity: expected a number in \[0, 1\), got 1.5"),
        ("[[step]]\nprune = {sparsty = 0.5}", r"step\[0\]\.prune\.sparsty: unknown key"),
        ("[[step]]\nprune = {}\n[[step]]\nsqueeze = {}", r"step\[1\]\.squeeze: unknown step"),
        ("[[step]]\nquantize = {}", r"step\[0\]\.quantize\.format: required"),
        ('[[step]]\nquantize = {format = "int3"}', r"step\[0\]\.quantize\.format: expected one of int8"),
        ("[[step]]\ndistill = {T = 0}", r"step\[0\]\.distill\.T: expected a number in \(0, 100\]"),
        ("[[step]]\nfinetune = {epochs = true}", r"step\[0\]\.finetune\.epochs: expected an int"),
        ("[[step]]\nprune = {}\nfinetune = {}", r"step\[0\]: expected exactly one of"),
        ('coder = "lzma"\n[[step]]\nprune = {}', r"coder: expected one of ans, huffman, zstd, raw, got 'lzma'"),
        ("colour = 1\n[[step]]\nprune = {}", r"colour: unknown key"),
        ('name = "x"', r"step: expected at least one \[\[step\]\] table"),
        ("[[step]\n", r"recipe: not valid TOML"),
    ],
)
def test_bad_recipes_name_the_key(text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(text)


def test_parse_rejects_non_tables():
    with pytest.raises(RecipeError, match=r"step\[0\]\.prune: expected a table"):
        parse_recipe({"step": [{"prune": 3}]})


@pytest.fixture(scope="module")
def task():
    full = tasks.digits_task()
    return tasks.Task("small", full.x_train[:256], full.y_train[:256], full.x_test[:128], full.y_test[:128], 10)


def test_weight_sharing_keeps_zeros_trains_centroids_and_converts_exactly(task):
    torch.manual_seed(0)
    model = tasks.lenet5()
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.8, scope="global"))
    finalize_(model)
    zeros = {n: m.weight == 0 for n, m in model.named_modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)}
    report = share_weights_(model, WeightSharingConfig(linear_bits=3, conv_bits=3))
    assert len(report.converted) == 5
    before = {n: model.get_submodule(n).parametrizations.weight[0].centroids.detach().clone() for n in zeros}
    tasks.train(model, task, 1, lr=1e-3, progress=False)
    for name, mask in zeros.items():
        layer = model.get_submodule(name)
        w = layer.weight.detach()
        assert torch.all(w[mask] == 0)  # pruned weights stay exact zeros
        assert torch.unique(w[~mask]).numel() <= 8  # 2^3 shared values
        assert not torch.equal(layer.parametrizations.weight[0].centroids, before[name])  # the centroids trained
    baked = {n: model.get_submodule(n).weight.detach().clone() for n in zeros}
    report = to_codebook_(model)
    assert len(report.converted) == 5
    for name, w in baked.items():
        layer = model.get_submodule(name)
        gemm = getattr(layer, "gemm", layer)
        assert type(gemm).__name__ == "CodebookLinear" and gemm.bits <= 4  # 8 centroids + the zero fit 4 bits
        assert torch.equal(gemm.dequantize(), w.reshape(w.shape[0], -1))


def test_run_recipe_adds_every_steps_report(task):
    torch.manual_seed(0)
    model = tasks.lenet300_100()
    recipe = load_recipe(
        "[[step]]\nprune = {sparsity = 0.6, retrain_epochs = 1}\n[[step]]\nfinetune = {epochs = 1}\n"
        '[[step]]\ndistill = {epochs = 1}\n[[step]]\nquantize = {format = "int8"}\n[[step]]\nfinetune = {epochs = 1}'
    )
    out = run_recipe(recipe, model, task, progress=False, evaluate=lambda m: tasks.evaluate(m, task))
    names = out.report.conversion
    assert "prune_unstructured_" in names and "finalize_" in names and "quantize_" in names and "distill" in names
    assert [type(m).__name__ for m in out.model.modules()].count("Int8WeightOnlyLinear") == 3
    assert out.report.bytes_after < out.report.bytes_before / 3
    assert out.report.skipped[""] == "no trainable parameters left (all quantized)"  # the last finetune
    assert len(out.steps) == 5 and all(0 <= s["top1"] <= 1 for s in out.steps)
    w = out.model[1].dequantize()
    assert (w == 0).float().mean() > 0.55  # the pruned zeros survived int8


def test_unknown_teacher_is_named(task):
    recipe = load_recipe('[[step]]\ndistill = {teacher = "resnet9000", epochs = 1}')
    with pytest.raises(RecipeError, match=r"step\[0\]\.distill\.teacher"):
        run_recipe(recipe, tasks.lenet300_100(), task, progress=False)
