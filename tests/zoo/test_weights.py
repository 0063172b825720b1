"""Weights people already have: torchvision and timm models with random weights (BatchNorm
statistics and biases randomised too, so that swapped layers of equal shape show) load into
the zoo models and give the same logits in eval mode."""

import re

import pytest
import safetensors.torch
import timm
import torch
from torch import nn

import slimtorch.zoo as zoo
from slimtorch.core.model_stats import state_dict_tensors
from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.zoo.weights import checkpoint_filter_fn, convert_state_dict

EQUIVALENTS = [(name, eq) for name in zoo.list_models() for eq in zoo.model_card(name).equivalents]
LOADERS = {"torchvision": zoo.load_torchvision_weights, "timm": zoo.load_timm_weights}


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every 1-d float tensor (norm weights, biases, running statistics) drawn at random."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if t.is_floating_point() and t.dim() == 1:
                low = 0.5 if key.endswith(("running_var", "weight")) else -0.5
                t.copy_(torch.rand(t.shape, generator=gen) + low)
    return model.eval()


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize(("name", "equivalent"), EQUIVALENTS, ids=lambda v: str(v))
def test_weights_of_the_equivalent_model_give_its_logits(name, equivalent):
    theirs = randomised(equivalent.build(), seed=len(name))
    ours = LOADERS[equivalent.library](zoo.create_model(name), theirs.state_dict())
    x = randn((2, 3, 64, 64), seed=1)
    assert_rel_close(logits(ours, x), logits(theirs, x).double(), 1e-5, name=f"{name} vs {equivalent}")


def test_timm_mobilenetv3_weights_bring_timms_batchnorm_epsilon():
    ours = zoo.create_model("slim_mobilenetv3_small_100")
    assert {m.eps for m in ours.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    zoo.load_timm_weights(ours, timm.create_model("mobilenetv3_small_100").state_dict())
    assert {m.eps for m in ours.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-5}


def test_weights_load_from_a_safetensors_file_and_never_from_a_pickle(tmp_path):
    theirs = randomised(_squeezenet())
    path = tmp_path / "squeezenet1_1.safetensors"
    safetensors.torch.save_file(theirs.state_dict(), path)
    ours = zoo.load_torchvision_weights(zoo.create_model("slim_squeezenet1_1"), path)
    x = randn((1, 3, 64, 64), seed=2)
    assert_rel_close(logits(ours, x), logits(theirs, x), 1e-6)
    with pytest.raises(ValueError, match=r"expected a \.safetensors file, got '.*weights\.pth'; files are never"):
        zoo.load_torchvision_weights(ours, tmp_path / "weights.pth")
    with pytest.raises(FileNotFoundError, match=r"state_dict: no such file '.*absent\.safetensors'"):
        zoo.load_torchvision_weights(ours, tmp_path / "absent.safetensors")
    with pytest.raises(TypeError, match=r"state_dict: expected a mapping or a \.safetensors path, got int"):
        zoo.load_torchvision_weights(ours, 3)


def _squeezenet() -> nn.Module:
    import torchvision

    return torchvision.models.squeezenet1_1()


def test_a_checkpoint_of_another_architecture_is_refused_with_the_keys_listed():
    import torchvision

    wide = torchvision.models.mobilenet_v2().state_dict()
    with pytest.raises(ValueError, match=r"does not fit MobileNetV2 \(slim_mobilenetv2_050\): \d+ mismatched: "):
        zoo.load_torchvision_weights(zoo.create_model("slim_mobilenetv2_050"), wide)
    small = torchvision.models.mobilenet_v3_small().state_dict()
    with pytest.raises(
        ValueError,
        match=r"\d+ missing: stages\..*; \d+ unexpected: features\.1\.block\.1\.fc1\.weight.*; \d+ mismatched: ",
    ):
        zoo.load_torchvision_weights(zoo.create_model("slim_mobilenetv3_large_100"), small)
    with pytest.raises(
        ValueError, match=r"\): 2 mismatched: classifier\.1\.weight \(1000, 1280\) -> classifier\.weight \(10, 1280\)"
    ):
        zoo.load_torchvision_weights(zoo.create_model("slim_mobilenetv2_100", num_classes=10), wide)


def test_sources_a_family_does_not_have_are_refused():
    with pytest.raises(ValueError, match=r"ShuffleNetV2 cannot load timm weights \(supported: torchvision\)"):
        zoo.load_timm_weights(zoo.create_model("slim_shufflenetv2_x0_5"), {})
    with pytest.raises(ValueError, match=r"MobileNetV1 cannot load torchvision weights \(supported: timm\)"):
        zoo.load_torchvision_weights(zoo.create_model("slim_mobilenetv1_025"), {})
    with pytest.raises(ValueError, match=r"ShuffleNetV1 cannot load torchvision weights \(supported: none\)"):
        zoo.load_torchvision_weights(zoo.create_model("slim_shufflenetv1_g3_050"), {})
    with pytest.raises(TypeError, match=r"model: expected a slimtorch\.zoo model, got Linear"):
        convert_state_dict(nn.Linear(2, 2), {}, "timm")


def test_timm_loader_takes_our_own_safetensors_file(tmp_path):
    source = randomised(zoo.create_model("slim_shufflenetv2_x0_5"), seed=3)
    path = tmp_path / "ours.safetensors"
    safetensors.torch.save_file(state_dict_tensors(source), path)
    loaded = timm.create_model("slim_shufflenetv2_x0_5", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    x = randn((1, 3, 64, 64), seed=4)
    assert_rel_close(logits(loaded, x), logits(source, x), 1e-6)
    seven = randomised(zoo.create_model("slim_shufflenetv2_x0_5", num_classes=7), seed=5)
    safetensors.torch.save_file(state_dict_tensors(seven), path)
    overlay = {"file": str(path), "num_classes": 7}  # the README's advice for other class counts
    loaded = timm.create_model("slim_shufflenetv2_x0_5", pretrained=True, pretrained_cfg_overlay=overlay)
    assert_rel_close(logits(loaded, x), logits(seven, x), 1e-6)


def test_timm_loader_converts_a_torchvision_file_and_adapts_the_classes(tmp_path):
    theirs = randomised(_squeezenet(), seed=5)
    path = tmp_path / "tv.safetensors"
    safetensors.torch.save_file(theirs.state_dict(), path)
    overlay = {"file": str(path)}
    same = zoo.create_model("slim_squeezenet1_1", pretrained=True, pretrained_cfg_overlay=overlay)
    x = randn((1, 3, 64, 64), seed=6)
    assert_rel_close(logits(same, x), logits(theirs, x), 1e-6)
    ten = zoo.create_model("slim_squeezenet1_1", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10)
    with torch.no_grad():
        assert_rel_close(ten.eval().forward_features(x), theirs.features(x), 1e-6)
    assert ten.get_classifier().out_channels == 10


def test_checkpoint_filter_names_what_did_not_fit():
    model = zoo.create_model("slim_mobilenetv2_035")
    with pytest.raises(
        ValueError, match=r"not a checkpoint of this model \(\d+ missing: .*; 1 unexpected: bogus\.weight\)"
    ):
        checkpoint_filter_fn({"bogus.weight": torch.zeros(1)}, model)


def _with(state_dict: dict, key: str, value: torch.Tensor) -> dict:
    return {**state_dict, key: value}


KEY = "features.3.squeeze.weight"
FINITE = r"expected finite values, got 1 NaN or infinite of \d+"


def _spoiled(kind: str, weight: torch.Tensor) -> torch.Tensor:
    if kind == "complex":
        return weight.to(torch.complex64)
    if kind == "integer":
        return weight.round().to(torch.int32)
    return weight.flatten().clone().index_fill_(0, torch.tensor([5]), float(kind)).view_as(weight)


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        ("complex", TypeError, "expected a real floating dtype, got torch.complex64"),
        ("integer", TypeError, "expected a real floating dtype, got torch.int32"),
        ("nan", ValueError, FINITE),
        ("inf", ValueError, FINITE),
    ],
)
def test_every_stored_tensor_is_checked_and_the_error_names_file_and_key(kind, error, message, tmp_path):
    theirs = randomised(_squeezenet()).state_dict()
    spoiled = _with(theirs, KEY, _spoiled(kind, theirs[KEY]))
    path = tmp_path / f"{kind}.safetensors"
    safetensors.torch.save_file(spoiled, path)
    model = zoo.create_model("slim_squeezenet1_1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    in_file = rf"state_dict: tensor '{re.escape(KEY)}' of file '.*{kind}\.safetensors': {message}"
    with pytest.raises(error, match=in_file):
        zoo.load_torchvision_weights(model, path)
    with pytest.raises(error, match=rf"state_dict: tensor '{re.escape(KEY)}' of the given state_dict: {message}"):
        zoo.load_torchvision_weights(model, spoiled)
    with pytest.raises(ValueError, match=in_file):  # timm's loader (through our filter, which cannot raise TypeError)
        zoo.create_model("slim_squeezenet1_1", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded


def test_our_own_checkpoints_are_checked_too(tmp_path):
    ours = zoo.create_model("slim_shufflenetv2_x0_5")
    state = state_dict_tensors(ours)
    cases = {
        "stages.0.0.conv_pw.bn.running_var": (state["stages.0.0.conv_pw.bn.running_var"] - 2, ">= 0"),
        "stem.conv.weight": (state["stem.conv.weight"][:, :2].contiguous(), r"shape \(24, 3, 3, 3\)"),
        "stem.bn.num_batches_tracked": (torch.tensor(1.5), r"expected an integer dtype \(torch.int64\)"),
    }
    for key, (value, message) in cases.items():
        path = tmp_path / "ours.safetensors"
        safetensors.torch.save_file(_with(state, key, value), path)
        overlay = {"file": str(path)}
        where = rf"state_dict: tensor '{re.escape(key)}' of file '.*ours\.safetensors': "
        with pytest.raises(ValueError, match=where + ".*" + message):  # TypeError: see checkpoint_filter_fn
            timm.create_model("slim_shufflenetv2_x0_5", pretrained=True, pretrained_cfg_overlay=overlay)


def test_truncated_and_foreign_files_are_named(tmp_path):
    path = tmp_path / "squeezenet.safetensors"
    safetensors.torch.save_file(_squeezenet().state_dict(), path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(b"PK\x03\x04 a zip, as torch.save writes")
    model = zoo.create_model("slim_squeezenet1_1")
    for bad in (cut, foreign):
        with pytest.raises(ValueError, match=rf"state_dict: '.*{bad.name}' is not a complete safetensors file \("):
            zoo.load_torchvision_weights(model, bad)
