from pathlib import Path

import torch
import triton
import triton.language as tl

from slimtorch.core import dispatch, triton_compat
from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.core.triton_compat import dot_acc, install_interpreter_fixes, upcast_dot_operands

ROOT = Path(__file__).resolve().parents[2]


@triton.jit
def _looped_dot_kernel(a_ptr, b_ptr, out_ptr, K, UPCAST: tl.constexpr, BLOCK: tl.constexpr):
    """out (16, 16) = a (16, K) @ b (K, 16), K walked in a runtime-bounded loop (the 3.6 case)."""
    rows = tl.arange(0, 16)
    acc = tl.zeros((16, 16), dtype=tl.float32)
    for k0 in range(0, tl.cdiv(K, BLOCK)):
        ks = k0 * BLOCK + tl.arange(0, BLOCK)
        a = tl.load(a_ptr + rows[:, None] * K + ks[None, :], mask=ks[None, :] < K, other=0.0)
        b = tl.load(b_ptr + ks[:, None] * 16 + rows[None, :], mask=ks[:, None] < K, other=0.0)
        acc = dot_acc(a, b, acc, UPCAST)
    tl.store(out_ptr + rows[:, None] * 16 + rows[None, :], acc)


def test_runtime_loop_bound_and_bf16_dot(device):
    """Both interpreter fixes at once: a runtime loop bound (triton 3.6 + NumPy >= 2.3) and a bf16
    dot (wrong in the interpreter without the upcast); natively on a GPU."""
    install_interpreter_fixes()  # launched directly here, not through dispatch
    for dtype, bound in ((torch.bfloat16, 2e-2), (torch.float16, 4e-3)):
        a = randn((16, 45), dtype=dtype, device=device, seed=1)
        b = randn((45, 16), dtype=dtype, device=device, seed=2)
        out = torch.full((16, 16), float("nan"), device=device)
        _looped_dot_kernel[(1,)](a, b, out, 45, UPCAST=upcast_dot_operands(dtype), BLOCK=16)
        assert_rel_close(out, a.double() @ b.double(), bound)


def test_upcast_only_for_bf16_in_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert upcast_dot_operands(torch.bfloat16) and not upcast_dot_operands(torch.float16)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not upcast_dot_operands(torch.bfloat16)


def test_dispatch_installs_the_fixes_once_when_it_runs_the_interpreter(monkeypatch):
    calls = []
    monkeypatch.setattr(triton_compat, "install_interpreter_fixes", lambda: calls.append(1))
    monkeypatch.setattr(dispatch._install_interpreter_fixes, "done", False, raising=False)
    ran = [dispatch.use_kernel("triton", torch.zeros(2)) for _ in range(3)]
    assert calls == ([1] if ran[0] else [])  # once, and only where a Triton kernel runs on CPU tensors


def test_no_module_imports_triton_compat_for_its_side_effect():
    sources = [*ROOT.glob("packages/*/src/**/*.py"), *ROOT.glob("kernels/*/src/**/*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in sources if "import slimtorch.core.triton_compat" in p.read_text()]
    assert len(sources) > 20 and offenders == []
