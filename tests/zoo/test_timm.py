"""timm and torch integration, one model per family: features_only, the head API, channels_last,
torch.compile, torch.export and ONNX export of the float models."""

import copy
import io

import pytest
import safetensors.torch
import timm
import torch

import slimtorch.zoo as zoo
from slimtorch import convops
from slimtorch.core import reference_only
from slimtorch.core.model_stats import state_dict_tensors
from slimtorch.core.testing import assert_rel_close, randn

ONE_PER_FAMILY = [
    "slim_mobilenetv1_025",
    "slim_mobilenetv2_035",
    "slim_mobilenetv3_small_100",
    "slim_shufflenetv1_g3_050",
    "slim_shufflenetv2_x0_5",
    "slim_squeezenet1_1",
    "slim_shiftresnet20",
    "slim_shiftnet_a",
]


def eval_model(name: str, **kwargs) -> torch.nn.Module:
    return zoo.create_model(name, **kwargs).eval()


def image(seed: int = 0, size: int = 64) -> torch.Tensor:
    return randn((2, 3, size, size), seed=seed)


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_features_only_returns_every_documented_level(name, tmp_path):
    model = eval_model(name)
    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(state_dict_tensors(model), path)
    overlay = {"file": str(path)}
    features = timm.create_model(name, features_only=True, pretrained=True, pretrained_cfg_overlay=overlay).eval()
    info = model.feature_info
    seen = {}
    for level in info:
        module = model.get_submodule(level["module"])
        module.register_forward_hook(lambda _m, _i, out, key=level["module"]: seen.__setitem__(key, out))
    x = image(1)
    with reference_only(), torch.no_grad():
        outs = features(x)
        model(x)
    assert [o.shape[1] for o in outs] == [f["num_chs"] for f in info] == features.feature_info.channels()
    for out, level in zip(outs, info, strict=True):
        assert torch.equal(out, seen[level["module"]]), level
        assert abs(out.shape[-1] - 64 / level["reduction"]) <= 1.5, (level, out.shape)  # unpadded stems lose a pixel
    two = timm.create_model(name, features_only=True, out_indices=(0, len(info) - 1)).eval()
    with torch.no_grad():
        assert [o.shape for o in two(x)] == [outs[0].shape, outs[-1].shape]


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_head_api_and_channels_last(name):
    model = eval_model(name, num_classes=5)
    x = image(2)
    with reference_only(), torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        assert torch.equal(model.forward_head(features), logits)
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        model_cl = eval_model(name, num_classes=5)
        model_cl.load_state_dict(model.state_dict())
        model_cl = model_cl.to(memory_format=torch.channels_last)
        assert_rel_close(model_cl(x.to(memory_format=torch.channels_last)), logits.double(), 1e-5)
        model.reset_classifier(0)
        assert model.get_classifier().__class__.__name__ == "Identity"
        assert model(x).shape == (2, model.head_hidden_size)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name", ["slim_mobilenetv3_small_100", "slim_shiftresnet20"])
def test_torch_compile_traces_the_whole_model(name):
    model = eval_model(name, num_classes=6)
    x = image(3, 32)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with reference_only(), torch.no_grad():
        assert_rel_close(compiled(x), model(x).double(), 1e-5)


# ShiftNet-A's 25-way shifts take 15 s to trace; ShiftResNet covers the shift.
EXPORTED = [name for name in ONE_PER_FAMILY if name != "slim_shiftnet_a"]


@pytest.mark.parametrize("name", EXPORTED)
def test_torch_export(name):
    model = eval_model(name, num_classes=6)
    x = image(4, 32)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert_rel_close(exported.module()(x), model(x).double(), 1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", EXPORTED)
def test_onnx_export_runs_in_the_onnx_reference_evaluator(name):
    import onnx  # slimtorch-zoo's test extra
    from onnx.reference import ReferenceEvaluator

    model = eval_model(name, num_classes=4)
    x = image(5, 16 if name == "slim_shiftresnet20" else 32)
    buffer = io.BytesIO()
    # ONNX sees standard ops: the convops layers go back to plain torch first (same function).
    torch.onnx.export(
        convops.to_torch_(copy.deepcopy(model)).model,
        (x,),
        buffer,
        dynamo=False,
        input_names=["images"],
        output_names=["logits"],
    )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    (out,) = ReferenceEvaluator(proto).run(None, {"images": x.numpy()})
    with torch.no_grad():
        assert_rel_close(torch.from_numpy(out), model(x).double(), 1e-4)
