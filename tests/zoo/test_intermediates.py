"""timm's model API on every family: default-cfg agreement, the head (pooling removed, concat
pooling, reset on the model's device/dtype), and the intermediate-features API
(``forward_intermediates``, ``prune_intermediate_layers``, ``features_only`` getters).
timm's own suite runs on every model in ``nox -s timm`` (ci/timm_suite.py); these tests pin the
contracts on one model per family with exact comparisons."""

import copy

import pytest
import timm
import torch
from torch import nn

import slimtorch.zoo as zoo
from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.zoo.blocks import ZooModel

from .test_timm import ONE_PER_FAMILY

MODELS = zoo.list_models()


def image(seed: int) -> torch.Tensor:
    return randn((2, 3, 48, 40), seed=seed)  # not square, not a multiple of 32


def eval_model(name: str, **kwargs) -> ZooModel:
    return zoo.create_model(name, **kwargs).eval()


@pytest.mark.parametrize("name", MODELS)
def test_default_cfg_describes_the_model(name):
    """On the meta device (free): timm's factory ``device``/``dtype``, ``in_chans``, and the
    unpooled features at the cfg's ``input_size`` have ``pool_size`` and ``num_features``."""
    model = timm.create_model(name, device="meta", dtype=torch.float64).eval()
    cfg = model.pretrained_cfg
    tensors = [*model.parameters(), *model.buffers()]
    assert {t.device.type for t in tensors} == {"meta"}
    assert {t.dtype for t in model.parameters()} == {torch.float64}
    assert model.in_chans == cfg["input_size"][0]
    features = model.forward_features(torch.empty((1, *cfg["input_size"]), device="meta", dtype=torch.float64))
    assert tuple(features.shape[1:]) == (model.num_features, *cfg["pool_size"])
    assert model.forward_head(features, pre_logits=True).shape == (1, model.head_hidden_size)
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_head_without_pooling_classifies_every_position(name):
    pooled = eval_model(name, num_classes=5)
    unpooled = copy.deepcopy(pooled)
    unpooled.reset_classifier(5, "")
    unpooled.classifier.load_state_dict(pooled.classifier.state_dict())
    x = image(1)
    with torch.no_grad():
        features = pooled.forward_features(x)
        maps = unpooled.forward_head(features)
        assert maps.shape == (2, 5, *features.shape[2:])
        for h, w in ((0, 0), (features.shape[2] - 1, features.shape[3] - 1)):
            one = pooled.forward_head(features[:, :, h : h + 1, w : w + 1])  # pooling one position is the identity
            assert_rel_close(maps[:, :, h, w], one.double(), 1e-6)
        unpooled.reset_classifier(0)
        assert unpooled(x).shape == (2, unpooled.head_hidden_size, *features.shape[2:])
    headless = zoo.create_model(name, num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert headless(x).shape == (2, headless.head_hidden_size, *features.shape[2:])


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_reset_classifier_builds_on_the_models_device_dtype_and_mode(name):
    model = eval_model(name).to(torch.float64)
    model.reset_classifier(3)
    assert {p.dtype for p in model.get_classifier().parameters()} == {torch.float64}
    assert not any(m.training for m in model.modules())
    model.to("meta").train()
    model.reset_classifier(4, "max")
    assert {p.device.type for p in model.get_classifier().parameters()} == {"meta"}
    assert all(m.training for m in model.modules())


def test_concat_pooling_doubles_the_pre_logits_width_or_is_refused():
    model = eval_model("slim_mobilenetv1_025", global_pool="catavgmax", num_classes=3)
    assert model.head_hidden_size == 2 * model.num_features
    x = image(2)
    with torch.no_grad():
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.head_hidden_size)
        assert model(x).shape == (2, 3)
    with pytest.raises(ValueError, match=r"global_pool: SqueezeNet pools its logits, expected one of .*'catavgmax'"):
        zoo.create_model("slim_squeezenet1_1", global_pool="catavgmax")
    v3 = eval_model("slim_mobilenetv3_small_100")
    with pytest.raises(ValueError, match=r"global_pool: the pre-logits layer takes 576 features, pooling .* 1152"):
        v3.reset_classifier(0, "catavgmax")
    assert v3.global_pool.pool_type == "avg" and v3.num_classes == 1000  # left as it was
    with pytest.raises(ValueError, match=r"global_pool: expected one of \('avg', .*\), got 'mean'"):
        v3.reset_classifier(0, "mean")


def taps(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of the feature_info modules, by forward hooks on a plain forward."""
    seen = {}
    handles = [
        model.get_submodule(level["module"]).register_forward_hook(
            lambda _m, _i, out, key=level["module"]: seen.__setitem__(key, out)
        )
        for level in model.feature_info
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return [seen[level["module"]] for level in model.feature_info]


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_forward_intermediates_returns_the_feature_info_levels(name):
    model = eval_model(name)
    x = image(3)
    expected = taps(model, x)
    levels = len(model.feature_info)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert len(intermediates) == levels
        for got, want, level in zip(intermediates, expected, model.feature_info, strict=True):
            assert got.shape[1] == level["num_chs"] and torch.equal(got, want), level
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape for t in last_two] == [t.shape for t in expected[-2:]]
        ends = model.forward_intermediates(x, indices=[-1, 0], intermediates_only=True)  # execution order
        assert torch.equal(ends[0], expected[0]) and torch.equal(ends[1], expected[-1])
        for i in range(levels):
            (early,) = model.forward_intermediates(x, indices=[i], stop_early=True, intermediates_only=True)
            assert torch.equal(early, expected[i]), i
        (last,) = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
        # the final "norm" (ShiftNet-A's BatchNorm + ReLU) applies to the last level only
        assert torch.equal(last, final if model.post_is_norm else expected[-1])
    with pytest.raises(ValueError, match=r"output_fmt: expected 'NCHW' \(the zoo's only layout\), got 'NHWC'"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_pruned_models_end_at_the_kept_level_and_train(name):
    model = eval_model(name, drop_rate=0.0)
    x = image(4)
    expected = taps(model, x)
    with torch.no_grad():
        logits = model(x)
    kept = copy.deepcopy(model)
    kept.prune_intermediate_layers([len(model.feature_info) - 1], prune_head=False)
    with torch.no_grad():
        assert torch.equal(kept(x), logits)  # nothing after the last level is needed: nothing removed
    for i, level in enumerate(model.feature_info):
        pruned = copy.deepcopy(model)
        take = pruned.prune_intermediate_layers([i], prune_norm=True)
        assert take == [i] and pruned.num_features == level["num_chs"] and pruned.num_classes == 0
        with torch.no_grad():
            assert torch.equal(pruned.forward_features(x), expected[i]), level
            (tap,) = pruned.forward_intermediates(x, indices=take, intermediates_only=True)
            assert torch.equal(tap, expected[i]), level
            if i + 1 < len(model.feature_info):
                with pytest.raises(ValueError, match=rf"indices: feature {i + 1} \(.*\) is not in this model any more"):
                    pruned.forward_intermediates(x, indices=[i + 1])
        pruned.train()
        pruned.forward_features(x).sum().backward()
        unused = [n for n, p in pruned.named_parameters() if p.grad is None]
        assert unused == [], f"pruned to level {i}: unused parameters {unused[:4]}"
    classifier = copy.deepcopy(model)
    classifier.prune_intermediate_layers([1], prune_head=False)  # cut, head kept: rebuilt for the level's width
    classifier.eval()
    with torch.no_grad():
        assert classifier(x).shape == (2, model.num_classes)
        assert classifier.head_hidden_size == model.feature_info[1]["num_chs"]


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_features_only_getter_uses_forward_intermediates(name):
    model = eval_model(name)
    x = image(5)
    expected = taps(model, x)
    getter = timm.create_model(name, features_only=True, feature_cls="getter", out_indices=(0, 2)).eval()
    getter.model.load_state_dict(model.state_dict(), strict=False)  # the pruned model keeps a prefix of ours
    with torch.no_grad():
        outs = getter(x)
    assert getter.feature_info.channels() == [model.feature_info[i]["num_chs"] for i in (0, 2)]
    assert torch.equal(outs[0], expected[0]) and torch.equal(outs[1], expected[2])
