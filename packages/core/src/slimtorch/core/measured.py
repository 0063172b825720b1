"""Dispatch by measurement: per shape bucket, our kernel or torch's best path, whichever is faster here.

An op with a torch alternative (cuBLAS ``F.linear``, ``torch._int_mm``, ``torch._weight_int4pack_mm``,
cuSPARSELt, cuDNN) calls :func:`run` on CUDA tensors with its candidates, our kernel first::

    key = measured.gemm_key(x, n, k)          # (m_bucket(M), N, K, x's dtype)
    return measured.run("slimtorch::w8a8_linear", key, {
        "triton": lambda: launch_kernel(...),
        "torch._int_mm": lambda: int_mm_path(...),
    }, x)

The first call of an (op, device, key) times every candidate with ``triton.testing.do_bench``
medians (the L2 flushed between repetitions) on the call's own inputs, keeps the fastest, and
caches the choice; later calls of the same bucket run the choice directly (one dict lookup). A
candidate that raises (torch's path does not exist for this shape, dtype or GPU; our kernel fails
to compile), returns a tensor of another shape/dtype than the kernel's, or numbers that differ from
the kernel's by more than ``AGREEMENT`` (a torch operand laid out wrong) is never chosen; ties go to
the earlier candidate (ours). The batch enters the key bucketed (``core.gemm.m_bucket``, as in the
autotune keys), N and K exactly.

``SLIMTORCH_DISPATCH`` (parsed once, like ``SLIMTORCH_BACKEND``; :func:`use_dispatch` overrides it
in a block) makes the choice deterministic:

- ``measure`` (default): as above;
- ``kernel``: always our kernel (also whenever ``SLIMTORCH_BACKEND`` is ``triton`` or ``cuda``: an
  explicit preference for our kernels is honoured);
- ``torch``: torch's first candidate that runs (our kernel when none does); also under
  ``SLIMTORCH_BACKEND=torch``.

Nothing is measured on CPU tensors (the reference is the CPU path; in the interpreter the kernel
runs), on fake tensors (``torch.compile`` tracing, the static SASS report's capture), or while a
CUDA graph is being captured (a cached choice is used, else the kernel).

Cache: in memory, and a JSON file ``$SLIMTORCH_CACHE_DIR`` (default ``~/.cache/slimtorch``)
``/dispatch-<device>-torch<version>-triton<version>.json`` read at first use and rewritten after
each new measurement (``SLIMTORCH_DISPATCH_CACHE=0``: memory only), so a second process does not
measure again. ``slimtorch info`` shows the mode, the file and every cached choice (:func:`describe`).
The timer is injectable (:class:`Measurer`, :func:`use_measurer`) so the choice logic is tested
without a GPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from slimtorch.core.checks import is_fake
from slimtorch.core.dispatch import KERNEL_BACKENDS, preferred_backend
from slimtorch.core.metrics import rel_error

Mode = Literal["measure", "kernel", "torch"]
MODES: tuple[str, ...] = ("measure", "kernel", "torch")
DISPATCH_ENV = "SLIMTORCH_DISPATCH"
CACHE_ENV = "SLIMTORCH_DISPATCH_CACHE"
WARMUP_MS = 10.0  # do_bench warm-up and measuring time per candidate, first call of a bucket only
REP_MS = 40.0
FILE_VERSION = 1

_settings: dict[str, str | None] = {"env": None, "override": None}


def reload_env() -> str:
    """Parse ``SLIMTORCH_DISPATCH`` (done once, at first use; call again after changing it)."""
    value = os.environ.get(DISPATCH_ENV, "").strip().lower() or "measure"
    if value not in MODES:
        raise ValueError(f"{DISPATCH_ENV}: expected one of {MODES}, got {value!r}")
    _settings["env"] = value
    return value


def dispatch_mode() -> str:
    """The innermost :func:`use_dispatch` block, else ``kernel`` under an explicit ``triton`` / ``cuda``
    ``SLIMTORCH_BACKEND`` preference (``torch`` under ``torch``), else ``SLIMTORCH_DISPATCH``."""
    if _settings["override"] is not None:
        return _settings["override"]
    preferred = preferred_backend()
    if preferred in KERNEL_BACKENDS:  # an explicit SLIMTORCH_BACKEND: torch's path, or our kernels
        return "torch" if preferred == "torch" else "kernel"
    return _settings["env"] if _settings["env"] is not None else reload_env()


@contextlib.contextmanager
def use_dispatch(mode: Mode) -> Iterator[None]:
    """Use ``mode`` ("measure", "kernel" or "torch") for every measured op inside this block."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    previous = _settings["override"]
    _settings["override"] = mode
    try:
        yield
    finally:
        _settings["override"] = previous


DECODE_LINEAR = "torch dequant+F.linear"  # the candidate name of :func:`decode_linear`


def decode_linear(
    x: torch.Tensor, decode: Callable[[torch.dtype], torch.Tensor], bias: torch.Tensor | None
) -> Callable[[], torch.Tensor]:
    """torch's path for a weight stored in one of our formats: ``decode(x.dtype)`` gives the (N, K)
    weight, then cuBLAS ``F.linear`` (+ bias in x's dtype). The candidate every weight-only op has."""

    def run() -> torch.Tensor:
        return torch.nn.functional.linear(x, decode(x.dtype), None if bias is None else bias.to(x.dtype))

    return run


def gemm_key(x: torch.Tensor, n: int, k: int) -> tuple:
    """The shape bucket of a GEMM x (M, K) · W(N, K)ᵀ: (m_bucket(M), N, K, x's dtype)."""
    from slimtorch.core.gemm import m_bucket

    return (m_bucket(x.shape[0]), int(n), int(k), str(x.dtype).removeprefix("torch."))


@dataclass
class Choice:
    """One bucket's decision: the chosen candidate, each candidate's median ms (None: it raised),
    the errors, and how it was decided: "measured" (also when read from the cache file) or "torch"."""

    choice: str
    times_ms: dict[str, float | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    how: str = "measured"


def do_bench_median(fn: Callable[[], object]) -> float:
    """The default timer: ``triton.testing.do_bench`` median in ms (CUDA only)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=WARMUP_MS, rep=REP_MS, return_mode="median"))


def _device_tag(device: torch.device) -> str:
    from slimtorch.core.bench import device_name, device_slug

    return device_slug(device_name(device))


def default_cache_path(device: torch.device | str) -> Path | None:
    """Where choices for ``device`` persist (None when ``SLIMTORCH_DISPATCH_CACHE=0``)."""
    if os.environ.get(CACHE_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # pragma: no cover - triton ships with every GPU install
        triton_version = "none"
    root = Path(os.environ.get("SLIMTORCH_CACHE_DIR") or Path.home() / ".cache" / "slimtorch")
    tag = _device_tag(torch.device(device))
    return root / f"dispatch-{tag}-torch{torch.__version__}-triton{triton_version}.json"


def on_real_cuda(t: object) -> bool:
    """The default test of whether a call may be measured: a CUDA tensor with data."""
    return isinstance(t, torch.Tensor) and t.is_cuda and not is_fake(t)


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class Measurer:
    """The choice cache and the timer. ``timer(fn) -> median ms``; ``cache_path(device) -> Path | None``
    (None: memory only); ``device_tag(device) -> str`` (the device part of the in-memory key);
    ``measurable(like) -> bool`` (tests without a GPU pass ``lambda t: True``)."""

    def __init__(
        self,
        timer: Callable[[Callable[[], object]], float] = do_bench_median,
        cache_path: Callable[[torch.device], Path | None] | None = default_cache_path,
        device_tag: Callable[[torch.device], str] = _device_tag,
        measurable: Callable[[object], bool] = on_real_cuda,
    ):
        self.timer = timer
        self.cache_path = cache_path or (lambda device: None)
        self.device_tag = device_tag
        self.measurable = measurable
        # (op, device tag, key, "measured" | "torch") -> Choice
        self.choices: dict[tuple[str, str, str, str], Choice] = {}
        self._loaded: set[str] = set()
        self._lock = threading.Lock()

    # --- the decision
    def run(self, op: str, key: tuple, candidates: Mapping[str, Callable[[], Any]], like: torch.Tensor) -> Any:
        """Run the candidate chosen for (op, key) on ``like``'s device (module doc)."""
        names = list(candidates)
        if not names:
            raise ValueError(f"candidates: {op} needs at least one (its kernel first), got none")
        kernel = names[0]
        if not self.measurable(like):
            return candidates[kernel]()
        mode = dispatch_mode()
        if mode == "kernel" or len(names) == 1:
            return candidates[kernel]()
        device = like.device
        slot = self._slot(op, key, device, mode)
        self._load(device)
        found = self.choices.get(slot)
        if found is not None and found.choice in candidates:
            return candidates[found.choice]()
        if _capturing():
            return candidates[kernel]()
        choice, outputs = self._decide(mode, candidates)
        with self._lock:
            self.choices[slot] = choice
        if choice.how == "measured":
            self._save(device)
        return outputs[choice.choice]  # the chosen candidate's trial call on these inputs

    def chosen(self, op: str, key: tuple, like: torch.Tensor) -> str | None:
        """The candidate :meth:`run` takes for (op, key) on ``like``'s device now: the cached choice of
        the current mode, None when nothing is decided (not measured yet, ``kernel`` mode, a CPU or
        fake tensor). Layers use it to keep a derived operand (a dense copy) only while it is chosen."""
        mode = dispatch_mode()
        if mode == "kernel" or not self.measurable(like):
            return None
        found = self.choices.get(self._slot(op, key, like.device, mode))
        return None if found is None else found.choice

    def _slot(self, op: str, key: tuple, device: torch.device, mode: str) -> tuple:
        """The cache slot of (op, key) on ``device`` under ``mode`` (measured choices persist in the file)."""
        return (op, self.device_tag(device), _key_string(key), "measured" if mode == "measure" else mode)

    def _decide(self, mode: str, candidates: Mapping[str, Callable[[], Any]]) -> tuple[Choice, dict[str, Any]]:
        """Call each candidate once (a raising one, or one whose output differs in shape/dtype from the
        first that ran, is out), then time those left (measure) or take torch's first (torch)."""
        names = list(candidates)
        errors: dict[str, str] = {}
        expected: tuple | None = None
        ok: list[str] = []
        outputs: dict[str, Any] = {}
        order = names if mode == "measure" else [*names[1:], names[0]]  # torch: torch's first
        for name in order:
            try:
                out = candidates[name]()
                signature = _signature(out)
                if expected is None:
                    expected = signature
                elif signature != expected:
                    raise TypeError(f"returned {signature}, expected {expected} like the other candidates")
                elif mode == "measure":
                    _check_agreement(out, outputs[ok[0]], ok[0])
            except Exception as err:  # a path that does not exist here (or computes something else) is never chosen
                errors[name] = f"{type(err).__name__}: {str(err)[:200]}"
                continue
            ok.append(name)
            outputs[name] = out
            if mode == "torch":
                return Choice(name, {}, errors, how="torch"), outputs
        if not ok:
            raise RuntimeError(f"every candidate failed: {errors}")
        times: dict[str, float | None] = dict.fromkeys(names)
        for name in ok:
            try:
                times[name] = float(self.timer(candidates[name]))
            except Exception as err:
                errors[name] = f"{type(err).__name__}: {str(err)[:200]}"
        timed = [name for name in ok if times[name] is not None and math.isfinite(times[name])]
        if not timed:
            raise RuntimeError(f"no candidate could be timed: {errors}")
        best = min(timed, key=lambda name: (times[name], names.index(name)))  # ties: the earlier (ours)
        return Choice(best, times, errors, how="measured"), outputs

    # --- the file
    def _load(self, device: torch.device) -> None:
        path = self.cache_path(device)
        if path is None or str(path) in self._loaded:
            return
        self._loaded.add(str(path))
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # no file yet, or an unreadable one: measure again (and rewrite it)
        if not isinstance(payload, dict) or payload.get("version") != FILE_VERSION:
            return
        tag = self.device_tag(device)
        for entry in payload.get("entries", []):
            try:
                slot = (str(entry["op"]), tag, str(entry["key"]), "measured")
                times = {str(k): (None if v is None else float(v)) for k, v in dict(entry.get("times_ms", {})).items()}
                errors = {str(k): str(v) for k, v in dict(entry.get("errors", {})).items()}
                self.choices.setdefault(slot, Choice(str(entry["choice"]), times, errors, how="measured"))
            except (KeyError, TypeError, ValueError):
                continue  # a malformed entry is measured again

    def _save(self, device: torch.device) -> None:
        path = self.cache_path(device)
        if path is None:
            return
        tag = self.device_tag(device)
        entries = [
            {"op": op, "key": key, "choice": c.choice, "times_ms": c.times_ms, "errors": c.errors}
            for (op, dev, key, how), c in sorted(self.choices.items())
            if dev == tag and how == "measured"
        ]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": FILE_VERSION, "device": tag, "entries": entries}, indent=1))
            tmp.replace(path)
        except OSError:
            pass  # a read-only home: the choices stay in memory

    def describe(self) -> list[str]:
        """One line per cached choice: op, device, key, choice, the medians."""
        lines = []
        for (op, dev, key, _), c in sorted(self.choices.items()):
            times = ", ".join(f"{n} {'-' if t is None else f'{t:.4f} ms'}" for n, t in c.times_ms.items())
            lines.append(f"{op} [{dev}] {key}: {c.choice} ({c.how}{'; ' + times if times else ''})")
        return lines


# A candidate whose output differs from the first candidate's (ours) by more than this (‖a − b‖/‖b‖ over
# the entries finite in both, and the same non-finite entries) computes something else: a torch path
# whose operand layout we got wrong, say. Loose enough for another accumulation order and fp16/bf16
# roundings of the weights (~1e-3), tight enough for any layout or indexing error (~1).
AGREEMENT = 0.05


def _check_agreement(out: Any, first: Any, first_name: str) -> None:
    """Raise ValueError when ``out`` does not compute what ``first`` does (see AGREEMENT)."""
    if isinstance(out, (tuple, list)):
        for a, b in zip(out, first, strict=True):
            _check_agreement(a, b, first_name)
        return
    finite = out.isfinite()
    if not torch.equal(finite, first.isfinite()):
        raise ValueError(f"non-finite entries differ from {first_name}'s")
    diff = rel_error(out[finite], first[finite])
    if not diff <= AGREEMENT:
        raise ValueError(f"relative difference {diff:.3g} from {first_name}'s output (> {AGREEMENT})")


def _key_string(key: tuple) -> str:
    return ",".join(str(part) for part in key)


def _signature(out: Any) -> tuple:
    if isinstance(out, torch.Tensor):
        return (tuple(out.shape), out.dtype)
    if isinstance(out, (tuple, list)):
        return tuple(_signature(o) for o in out)
    raise TypeError(f"expected a tensor (or a tuple of tensors), got {type(out).__name__}")


_measurer = [Measurer()]


def measurer() -> Measurer:
    """The process's :class:`Measurer` (what :func:`run` and :func:`describe` use)."""
    return _measurer[0]


@contextlib.contextmanager
def use_measurer(m: Measurer) -> Iterator[Measurer]:
    """Route :func:`run` through ``m`` inside this block (tests inject fake timers this way)."""
    previous = _measurer[0]
    _measurer[0] = m
    try:
        yield m
    finally:
        _measurer[0] = previous


def run(op: str, key: tuple, candidates: Mapping[str, Callable[[], Any]], like: torch.Tensor) -> Any:
    """:meth:`Measurer.run` of the process's measurer."""
    return _measurer[0].run(op, key, candidates, like)


def chosen(op: str, key: tuple, like: torch.Tensor) -> str | None:
    """:meth:`Measurer.chosen` of the process's measurer."""
    return _measurer[0].chosen(op, key, like)


def describe() -> list[str]:
    """What ``slimtorch info`` prints: the mode, the cache file and every cached choice."""
    mode = dispatch_mode()
    lines = [f"dispatch by measurement: {mode} ({DISPATCH_ENV}=measure|kernel|torch; measure on CUDA only)"]
    if torch.cuda.is_available():
        device = torch.device("cuda")
        path = measurer().cache_path(device)
        measurer()._load(device)
        lines.append(f"dispatch cache: {path if path is not None else 'memory only'}")
    lines.extend(f"  {line}" for line in measurer().describe())
    return lines
