"""Every Triton kernel of slimtorch.convops as AOT specialisations (see slimtorch.core.aot), captured
from the launchers (slimtorch.core.capture) so each is specialised exactly as at run time: depthwise
forward (channel multiplier 2, folded BN, shift offsets, hardswish; strided and dilated) and its two
gradients, the 1x1 with input/output shuffles, stride 2, offsets and its weight gradient, and the
channel shuffle / concat gather, in fp16 and bf16 (fp32 too unless ``quick``), channels_last."""

import torch

from slimtorch.convops.depthwise import depthwise_conv2d, depthwise_conv2d_grad_input, depthwise_conv2d_grad_weight
from slimtorch.convops.pointwise import pointwise_conv2d, pointwise_conv2d_grad_weight
from slimtorch.convops.shuffle import channel_shuffle, shuffle_concat
from slimtorch.core.aot import captured_specs

BATCH, C, H, W = 3, 24, 13, 11
GEOMETRY = dict(stride=[2, 1], padding=[1, 1, 2, 2], dilation=[1, 2])


def _t(*shape, dtype, device="cuda"):
    t = torch.randn(*shape, device=device, dtype=dtype)
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def _run(dtypes):
    for dtype in dtypes:
        x = _t(BATCH, C, H, W, dtype=dtype)
        offsets = torch.randint(-1, 2, (C, 2), device="cuda", dtype=torch.int32)
        weight = _t(2 * C, 1, 3, 3, dtype=dtype)
        scale, shift = _t(2 * C, dtype=dtype), _t(2 * C, dtype=dtype)
        y = depthwise_conv2d.launcher(x, weight, scale, shift, offsets, activation="hardswish", **GEOMETRY)
        grad = torch.randn_like(y)
        depthwise_conv2d_grad_input.launcher(grad, weight, offsets, input_shape=list(x.shape), **GEOMETRY)
        xm = _t(BATCH, 2 * C, H, W, dtype=dtype)  # multiplier 1 for the weight gradient
        grad1 = torch.randn_like(depthwise_conv2d.launcher(xm, _t(2 * C, 1, 3, 3, dtype=dtype), None, None, None,
                                                           activation="none", **GEOMETRY))  # fmt: skip
        depthwise_conv2d_grad_weight.launcher(xm, grad1, None, kernel_size=[3, 3], **GEOMETRY)
        pw = _t(2 * C, C // 2, 1, 1, dtype=dtype)
        y = pointwise_conv2d.launcher(
            x, pw, scale, shift, offsets, groups=2, in_shuffle=2, out_shuffle=4, stride=2, activation="silu"
        )
        pointwise_conv2d_grad_weight.launcher(x, torch.randn_like(y), offsets, groups=2, in_shuffle=2, stride=2)
        shuffle_concat.launcher(x, _t(BATCH, C, H, W, dtype=dtype), 2)
        channel_shuffle.launcher(x, 3)


def aot_specs(quick: bool):
    dtypes = (torch.float16, torch.bfloat16) if quick else (torch.float16, torch.bfloat16, torch.float32)
    return captured_specs("convops", lambda: _run(dtypes), quick)
