"""Bad arguments to ``slimtorch.zoo.create_model`` (and to ``timm.create_model`` for a zoo model)
fail before timm's builder uses them, naming the argument, what was expected and what came."""

import pytest
import safetensors.torch
import timm
import torch

import slimtorch.zoo as zoo

NAME = "slim_mobilenetv2_035"

BAD = [
    ({"pretrained": "yes"}, TypeError, r"pretrained: expected a bool, got str 'yes'"),
    ({"pretrained": True}, ValueError, r"pretrained: slim_mobilenetv2_035 has no hosted weights; pass "),
    ({"num_classes": "10"}, TypeError, r"num_classes: expected an int >= 0, got str '10'"),
    ({"num_classes": True}, TypeError, r"num_classes: expected an int >= 0, got bool True"),
    ({"num_classes": -1}, ValueError, r"num_classes: expected an int >= 0, got -1"),
    ({"in_chans": 0}, ValueError, r"in_chans: expected an int >= 1, got 0"),
    ({"in_chans": 3.0}, TypeError, r"in_chans: expected an int >= 1, got float 3.0"),
    ({"drop_rate": 1.5}, ValueError, r"drop_rate: expected a dropout probability in \[0, 1\), got 1.5"),
    ({"global_pool": "mean"}, ValueError, r"global_pool: expected one of \('avg', 'max', .*\), got 'mean'"),
    ({"features_only": "x"}, TypeError, r"features_only: expected a bool, got 'x'"),
    (
        {"features_only": True, "out_indices": (0, 5)},
        ValueError,
        r"out_indices: expected feature levels in \[-5, 5\) of slim_mobilenetv2_035 \(feature_info has 5\), "
        r"got \(0, 5\)",
    ),
    ({"dtype": torch.int8}, TypeError, r"dtype: expected a floating torch.dtype, got torch.int8"),
    ({"device": 0.5}, TypeError, r"device: expected a torch.device or str, got float 0.5"),
    (
        {"drop_rat": 0.1},
        TypeError,
        r"drop_rat: not an argument of slim_mobilenetv2_035 \(MobileNetV2\); accepted: num_classes, in_chans, "
        r"drop_rate, global_pool, act, features_only",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD, ids=lambda v: str(v)[:40])
@pytest.mark.parametrize("factory", [zoo.create_model, timm.create_model], ids=["zoo", "timm"])
def test_bad_arguments_are_named(factory, kwargs, error, message):
    with pytest.raises(error, match=message):
        factory(NAME, **kwargs)


def test_bad_names_are_refused_before_timm_parses_them():
    with pytest.raises(TypeError, match=r"name: expected a model name \(str\), got int 3"):
        zoo.create_model(3)
    with pytest.raises(ValueError, match=r"name: 'resnet18' is not a slimtorch\.zoo model"):
        zoo.create_model("resnet18")
    with pytest.raises(ValueError, match=r"name: slim_mobilenetv2_035 has no tag 'in1k' \(its tags: none\)"):
        zoo.create_model("slim_mobilenetv2_035.in1k")


def test_pretrained_files_must_be_whole_safetensors_files(tmp_path):
    def overlay(path):
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}

    with pytest.raises(ValueError, match=r"pretrained_cfg_overlay: expected a \.safetensors file \(never a pickle\)"):
        zoo.create_model(NAME, **overlay(tmp_path / "weights.pth"))
    with pytest.raises(FileNotFoundError, match=r"pretrained_cfg_overlay: no such file '.*absent\.safetensors'"):
        zoo.create_model(NAME, **overlay(tmp_path / "absent.safetensors"))
    whole = tmp_path / "whole.safetensors"
    safetensors.torch.save_file(zoo.create_model(NAME).state_dict(), whole)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"pretrained_cfg_overlay: '.*cut\.safetensors' is not a complete safetensors"):
        timm.create_model(NAME, **overlay(cut))
    assert zoo.create_model(NAME, **overlay(whole)).num_classes == 1000


def test_timm_factory_device_and_dtype():
    model = timm.create_model(NAME, device="meta", dtype=torch.bfloat16)
    assert {(t.device.type, t.dtype) for t in model.parameters()} == {("meta", torch.bfloat16)}
    assert {t.dtype for t in model.buffers()} == {torch.bfloat16, torch.int64}  # num_batches_tracked stays int
    features = zoo.create_model(NAME, features_only=True, device="meta")
    assert {t.device.type for t in features.parameters()} == {"meta"}
