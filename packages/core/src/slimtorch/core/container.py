"""The compressed file, the project's one file format: one safetensors file, packed tensors plus a
JSON manifest; never pickle. Every package saves and loads through it::

    save_compressed(model, "model.slim.safetensors")            # float, pruned, quantized, structured
    model = load_compressed("model.slim.safetensors", float_model)   # rebuilds the compressed layers

Layout (format version 1). The safetensors metadata holds one string, ``slimtorch.compressed``:
64 hex digits, the sha256 of the rest (tampering with the manifest is caught), then the manifest,
JSON with sorted keys (one key, so the file's bytes do not depend on a map's order)::

    {"format_version": 1,
     "architecture": {"name": "lenet300_100", "kwargs": {...}} | null,   # how to rebuild the float model
     "layers": {fqn: {"format": "quant", "layer": {...}}},   # layers to rebuild (core.layer_formats)
     "tensors": {state_dict key: {"encoding": ..., "dtype": ..., "shape": [...], ...}},
     "checksums": {stored tensor name: sha256[:16] of its bytes},
     "extra": {...}}                            # free-form (the run's report, accuracy, ...)

Each state_dict entry is stored with one ``encoding``:

- ``"raw"``: the tensor itself, under its own key.
- ``"codes"``: a packed buffer that its layer's format turns into small integers
  (:class:`~slimtorch.core.layer_formats.Symbols`: a codebook layer's N·K indices, row-major),
  with the ``format`` and ``params`` that pack them again. When one index
  ``zero_code`` (a pruned weight's) fills at least half of them, as in the paper's sparse format:
  the positions of the other indices as relative gaps (below) in ``<key>:index_payload`` /
  ``:index_counts``, and their indices in ``<key>:payload`` / ``:counts``; else every index there.
- ``"int8"``: an int8 tensor's values + 128, entropy-coded the same way (alphabet 256).
- ``"sparse"``: a float tensor with at least half its entries exactly zero (a pruned weight): the
  nonzero positions as relative gaps, and the nonzero values in order in ``<key>:values``.

Relative gaps (Han et al. 2016 §2, with an escape instead of filler zeros): the k-th kept position
p_k is coded as g = p_k − p_{k−1} − 1 (p_0 = −1): ``g // 31`` escape symbols 31 ("31 more
skipped"), then ``g % 31``; alphabet 32. Streams are entropy-coded with the file's ``coder``
(:mod:`slimtorch.core.entropy`) as ``payload`` (uint8) + ``counts`` (int32) tensors.

Compressed layers: each package registers how its layers are described and rebuilt
(:mod:`slimtorch.core.layer_formats`); the manifest names the format of each, and loading imports
the installed packages to find it.

Loading checks, before anything is decoded: the safetensors header (8-byte length within the file,
at most :data:`MAX_HEADER_BYTES`, JSON, every tensor's byte range inside the file and equal to its
dtype x shape), the manifest's own checksum, then each stored tensor's checksum; a decoded stream
must produce exactly the manifest's element count (bounded by :data:`MAX_ELEMENTS`). Anything
wrong raises :class:`CorruptFileError` (a ``ValueError``) naming the file and what is wrong. Then
the layers are rebuilt and the state loaded strictly: each layer's ``load_state_dict`` checks every
stored tensor's dtype, shape and value range (naming its key), the error prefixed with the path.

The loaded model runs from the compressed form: codebook layers keep their indices and run
quant's codebook GEMM (``codebook_mm``), int4 layers the dequantising GEMM, block-circulant layers
their FFT kernels, and so on — decoding restores exactly the packed buffers that were saved.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from slimtorch.core import entropy
from slimtorch.core.layer_formats import Symbols, get_layer_format, stored_layers
from slimtorch.core.model_stats import state_dict_tensors
from slimtorch.core.modules import replace_submodule

FORMAT_VERSION = 1
MANIFEST_KEY = "slimtorch.compressed"
MAX_HEADER_BYTES = 16 << 20
MAX_ELEMENTS = 1 << 31
CODERS = ("ans", "huffman", "zstd", "raw")
SPARSE_MIN_ZEROS = 0.5
GAP_ALPHABET = 32
GAP_ESCAPE = GAP_ALPHABET - 1

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_DTYPE_NAMES = {v: str(v).removeprefix("torch.") for v in _DTYPES.values()}
_DTYPE_BY_NAME = {n: d for d, n in _DTYPE_NAMES.items()}


class CorruptFileError(ValueError):
    """A compressed file that is truncated, tampered with or not one of ours."""


def tensor_checksum(t: torch.Tensor) -> str:
    data = t.contiguous().reshape(-1).clone().view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return hashlib.sha256(data).hexdigest()[:16]


def compressed_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers the loader must rebuild (claimed by a registered layer format), by name."""
    return {name: module for name, (_fmt, module) in stored_layers(model).items()}


def _unsupported(model: nn.Module) -> str | None:
    """A module with buffers the loader could not rebuild (a masked layer, a foreign layer)."""
    rebuilt = compressed_layers(model)
    for name, module in model.named_modules():
        if any(name == p or name.startswith(f"{p}.") for p in rebuilt):
            continue
        if type(module).__name__.startswith("Parametrized"):
            return f"{name}: a masked (parametrized) layer; remove the masks first (slimtorch.compress.prune.finalize_)"
    return None


@dataclass
class SavedFile:
    """What :func:`save_compressed` wrote: the path, its size, and bytes per stored tensor."""

    path: Path
    file_bytes: int
    tensor_bytes: dict[str, int]
    coder: str


def _encode_stream(key: str, symbols: np.ndarray, alphabet: int, coder: str, stored: dict, prefix: str = "") -> dict:
    enc = entropy.encode(symbols, alphabet, coder)
    stored[f"{key}:{prefix}payload"] = torch.from_numpy(enc.payload.copy())
    stored[f"{key}:{prefix}counts"] = torch.from_numpy(enc.counts.astype(np.int32).copy())
    return {f"{prefix}coder": coder, f"{prefix}symbols": enc.num_symbols, f"{prefix}alphabet": alphabet}


def positions_to_gaps(positions: np.ndarray) -> np.ndarray:
    """Increasing positions -> relative gap symbols in [0, GAP_ALPHABET) (module docstring)."""
    gaps = np.diff(np.concatenate([[-1], positions.astype(np.int64)])) - 1
    escapes, rest = gaps // GAP_ESCAPE, gaps % GAP_ESCAPE
    ends = np.cumsum(escapes + 1) - 1
    out = np.full(int(ends[-1]) + 1 if len(ends) else 0, GAP_ESCAPE, np.int32)
    out[ends] = rest
    return out


def gaps_to_positions(symbols: np.ndarray, total: int) -> np.ndarray:
    """Inverse of :func:`positions_to_gaps`; rejects streams that end in an escape or pass ``total``."""
    symbols = symbols.astype(np.int64)
    if symbols.size and symbols[-1] == GAP_ESCAPE:
        raise ValueError("the gap stream ends in an escape")
    kept = symbols != GAP_ESCAPE
    positions = np.cumsum(symbols + kept)[kept] - 1
    if positions.size and positions[-1] >= total:
        raise ValueError(f"a gap points past the tensor's {total} elements")
    return positions


def _is_sparse(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.numel() >= 64 and (t == 0).float().mean().item() >= SPARSE_MIN_ZEROS


def _symbol_views(layers: dict) -> dict[str, tuple[str, Symbols]]:
    """{state_dict key: (format name, Symbols)} for every buffer a layer's format stores as symbols."""
    out: dict[str, tuple[str, Symbols]] = {}
    for name, (fmt, layer) in layers.items():
        if fmt.to_symbols is None:
            continue
        for sub_name, sub in layer.named_modules():
            for buf_name, buf in sub.named_buffers(recurse=False):
                symbols = fmt.to_symbols(sub, buf_name, buf.detach().cpu())
                if symbols is not None:
                    key = ".".join(p for p in (name, sub_name, buf_name) if p)
                    out[key] = (fmt.name, symbols)
    return out


def save_compressed(
    model: nn.Module,
    path: str | Path,
    *,
    coder: str = "ans",
    architecture: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> SavedFile:
    """Write ``model`` (float, pruned, quantized or a mix) as a compressed file (module docstring).

    ``coder``: "ans" | "huffman" | "zstd" entropy-codes codebook indices, int8 values and sparse
    masks; "raw" stores every tensor as it is. ``architecture`` ({"name", "kwargs"}) lets
    :func:`load_model` rebuild the float model without being handed one.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if coder not in CODERS:
        raise ValueError(f"coder: expected one of {CODERS}, got {coder!r}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"path: {path} exists; pass overwrite=True to replace it")
    problem = _unsupported(model)
    if problem is not None:
        raise ValueError(f"model: {problem}")
    found = stored_layers(model)
    layers = {n: {"format": fmt.name, "layer": fmt.describe(m)} for n, (fmt, m) in found.items()}
    symbol_views = _symbol_views(found) if coder != "raw" else {}
    stored: dict[str, torch.Tensor] = {}
    tensors: dict[str, dict] = {}
    for key, t in state_dict_tensors(model).items():
        t = t.detach().cpu().contiguous()
        info: dict[str, Any] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "encoding": "raw"}
        if key in symbol_views:
            fmt_name, symbols = symbol_views[key]
            codes = np.asarray(symbols.values).reshape(-1).astype(np.int64)
            info.update(encoding="codes", format=fmt_name, params=symbols.params)
            zero = int(np.bincount(codes).argmax()) if codes.size else 0
            if codes.size and (codes == zero).mean() >= SPARSE_MIN_ZEROS:
                kept = np.flatnonzero(codes != zero)
                info.update(zero_code=zero, elements=int(codes.size))
                info.update(_encode_stream(key, positions_to_gaps(kept), GAP_ALPHABET, coder, stored, "index_"))
                codes = codes[kept]
            info.update(_encode_stream(key, codes, int(symbols.alphabet), coder, stored))
        elif coder != "raw" and t.dtype == torch.int8 and t.numel():
            info.update(encoding="int8")
            info.update(_encode_stream(key, t.numpy().astype(np.int32).reshape(-1) + 128, 256, coder, stored))
        elif coder != "raw" and _is_sparse(t):
            kept = np.flatnonzero((t != 0).reshape(-1).numpy())
            info.update(encoding="sparse")
            info.update(_encode_stream(key, positions_to_gaps(kept), GAP_ALPHABET, coder, stored, "index_"))
            stored[f"{key}:values"] = t.reshape(-1)[torch.from_numpy(kept)].clone()
        else:
            stored[key] = t
        tensors[key] = info
    manifest = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "layers": layers,
        "tensors": tensors,
        "checksums": {name: tensor_checksum(t) for name, t in sorted(stored.items())},
        "extra": extra or {},
    }
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    metadata = {MANIFEST_KEY: hashlib.sha256(text.encode()).hexdigest() + text}
    tmp = path.with_name(path.name + ".tmp")
    safetensors.torch.save_file(stored, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    sizes = {name: t.numel() * t.element_size() for name, t in stored.items()}
    return SavedFile(path, path.stat().st_size, sizes, coder)


# ----------------------------------------------------------------------------- loading


def _read_header(path: Path) -> dict:
    """The safetensors header, validated against the file's size before safetensors reads it."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptFileError(f"path: {path}: {size} bytes, too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise CorruptFileError(
                    f"path: {path}: header length {n} does not fit a file of {size} bytes (truncated?)"
                )
            raw = f.read(n)
    except OSError as err:
        raise CorruptFileError(f"path: {path}: cannot read: {err}") from err
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptFileError(f"path: {path}: header is not JSON: {err}") from err
    if not isinstance(header, dict):
        raise CorruptFileError(f"path: {path}: header is not a JSON object")
    data_bytes = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = _DTYPES[entry["dtype"]], entry["shape"], entry["data_offsets"]
            count = math.prod(int(s) for s in shape)
            ok = all(int(s) >= 0 for s in shape) and 0 <= start <= end <= data_bytes
            ok = ok and end - start == count * torch.empty(0, dtype=dtype).element_size()
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptFileError(f"path: {path}: tensor {name!r} has a malformed header entry: {err!r}") from err
        if not ok:
            raise CorruptFileError(f"path: {path}: tensor {name!r} lies outside the file or disagrees with its shape")
    return header


def read_manifest(path: str | Path) -> dict:
    """The manifest of a compressed file, its checksum verified."""
    path = Path(path)
    header = _read_header(path)
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or MANIFEST_KEY not in metadata:
        raise CorruptFileError(f"path: {path}: no {MANIFEST_KEY!r} manifest; not a slimtorch compressed file")
    value = metadata[MANIFEST_KEY]
    digest, text = (value[:64], value[64:]) if isinstance(value, str) else ("", "")
    if hashlib.sha256(text.encode()).hexdigest() != digest:
        raise CorruptFileError(f"path: {path}: the manifest's checksum does not match (tampered or corrupt)")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"path: {path}: the manifest is not JSON: {err}") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise CorruptFileError(f"path: {path}: format_version {version!r}, expected {FORMAT_VERSION}")
    return manifest


def _stream(path: Path, key: str, info: dict, stored: dict, prefix: str = "") -> np.ndarray:
    try:
        enc = entropy.Encoded(
            info[f"{prefix}coder"],
            stored[f"{key}:{prefix}payload"].numpy(),
            stored[f"{key}:{prefix}counts"].numpy(),
            int(info[f"{prefix}symbols"]),
            int(info[f"{prefix}alphabet"]),
        )
        if not 0 <= enc.num_symbols <= MAX_ELEMENTS:
            raise ValueError(f"{enc.num_symbols} symbols is more than {MAX_ELEMENTS}")
        return entropy.decode(enc)
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptFileError(f"path: {path}: tensor {key!r} does not decode: {err}") from err


def _positions(path: Path, key: str, info: dict, stored: dict, total: int) -> np.ndarray:
    try:
        return gaps_to_positions(_stream(path, key, info, stored, prefix="index_"), total)
    except ValueError as err:
        raise CorruptFileError(f"path: {path}: tensor {key!r}: {err}") from err


def _scatter(path: Path, key: str, info: dict, stored: dict, values: np.ndarray, total: int, fill: int) -> np.ndarray:
    if not 0 <= total <= MAX_ELEMENTS:
        raise CorruptFileError(f"path: {path}: tensor {key!r}: {total} elements")
    positions = _positions(path, key, info, stored, total)
    if positions.size != values.size:
        raise CorruptFileError(f"path: {path}: tensor {key!r}: {positions.size} positions for {values.size} codes")
    out = np.full(total, fill, np.int32)
    out[positions] = values
    return out


def _decode_tensor(path: Path, key: str, info: dict, stored: dict) -> torch.Tensor:
    dtype, shape = _DTYPE_BY_NAME[info["dtype"]], [int(s) for s in info["shape"]]
    count = math.prod(shape)
    encoding = info["encoding"]
    if encoding == "raw":
        t = stored[key]
    elif encoding == "codes":
        codes = _stream(path, key, info, stored)
        if "zero_code" in info:
            codes = _scatter(path, key, info, stored, codes, int(info["elements"]), int(info["zero_code"]))
        try:
            fmt = get_layer_format(info["format"])
            t = fmt.from_symbols(codes, dict(info["params"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CorruptFileError(f"path: {path}: tensor {key!r}: its codes do not pack: {err}") from err
    elif encoding == "int8":
        values = _stream(path, key, info, stored)
        t = torch.from_numpy((values - 128).astype(np.int8))
    elif encoding == "sparse":
        values = stored[f"{key}:values"]
        positions = _positions(path, key, info, stored, count)
        if positions.size != values.numel():
            raise CorruptFileError(
                f"path: {path}: tensor {key!r}: {positions.size} positions for {values.numel()} values"
            )
        t = torch.zeros(count, dtype=values.dtype)
        t[torch.from_numpy(positions)] = values
    else:
        raise CorruptFileError(f"path: {path}: tensor {key!r} has unknown encoding {encoding!r}")
    if t.dtype != dtype or t.numel() != count:
        raise CorruptFileError(
            f"path: {path}: tensor {key!r} decodes to {t.dtype} x {t.numel()}, manifest says {dtype} x {count}"
        )
    return t.reshape(shape)


def load_state(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(manifest, state_dict) of a compressed file: every check of the module docstring, every
    stream decoded back to the exact tensors that were saved."""
    path = Path(path)
    manifest = read_manifest(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            names = set(f.keys())
            checksums = manifest["checksums"]
            if names != set(checksums):
                raise CorruptFileError(
                    f"path: {path}: stored tensors {sorted(names ^ set(checksums))} disagree with the manifest"
                )
            stored = {name: f.get_tensor(name) for name in sorted(names)}
    except safetensors.SafetensorError as err:
        raise CorruptFileError(f"path: {path}: not a readable safetensors file: {err}") from err
    for name, t in stored.items():
        if tensor_checksum(t) != checksums[name]:
            raise CorruptFileError(f"path: {path}: tensor {name!r} fails its checksum (tampered or corrupt)")
    try:
        state = {key: _decode_tensor(path, key, info, stored) for key, info in manifest["tensors"].items()}
    except (KeyError, TypeError) as err:
        raise CorruptFileError(f"path: {path}: manifest entry missing or malformed: {err!r}") from err
    return manifest, state


def _resize_plain_layers(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Plain Linear / Conv2d / BatchNorm2d layers whose saved weight has another shape (channels
    removed by structured pruning) are rebuilt with the saved shape (same options otherwise)."""
    for name, module in list(model.named_modules()):
        w = state.get(f"{name}.weight" if name else "weight")
        kind = type(module)
        if w is None or kind not in (nn.Linear, nn.Conv2d, nn.BatchNorm2d) or module.weight.shape == w.shape:
            continue
        bias = getattr(module, "bias", None) is not None
        if kind is nn.Linear:
            new: nn.Module = nn.Linear(w.shape[1], w.shape[0], bias=bias)
        elif kind is nn.Conv2d:
            groups = 1 if module.groups == 1 else w.shape[0] // max(1, module.out_channels // module.groups)
            new = nn.Conv2d(
                w.shape[1] * groups,
                w.shape[0],
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                groups,
                bias,
            )
        else:
            new = nn.BatchNorm2d(w.shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
        model = replace_submodule(model, name, new.to(module.weight.device))
    return model


def _rebuild_layers(path: Path, model: nn.Module, layers: Any) -> nn.Module:
    """Replace each named module by an empty layer of the manifest's format and description."""
    if not isinstance(layers, dict):
        raise CorruptFileError(f"path: {path}: manifest 'layers': expected an object, got {type(layers).__name__}")
    for name, entry in layers.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("format"), str) or "layer" not in entry:
            raise CorruptFileError(
                f"path: {path}: manifest 'layers'[{name!r}]: expected {{'format': ..., 'layer': {{...}}}}, "
                f"got {entry!r}"
            )
        try:
            target = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"path: {path}: the file has a layer {name!r} that the model does not have") from None
        try:
            fmt = get_layer_format(entry["format"])
        except KeyError as err:
            raise ValueError(f"path: {path}: layer {name!r}: {err.args[0]}") from None
        like = next(iter(target.parameters()), next(iter(target.buffers()), torch.empty(0)))
        dtype = like.dtype if like.is_floating_point() else None
        try:
            layer = fmt.build(dict(entry["layer"]), like.device, dtype)
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"path: {path}: layer {name!r} cannot be built ({err}): {entry['layer']}") from None
        model = replace_submodule(model, name, layer)
    return model


def load_compressed(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a compressed file into ``model``, the float architecture it was compressed from: the
    compressed layers are rebuilt at their names (each by its package's registered
    :class:`~slimtorch.core.layer_formats.LayerFormat`), then every tensor is loaded (strict, each
    layer checking its stored tensors' dtype, shape and range). Returns the model in eval mode (a
    new object only when the root itself was rebuilt). Errors name the path (and the key)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    manifest, state = load_state(path)
    model = _rebuild_layers(path, model, manifest.get("layers") or {})
    model = _resize_plain_layers(model, state)
    device = next(iter(model.parameters()), next(iter(model.buffers()), torch.empty(0))).device
    try:
        model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    except RuntimeError as err:  # missing / unexpected keys, shapes of plain layers
        raise ValueError(f"path: {path}: does not fit this architecture: {str(err)[:300]}") from None
    except (ValueError, TypeError) as err:  # a layer's check of a stored tensor (names the key)
        raise type(err)(f"path: {path}: {err}") from None
    return model.eval()


def load_model(path: str | Path, builders: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild the float architecture named in the manifest (``builders[name](**kwargs)`` when
    ``builders`` has the name, else a timm / zoo model name) and load the file into it."""
    path = Path(path)
    manifest = read_manifest(path)
    arch = manifest.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise ValueError(f"path: {path}: names no architecture; use load_compressed(path, model)")
    name, kwargs = arch["name"], arch.get("kwargs") or {}
    if builders and name in builders:
        model = builders[name](**kwargs)
    else:
        try:
            import timm
        except ImportError as err:
            raise ValueError(f"path: {path}: architecture {name!r} is not one of {sorted(builders or {})}") from err
        from slimtorch.core.registry import import_all_packages

        import_all_packages()
        try:
            model = timm.create_model(name, pretrained=False, **kwargs)
        except RuntimeError as err:
            raise ValueError(f"path: {path}: architecture {name!r}: {err}") from None
    return load_compressed(path, model)


def file_bytes_by_coder(model: nn.Module, directory: str | Path, coders=CODERS) -> dict[str, int]:
    """Bytes on disk of ``model``'s compressed file with each coder (written under ``directory``)."""
    out = {}
    for coder in coders:
        saved = save_compressed(model, Path(directory) / f"probe-{coder}.slim.safetensors", coder=coder, overwrite=True)
        out[coder] = saved.file_bytes
        saved.path.unlink()
    return out
