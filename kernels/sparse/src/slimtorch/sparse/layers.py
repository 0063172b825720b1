"""Drop-in sparse layers: 2:4 and block-sparse Linear, masked fine-tuning (convolutions: core's
GemmConv2d around one of them).

- :class:`SparseLinear24` — 2:4 weight stored as ``values`` (N, K/2) + ``meta`` (N, ceil(K/32))
  int32 (+ ``perm`` when its input channels were permuted). ``backend`` follows core's rule
  (:mod:`slimtorch.core.dispatch`): ``"auto"`` (the Triton kernels on CUDA, the torch reference
  on CPU), ``"triton"``, ``"cuda"`` (the CUDA-C ``mma.sp`` kernel: opt-in, not yet GPU-verified;
  also chosen for fp16/bf16 inputs with K % 32 == 0 under ``SLIMTORCH_BACKEND=cuda``), ``"torch"``
  (``torch.sparse.to_sparse_semi_structured``, CUDA only) and ``"reference"``. Under ``"auto"``
  on CUDA the batch decides (:func:`choose_kernel_24`): M <= SMALL_M_MAX (16) runs the Triton
  kernels; larger M runs on sparse tensor cores, torch's cuSPARSELt (CUTLASS where torch lacks
  cuSPARSELt) for fp16/bf16 on sm_80+, else our mma.sp kernel, and the Triton tile kernel only
  when neither takes the input (fp32, shapes they reject). torch's operand is built lazily from
  the canonical (values, meta) per (device, dtype) and is never part of the state_dict.
- :class:`BlockSparseLinear` — BSR weight (``crow_indices``, ``col_indices``, ``values``).
- :class:`MaskedSparseLinear` — for fine-tuning: a dense weight times a 2:4 mask, so gradients
  reach the kept weights only; with ``sr_ste=True`` the mask is recomputed from the dense weights
  every forward and pruned weights get the SR-STE gradient ``g + λ·(1 − mask)·w`` (Zhou et al.,
  "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch", ICLR 2021).
  ``to_sparse()`` gives the fast :class:`SparseLinear24`.

Dispatch by measurement (:mod:`slimtorch.core.measured`): an eager inference call (no gradient to
record, not being compiled) of an ``"auto"`` layer on a CUDA tensor runs, per shape bucket
(M bucketed, N, K, dtype, activation; for BSR also the block size and the stored-block count),
whichever candidate measured fastest on its first call, and caches the choice:

- SparseLinear24: choose_kernel_24's pick first (what ``SLIMTORCH_DISPATCH=kernel`` and calls under
  ``torch.compile`` or with gradients run), then torch's semi-structured path, cuBLAS ``F.linear``
  on the dense weight, and the Triton kernels;
- BlockSparseLinear: the Triton BSR kernel, ``F.linear`` on torch's ``sparse_bsr_tensor`` and
  cuBLAS ``F.linear`` on the dense weight.

The dense copy cuBLAS needs (N·K elements, more than the compressed weight) is built when first
measured and kept only while some bucket of the layer chooses it, so a layer whose buckets all pick
a sparse path holds no dense weight once measured. Every torch candidate applies core's NaN/Inf row
policy, as the kernels do.

Every layer's state_dict holds only its compressed form and round-trips exactly; shapes that
depend on the data (the permutation, the number of stored blocks) follow the loaded state_dict.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.core import measured
from slimtorch.core.activations import ACTIVATIONS, activation_reference
from slimtorch.core.checks import (
    FLOAT_DTYPES,
    check_choice,
    check_divisible,
    check_finite,
    check_positive_int,
    check_tensor,
)
from slimtorch.core.dispatch import check_backend, choose_backend, preferred_backend
from slimtorch.core.modules import GemmConv2d, dense_linear
from slimtorch.core.reference import nonfinite_rows_to_nan
from slimtorch.sparse.bsr import bsr_mm
from slimtorch.sparse.formats import (
    check_block_size,
    check_bsr_structure,
    check_meta_24,
    check_permutation,
    compress_24,
    decompress_24,
    from_bsr,
    invert_permutation,
    is_24_sparse,
    pack_meta,
    permute_for_24,
    prune_24,
    prune_blocks,
    retained_magnitude,
    to_bsr,
    to_mma_sp_metadata,
    top2_mask,
)
from slimtorch.sparse.mma_sp import MMA_SP_DTYPES, sparse24_mm_sp
from slimtorch.sparse.sparse24 import check_sparse24_operands, sparse24_mm

# The 2:4 layer's kernels, default first: Triton, the CUDA-C mma.sp kernel (opt-in: not yet
# verified on a GPU), torch's to_sparse_semi_structured (cuSPARSELt / CUTLASS).
KERNELS_24: tuple[str, ...] = ("triton", "cuda", "torch")
# backend="auto" on CUDA: M <= this runs the Triton kernels (memory bound: they read 1.78x fewer bytes than
# dense); larger M goes to sparse tensor cores (cuSPARSELt through torch, else our mma.sp), never to the
# Triton tile kernel's zero-filled dense MMAs unless neither takes the input (fp32, odd shapes).
SMALL_M_MAX = 16
SPARSE_TC_DTYPES = (torch.float16, torch.bfloat16)

# Dispatch by measurement (module doc): the ops' names in core.measured's cache and their candidates.
OP_24, OP_BSR = "slimtorch::sparse24_linear", "slimtorch::bsr_linear"
TORCH_SEMI_STRUCTURED = "torch semi-structured"  # to_sparse_semi_structured: cuSPARSELt, else CUTLASS
TORCH_BSR = "torch BSR"  # F.linear on torch.sparse_bsr_tensor (torch's own BSR matmul)
TORCH_DENSE = "torch F.linear"  # cuBLAS on the dense weight (a copy kept only while chosen)
CANDIDATES_24 = {"triton": "triton", "cuda": "cuda mma.sp", "torch": TORCH_SEMI_STRUCTURED, "dense": TORCH_DENSE}


def choose_kernel_24(
    m: int,
    dtype: torch.dtype,
    capability: tuple[int, int] | None,
    in_features: int,
    out_features: int,
    *,
    torch_sparse: bool,
    torch_min_shape: tuple[int, int] | None,
    cupy: bool,
) -> str:
    """The auto choice for one CUDA call of a 2:4 layer (pure: every input given, so CPU tests cover it).

    ``capability``: the device's (major, minor); ``torch_sparse``: torch's semi-structured path is built in
    (cuSPARSELt, or CUTLASS); ``torch_min_shape``: its (rows, cols) multiples for the weight in ``dtype``
    (None: dtype unsupported); ``cupy``: the [cuda] extra is installed (our mma.sp kernel). Returns
    "triton" (M <= SMALL_M_MAX, or nothing else takes the input), "torch" or "cuda"."""
    if m <= SMALL_M_MAX or dtype not in SPARSE_TC_DTYPES or capability is None or capability < (8, 0):
        return "triton"
    if torch_sparse and torch_min_shape is not None:
        rows, cols = torch_min_shape
        if out_features % rows == 0 and in_features % cols == 0:
            return "torch"
    if cupy and in_features % 32 == 0:
        return "cuda"
    return "triton"


def _torch_semi_structured_shape(dtype: torch.dtype) -> tuple[bool, tuple[int, int] | None]:
    """(torch's semi-structured path available, the weight's (rows, cols) multiples for ``dtype``)."""
    try:
        from torch.sparse import semi_structured as ss
    except ImportError:
        return False, None
    cusparselt = getattr(torch.backends, "cusparselt", None)
    use_cusparselt = cusparselt is not None and cusparselt.is_available()
    use_cusparselt = use_cusparselt and not ss.SparseSemiStructuredTensor._FORCE_CUTLASS
    cls = ss.SparseSemiStructuredTensorCUSPARSELT if use_cusparselt else ss.SparseSemiStructuredTensorCUTLASS
    constraint = cls._DTYPE_SHAPE_CONSTRAINTS.get(dtype)
    return True, None if constraint is None else (constraint.sparse_min_rows, constraint.sparse_min_cols)


@functools.cache
def _cupy_installed() -> bool:
    """The [cuda] extra is importable (looked up once: find_spec costs ~0.1 ms, more than a GEMV)."""
    return importlib.util.find_spec("cupy") is not None


def _linear_input(x: torch.Tensor, in_features: int) -> torch.Tensor:
    check_tensor(x, "x")
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"x: expected shape (*, {in_features}), got {tuple(x.shape)}")
    return x.reshape(-1, in_features)


def _adopt_incoming_shapes(
    module: nn.Module, state_dict: dict, prefix: str, names: tuple[str, ...], *, optional: bool = False
) -> None:
    """Before loading: give data-dependent tensors (nnz, permutation) the incoming shapes and
    create them when the state_dict has them and the module does not; ``optional`` buffers the
    state_dict lacks are dropped. Dtypes stay the module's; the device is that of ``values``."""
    for name in names:
        current = getattr(module, name)
        incoming = state_dict.get(prefix + name)
        if incoming is None:
            if optional and current is not None:
                module._buffers[name] = None
            continue
        if current is not None and current.shape == incoming.shape:
            continue
        device = current.device if current is not None else module.values.device
        dtype = current.dtype if current is not None else incoming.dtype
        fresh = torch.empty(incoming.shape, dtype=dtype, device=device)
        if isinstance(current, nn.Parameter):
            setattr(module, name, nn.Parameter(fresh, requires_grad=current.requires_grad))
        else:
            module._buffers[name] = fresh


def _check_loaded_floats(module: nn.Module, state_dict: dict, prefix: str, shapes: dict[str, tuple]) -> None:
    """Stored float tensors (values, bias): a float dtype (never cast from integers), the shape, finite."""
    for name, shape in shapes.items():
        if prefix + name in state_dict:
            t = check_tensor(state_dict[prefix + name], prefix + name, shape=shape, dtype=FLOAT_DTYPES)
            check_finite(t, prefix + name)


def _copy_linear_bias(layer: nn.Module, linear: nn.Linear) -> None:
    if linear.bias is not None:
        layer.bias.data.copy_(linear.bias.detach())


def _check_mask_24(mask: torch.Tensor, weight: torch.Tensor) -> None:
    check_tensor(mask, "mask", shape=tuple(weight.shape), dtype=torch.bool)
    if not is_24_sparse(mask):
        raise ValueError("mask: expected a 2:4 mask (at most 2 True in every 4 consecutive columns)")


# ----------------------------------------------------------------------------- 2:4


class _CompressedLinear(nn.Module):
    """What the compressed Linear layers share: features, bias, activation, the (*, K) -> (*, N)
    reshaping around ``_matmul`` (2-d x), the stored-weight count and the repr."""

    def __init__(self, in_features, out_features, bias, activation, device, dtype):
        super().__init__()
        check_positive_int(in_features, "in_features")
        check_positive_int(out_features, "out_features")
        check_choice(activation, "activation", ACTIVATIONS)
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self._dense_weights: dict = {}  # (device, dtype) -> dense W for the TORCH_DENSE candidate (never saved)
        self._dense_buckets: set = set()  # the (device, bucket) pairs that chose TORCH_DENSE

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decoded_weight(self) -> torch.Tensor:
        """The dense W (N, K) of the stored weight (detached)."""
        raise NotImplementedError

    def _measure_key(self, x: torch.Tensor) -> tuple:
        """core.measured's shape bucket: (m_bucket(M), N, K, dtype, activation)."""
        return (*measured.gemm_key(x, self.out_features, self.in_features), self.activation)

    def _measures(self, x: torch.Tensor, backend: str = "auto") -> bool:
        """Dispatch by measurement applies (module doc): ``"auto"`` here and in SLIMTORCH_BACKEND, an
        eager call (under torch.compile the default route is traced) recording no gradient (the torch
        candidates use detached derived weights), on a tensor the measurer times (real CUDA)."""
        if torch.compiler.is_compiling() or backend != "auto" or preferred_backend() != "auto":
            return False
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, self.values, self.bias)):
            return False
        return measured.measurer().measurable(x)

    def _run_measured(self, op: str, x: torch.Tensor, candidates: dict[str, Callable[[], torch.Tensor]]):
        """core.measured.run, then keep the dense copy only while some bucket of this layer chooses it."""
        key = self._measure_key(x)
        out = measured.run(op, key, candidates, x)
        if not self._dense_weights:  # no copy held (the usual case once measured): nothing to decide
            return out
        choice = measured.chosen(op, key, x)
        if choice is not None:
            bucket = (str(x.device), key)
            if choice == TORCH_DENSE:
                self._dense_buckets.add(bucket)
            else:
                self._dense_buckets.discard(bucket)
            if not self._dense_buckets:
                self._dense_weights = {}
        return out

    def _torch_output(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A torch candidate's y = x·Wᵀ + bias → act(y) with the NaN/Inf row policy of the kernels."""
        y = y if self.activation == "none" else activation_reference(y, self.activation)
        return nonfinite_rows_to_nan(x, y)

    def _dense_linear(self, x: torch.Tensor) -> torch.Tensor:
        """The TORCH_DENSE candidate: cuBLAS F.linear on the dense W (built once per device and dtype)."""
        key = (x.device, x.dtype)
        weight = self._dense_weights.get(key)
        if weight is None:
            weight = self._dense_weights[key] = self._decoded_weight().to(x.device, x.dtype).contiguous()
        bias = None if self.bias is None else self.bias.detach()
        return self._torch_output(x, F.linear(x, weight, bias))

    def _drop_dense(self) -> None:
        self._dense_weights, self._dense_buckets = {}, set()

    def _apply(self, fn, recurse=True):
        self._drop_dense()  # .to / .cuda / .half: rebuilt from the stored weight on next use
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._matmul(_linear_input(x, self.in_features))
        return y.reshape(*x.shape[:-1], self.out_features)

    def compressed_num_params(self) -> int:
        return self.values.numel() + (0 if self.bias is None else self.bias.numel())

    def conversion_source(self) -> str:
        return f"already sparse ({type(self).__name__})"

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"activation={self.activation}"
        )


class SparseLinear24(_CompressedLinear):
    """``y = act(x @ W.T + bias)`` with a 2:4 sparse W (N, K) stored compressed."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        activation: str = "none",
        permuted: bool = False,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        check_divisible(in_features, 4, "in_features")
        check_backend(backend, KERNELS_24, "SparseLinear24")
        super().__init__(in_features, out_features, bias, activation, device, dtype)
        self.backend = backend
        self.values = nn.Parameter(torch.zeros(out_features, in_features // 2, device=device, dtype=dtype))
        # Default structure: every group keeps slots (0, 1).
        first_slots = torch.tensor([0, 1], device=device).repeat(out_features, in_features // 4)
        self.register_buffer("meta", pack_meta(first_slots))
        self.register_buffer("perm", torch.arange(in_features, device=device) if permuted else None)
        self.register_buffer("meta_mma", None, persistent=False)  # cache for the mma.sp backend
        self._torch_weights: dict = {}  # (device, dtype) -> torch's operand for the "torch" backend
        self.retained_gain: float | None = None  # magnitude kept thanks to the permutation, if any

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        mask: torch.Tensor | None = None,
        permute: bool = False,
        *,
        activation: str = "none",
        backend: str = "auto",
    ) -> SparseLinear24:
        """Prune ``linear`` 2:4 (``mask``, or the 2 largest |w| of each group) and compress it.

        ``permute=True`` first searches an input-channel permutation that keeps more magnitude
        (:func:`~slimtorch.sparse.formats.permute_for_24`); the layer then gathers x's columns by
        it, so outputs equal ``x @ (W·mask).T`` for the permuted mask. ``retained_gain`` records
        the relative gain in kept magnitude. A given ``mask`` is in the original column order.
        """
        weight = linear.weight.detach()
        check_tensor(weight, "linear.weight", ndim=2)
        check_divisible(weight.shape[1], 4, "linear.in_features")
        if mask is not None:
            check_tensor(mask, "mask", shape=tuple(weight.shape), dtype=torch.bool)
        perm = permute_for_24(weight) if permute else None
        permuted = weight if perm is None else weight[:, perm]
        if mask is None:
            mask = prune_24(permuted)
        else:
            mask = mask if perm is None else mask[:, perm]
            _check_mask_24(mask, permuted)
        values, meta = compress_24(permuted * mask)
        layer = cls(
            weight.shape[1],
            weight.shape[0],
            bias=linear.bias is not None,
            activation=activation,
            permuted=perm is not None,
            backend=backend,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            layer.values.copy_(values)
            layer.meta.copy_(meta)
            _copy_linear_bias(layer, linear)
            if perm is not None:
                layer.perm.copy_(perm)
                layer.retained_gain = retained_magnitude(weight, perm) / max(retained_magnitude(weight), 1e-30) - 1
        return layer

    def to_dense(self) -> nn.Linear:
        """The equivalent nn.Linear (pruned weights are zeros; columns back in input order)."""
        weight = decompress_24(self.values.detach(), self.meta)
        if self.perm is not None:
            weight = weight[:, invert_permutation(self.perm)]
        return dense_linear(weight, None if self.bias is None else self.bias.detach())

    def _decoded_weight(self) -> torch.Tensor:
        return decompress_24(self.values.detach(), self.meta)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        if self.perm is not None:
            x = x.index_select(1, self.perm)
        backend = choose_backend(self.backend, self._kernels(x), x, op="SparseLinear24")
        if self._measures(x, self.backend):
            return self._measured_matmul(x)
        if backend == "triton" and x.is_cuda and self.backend == "auto" and preferred_backend() == "auto":
            backend = self._auto_kernel(x)
        return self._run_kernel(backend, x)

    def _run_kernel(self, backend: str, x: torch.Tensor) -> torch.Tensor:
        if backend == "torch":
            return self._torch_semi_structured(x)
        if backend == "cuda":
            return sparse24_mm_sp(x, self.values, self._mma_meta(), self.bias, self.activation)
        return sparse24_mm(x, self.values, self.meta, self.bias, self.activation)

    def _measured_candidates(self, x: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
        """choose_kernel_24's pick first (``kernel`` mode runs it), then torch's semi-structured path,
        cuBLAS on the dense weight and the Triton kernels (each once), named by CANDIDATES_24."""
        rule = self._auto_kernel(x) if x.is_cuda else "triton"
        paths = {
            rule: lambda: self._run_kernel(rule, x),
            "torch": lambda: nonfinite_rows_to_nan(x, self._torch_semi_structured(x)),
            "dense": lambda: self._dense_linear(x),
            "triton": lambda: self._run_kernel("triton", x),
        }
        return {CANDIDATES_24[name]: paths[name] for name in dict.fromkeys((rule, "torch", "dense", "triton"))}

    def _measured_matmul(self, x: torch.Tensor) -> torch.Tensor:
        check_sparse24_operands(x, self.values, self.bias, self.activation)  # the op's errors, before any candidate
        return self._run_measured(OP_24, x, self._measured_candidates(x))

    def _auto_kernel(self, x: torch.Tensor) -> str:
        """:func:`choose_kernel_24` for this CUDA input."""
        available, min_shape = _torch_semi_structured_shape(x.dtype)
        return choose_kernel_24(
            x.shape[0],
            x.dtype,
            torch.cuda.get_device_capability(x.device),
            self.in_features,
            self.out_features,
            torch_sparse=available,
            torch_min_shape=min_shape,
            cupy=_cupy_installed(),
        )

    def _kernels(self, x: torch.Tensor) -> tuple[str, ...]:
        """The kernels that take this input: mma.sp needs fp16/bf16 and K % 32 == 0 (an explicit
        ``backend="cuda"`` on other inputs gets sparse24_mm_sp's own argument error)."""
        if self.backend == "cuda" or (x.dtype in MMA_SP_DTYPES and self.in_features % 32 == 0):
            return KERNELS_24
        return ("triton", "torch")

    def _mma_meta(self) -> torch.Tensor:
        if self.meta_mma is None or self.meta_mma.device != self.meta.device:
            self.meta_mma = to_mma_sp_metadata(self.meta)
        return self.meta_mma

    def _torch_semi_structured(self, x: torch.Tensor) -> torch.Tensor:
        """torch's 2:4 path (cuSPARSELt, else CUTLASS); its operand is built from the canonical
        (values, meta) on first use per (device, dtype) and cached outside the state_dict."""
        key = (x.device, self.values.dtype)
        cached = self._torch_weights.get(key)
        if cached is None:
            from torch.sparse import to_sparse_semi_structured

            dense = decompress_24(self.values.detach(), self.meta).to(x.device).contiguous()
            cached = self._torch_weights[key] = to_sparse_semi_structured(dense)
        y = F.linear(x, cached, self.bias)
        return y if self.activation == "none" else activation_reference(y, self.activation)

    def invalidate_caches(self) -> None:
        """Drop the derived weights of the mma.sp / torch backends (call after editing values/meta)."""
        self.meta_mma = None
        self._torch_weights = {}
        self._drop_dense()

    def _apply(self, fn, recurse=True):
        self._torch_weights = {}
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Validate before copying (copy_ would cast a float meta, and a meta naming one column twice
        or a perm that is not a permutation would make the reference and the kernels disagree)."""
        n, k = self.out_features, self.in_features
        _check_loaded_floats(self, state_dict, prefix, {"values": (n, k // 2), "bias": (n,)})
        if prefix + "meta" in state_dict:
            check_meta_24(state_dict[prefix + "meta"], n, k, prefix + "meta")
        if state_dict.get(prefix + "perm") is not None:
            check_permutation(state_dict[prefix + "perm"], k, prefix + "perm")
        _adopt_incoming_shapes(self, state_dict, prefix, ("perm",), optional=True)
        self.invalidate_caches()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", permuted={self.perm is not None}, backend={self.backend}"


class _SRSTEMask(torch.autograd.Function):
    """forward: w ⊙ mask; backward: g + λ·(1 − mask) ⊙ w (SR-STE: the straight-through gradient
    plus a decay that pulls pruned weights towards zero)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, mask: torch.Tensor, decay: float) -> torch.Tensor:
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        return weight * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, mask = ctx.saved_tensors
        return grad + ctx.decay * (~mask) * weight, None, None


class MaskedSparseLinear(nn.Linear):
    """A dense Linear whose weight is used through a 2:4 mask: the model to fine-tune after pruning.

    Fixed mask (default): ``y = x @ (W ⊙ mask).T + b``; pruned weights start at zero and get zero
    gradients, so they stay zero under any optimizer. ``sr_ste=True``: the mask is recomputed from
    |W| every forward and W's gradient is ``g + sr_ste_lambda · (1 − mask) ⊙ W`` (g: gradient of
    the masked weight), letting the pattern change during training.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        sr_ste: bool = False,
        sr_ste_lambda: float = 2e-4,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        check_divisible(in_features, 4, "in_features")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.sr_ste, self.sr_ste_lambda = sr_ste, sr_ste_lambda
        self.register_buffer("mask", top2_mask(self.weight))

    def conversion_source(self) -> str:
        return "already 2:4-masked for fine-tuning (to_sparse_ compresses it)"

    @classmethod
    def from_dense(
        cls, linear: nn.Linear, mask: torch.Tensor | None = None, *, sr_ste: bool = False, sr_ste_lambda: float = 2e-4
    ) -> MaskedSparseLinear:
        weight = linear.weight.detach()
        layer = cls(
            weight.shape[1],
            weight.shape[0],
            bias=linear.bias is not None,
            sr_ste=sr_ste,
            sr_ste_lambda=sr_ste_lambda,
            device=weight.device,
            dtype=weight.dtype,
        )
        if mask is None:
            mask = prune_24(weight)
        _check_mask_24(mask, weight)
        with torch.no_grad():
            layer.mask.copy_(mask)
            layer.weight.copy_(weight if sr_ste else weight * mask)
            _copy_linear_bias(layer, linear)
        return layer

    def masked_weight(self) -> torch.Tensor:
        if not self.sr_ste:
            return self.weight * self.mask
        with torch.no_grad():
            self.mask.copy_(top2_mask(self.weight))
        return _SRSTEMask.apply(self.weight, self.mask, self.sr_ste_lambda)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)

    def to_sparse(self, *, activation: str = "none", backend: str = "auto") -> SparseLinear24:
        """The fast layer for inference, with the current mask."""
        mask = top2_mask(self.weight) if self.sr_ste else self.mask
        linear = dense_linear(self.weight.detach() * mask, None if self.bias is None else self.bias.detach())
        return SparseLinear24.from_dense(linear, mask=mask, activation=activation, backend=backend)

    def compressed_num_params(self) -> int:
        return int(self.mask.sum()) + (0 if self.bias is None else self.bias.numel())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", sr_ste={self.sr_ste}"


# ----------------------------------------------------------------------------- block-sparse


class BlockSparseLinear(_CompressedLinear):
    """``y = act(x @ W.T + bias)`` with W (N, K) stored as BSR blocks of ``block_size``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        block_size: int = 32,
        block_mask: torch.Tensor | None = None,
        activation: str = "none",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        """A zero weight with the structure ``block_mask`` ((N/bs, K/bs) bool; default: every block)."""
        check_block_size(block_size, out_features, in_features, "the weight")
        super().__init__(in_features, out_features, bias, activation, device, dtype)
        self.block_size = block_size
        grid = (out_features // block_size, in_features // block_size)
        if block_mask is None:
            block_mask = torch.ones(grid, dtype=torch.bool, device=device)
        check_tensor(block_mask, "block_mask", shape=grid, dtype=torch.bool)
        zeros = torch.zeros(out_features, in_features, device=device, dtype=dtype)
        crow, col, values = to_bsr(zeros, block_mask.to(zeros.device))
        self.register_buffer("crow_indices", crow)
        self.register_buffer("col_indices", col)
        self.values = nn.Parameter(values)

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        block_size: int = 32,
        density: float = 0.5,
        *,
        block_mask: torch.Tensor | None = None,
        activation: str = "none",
    ) -> BlockSparseLinear:
        """Keep the ``ceil(density · blocks)`` blocks of largest L2 norm (or ``block_mask``)."""
        weight = linear.weight.detach()
        check_tensor(weight, "linear.weight", ndim=2)
        if block_mask is None:
            block_mask = prune_blocks(weight, block_size, density)
        layer = cls(
            weight.shape[1],
            weight.shape[0],
            bias=linear.bias is not None,
            block_size=block_size,
            block_mask=block_mask,
            activation=activation,
            device=weight.device,
            dtype=weight.dtype,
        )
        _, _, values = to_bsr(weight, block_mask)
        with torch.no_grad():
            layer.values.copy_(values)
            _copy_linear_bias(layer, linear)
        return layer

    @property
    def density(self) -> float:
        blocks = (self.out_features // self.block_size) * (self.in_features // self.block_size)
        return self.values.shape[0] / blocks

    def to_dense(self) -> nn.Linear:
        weight = from_bsr(
            self.crow_indices, self.col_indices, self.values.detach(), self.out_features, self.in_features
        )
        return dense_linear(weight, None if self.bias is None else self.bias.detach())

    def _decoded_weight(self) -> torch.Tensor:
        return from_bsr(self.crow_indices, self.col_indices, self.values.detach(), self.out_features, self.in_features)

    def _measure_key(self, x: torch.Tensor) -> tuple:
        return (*super()._measure_key(x), self.block_size, self.values.shape[0])  # density decides too

    def _kernel(self, x: torch.Tensor) -> torch.Tensor:
        return bsr_mm(x, self.crow_indices, self.col_indices, self.values, self.bias, self.activation)

    def _torch_bsr(self, x: torch.Tensor) -> torch.Tensor:
        """The TORCH_BSR candidate: F.linear on a torch.sparse_bsr_tensor over the stored blocks (no copy)."""
        shape = (self.out_features, self.in_features)
        bias = None if self.bias is None else self.bias.detach()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "BSR support is in beta" (the structure is checked)
            weight = torch.sparse_bsr_tensor(
                self.crow_indices, self.col_indices, self.values.detach(), shape, check_invariants=False
            )
            y = F.linear(x, weight, bias)
        return self._torch_output(x, y)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        if not self._measures(x):
            return self._kernel(x)
        check_tensor(x, "x", dtype=self.values.dtype)  # the op's dtype error, before any candidate
        candidates = {"triton": lambda: self._kernel(x), TORCH_BSR: lambda: self._torch_bsr(x)}
        return self._run_measured(OP_BSR, x, {**candidates, TORCH_DENSE: lambda: self._dense_linear(x)})

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        bs, n = self.block_size, self.out_features
        for name in ("crow_indices", "col_indices"):  # checked before copy_ could cast them
            if prefix + name in state_dict:
                check_tensor(state_dict[prefix + name], prefix + name, ndim=1, dtype=torch.int32)
        _check_loaded_floats(self, state_dict, prefix, {"bias": (n,)})
        if prefix + "values" in state_dict:
            _check_loaded_floats(self, state_dict, prefix, {"values": (None, bs, bs)})
            nnz = state_dict[prefix + "values"].shape[0]
            cols = state_dict.get(prefix + "col_indices")
            if cols is not None and cols.shape[0] != nnz:
                raise ValueError(f"{prefix}col_indices: expected nnz={nnz} entries (as values), got {cols.shape[0]}")
        crow, col = state_dict.get(prefix + "crow_indices"), state_dict.get(prefix + "col_indices")
        if crow is not None and col is not None:  # before loading: a bad structure leaves the layer as it was
            check_bsr_structure(crow, col, n // bs, self.in_features // bs)
            described = self.__dict__.pop("_described_structure", None)  # built by build_layer: must agree
            if described is not None and not (
                torch.equal(crow.cpu(), described[0]) and torch.equal(col.cpu(), described[1])
            ):
                raise ValueError(
                    f"{prefix}col_indices: the stored block structure differs from the layer description's 'blocks'"
                )
        _adopt_incoming_shapes(self, state_dict, prefix, ("col_indices", "values"))
        self._drop_dense()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        check_bsr_structure(
            self.crow_indices,
            self.col_indices,
            self.out_features // self.block_size,
            self.in_features // self.block_size,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", block_size={self.block_size}, density={self.density:.3f}"


# ----------------------------------------------------------------------------- the compressed file

_DESCRIPTION_KEYS = {
    "SparseLinear24": ("in_features", "out_features", "bias", "activation", "permuted", "backend"),
    "BlockSparseLinear": ("in_features", "out_features", "bias", "block_size", "activation", "blocks"),
    "GemmConv2d": ("in_channels", "kernel_size", "stride", "padding", "dilation", "gemm"),
}


def describe_layer(layer: nn.Module) -> dict:
    """What :func:`build_layer` needs to recreate an empty :class:`SparseLinear24`,
    :class:`BlockSparseLinear` (``blocks``: each block row's column indices), or a GemmConv2d
    around one, of this shape (JSON-able)."""
    if isinstance(layer, GemmConv2d):
        return {
            "class": "GemmConv2d",
            "in_channels": layer.in_channels,
            "kernel_size": list(layer.kernel_size),
            "stride": list(layer.stride),
            "padding": list(layer.padding),
            "dilation": list(layer.dilation),
            "gemm": describe_layer(layer.gemm),
        }
    common = {"in_features": layer.in_features, "out_features": layer.out_features, "bias": layer.bias is not None}
    if isinstance(layer, SparseLinear24):
        return {
            "class": "SparseLinear24",
            **common,
            "activation": layer.activation,
            "permuted": layer.perm is not None,
            "backend": layer.backend,
        }
    if isinstance(layer, BlockSparseLinear):
        crow, cols = layer.crow_indices.tolist(), layer.col_indices.tolist()
        blocks = [cols[crow[r] : crow[r + 1]] for r in range(len(crow) - 1)]
        return {
            "class": "BlockSparseLinear",
            **common,
            "block_size": layer.block_size,
            "activation": layer.activation,
            "blocks": blocks,
        }
    raise TypeError(f"layer: expected a SparseLinear24, BlockSparseLinear or GemmConv2d around one, got {layer!r}")


def _description_options(description: object) -> tuple[str, dict]:
    if not isinstance(description, dict):
        raise ValueError(f"description: expected an object, got {type(description).__name__}")
    kind = description.get("class")
    if kind not in _DESCRIPTION_KEYS:
        raise ValueError(f"class: unknown sparse layer {kind!r}; known: {sorted(_DESCRIPTION_KEYS)}")
    options = {k: v for k, v in description.items() if k != "class"}
    expected = _DESCRIPTION_KEYS[kind]
    for key in expected:
        if key not in options:
            raise ValueError(f"{key}: missing from the {kind} description")
    for key in options:
        if key not in expected:
            raise ValueError(f"{key}: not a key of the {kind} description (expected {list(expected)})")
    for key in ("bias", "permuted"):
        if key in options and not isinstance(options[key], bool):
            raise ValueError(f"{key}: expected true or false, got {options[key]!r}")
    for key in ("in_features", "out_features", "in_channels", "block_size"):
        if key in options and (isinstance(options[key], bool) or not isinstance(options[key], int)):
            raise ValueError(f"{key}: expected an int, got {options[key]!r}")
    return kind, options


def _block_mask(blocks: object, block_size: int, out_features: int, in_features: int) -> torch.Tensor:
    """The (N/bs, K/bs) block mask of a description's ``blocks`` (checked: one strictly
    increasing list of in-range block columns per block row)."""
    check_block_size(block_size, out_features, in_features)
    rows, cols = out_features // block_size, in_features // block_size
    if not isinstance(blocks, list) or len(blocks) != rows:
        got = f"{len(blocks)} rows" if isinstance(blocks, list) else type(blocks).__name__
        raise ValueError(f"blocks: expected one list of block columns per block row ({rows}), got {got}")
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for r, row in enumerate(blocks):
        ok = isinstance(row, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in row)
        if not ok or any(c < 0 or c >= cols for c in row) or any(a >= b for a, b in itertools.pairwise(row)):
            raise ValueError(f"blocks[{r}]: expected strictly increasing block columns in [0, {cols}), got {row!r}")
        mask[r, row] = True
    return mask


def build_layer(description: dict, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
    """An empty (zero-filled) layer from :func:`describe_layer`'s output, of the same tensor
    shapes, ready for ``load_state_dict``. A bad description raises ValueError naming the key."""
    kind, options = _description_options(description)
    if kind == "GemmConv2d":
        gemm = build_layer(options.pop("gemm"), device, dtype)
        if isinstance(gemm, GemmConv2d):
            raise ValueError("gemm: expected a SparseLinear24 or BlockSparseLinear description, got a GemmConv2d")
        return GemmConv2d(gemm, **options)
    n, k, bias = options.pop("out_features"), options.pop("in_features"), options.pop("bias")
    if kind == "SparseLinear24":
        return SparseLinear24(k, n, bias, **options, device=device, dtype=dtype)
    mask = _block_mask(options.pop("blocks"), options["block_size"], n, k)
    layer = BlockSparseLinear(k, n, bias, block_mask=mask, **options, device=device, dtype=dtype)
    layer._described_structure = (layer.crow_indices.cpu(), layer.col_indices.cpu())  # checked at load
    return layer
