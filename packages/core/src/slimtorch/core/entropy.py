"""Entropy coding of integer symbol streams (Deep Compression's last stage), through well-kept coders.

A stream of ``n`` symbols in ``[0, A)`` (codebook indices, say) is coded with one of:

- ``"huffman"``: a static Huffman code built from the stream's symbol counts (Han et al. 2016
  §4: "Huffman coding"), constriction's ``symbol.huffman`` trees and ``QueueEncoder``.
  Costs ``sum_s c_s · len(code_s)`` bits, within 1 bit per symbol of the entropy.
- ``"ans"``: range Asymmetric Numeral Systems with the stream's empirical distribution,
  constriction's ``stream.stack.AnsCoder`` and ``Categorical`` model (24-bit probabilities):
  within a fraction of a percent of ``n · H`` bits for long streams, even below 1 bit/symbol.
- ``"zstd"``: the symbols as bytes through Zstandard (``zstandard``), the general fallback.
- ``"raw"``: the symbols as one byte each (A <= 256), for comparison.

Both model-based coders need the counts at decode time; they travel with the stream (``counts``,
``A`` int32 values) and the decoder rebuilds the identical model from them. ``Encoded.nbytes`` is
the whole cost: payload plus the counts table.

The entropy bound: ``entropy_bits(symbols) = -sum_s c_s log2(c_s / n)``.

The coders are the optional ``[entropy]`` extra of slimtorch-core (``constriction``, ``zstandard``;
slimtorch-compress installs it): a coder asked for without its library raises ``ImportError``
naming the extra. ``"raw"`` needs neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

METHODS = ("huffman", "ans", "zstd", "raw")
MAX_ALPHABET = 1 << 16
ZSTD_LEVEL = 19


@dataclass(frozen=True)
class Encoded:
    """An entropy-coded stream: ``payload`` uint8 bytes, ``counts`` the per-symbol counts (int32,
    empty for zstd/raw), ``num_symbols`` n and ``alphabet`` A."""

    method: str
    payload: np.ndarray  # (bytes,) uint8
    counts: np.ndarray  # (A,) int32 for huffman/ans, (0,) otherwise
    num_symbols: int
    alphabet: int

    @property
    def nbytes(self) -> int:
        return int(self.payload.nbytes + self.counts.nbytes)


def _symbols(symbols, alphabet: int) -> np.ndarray:
    if isinstance(symbols, torch.Tensor):
        symbols = symbols.detach().cpu().numpy()
    arr = np.asarray(symbols).reshape(-1)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"symbols: expected an integer array, got dtype {arr.dtype}")
    if not isinstance(alphabet, int) or not 1 <= alphabet <= MAX_ALPHABET:
        raise ValueError(f"alphabet: expected an int in [1, {MAX_ALPHABET}], got {alphabet!r}")
    if arr.size and (arr.min() < 0 or arr.max() >= alphabet):
        raise ValueError(f"symbols: expected values in [0, {alphabet}), got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int32)


def entropy_bits(symbols, alphabet: int) -> float:
    """n · H of the stream's empirical distribution, in bits (the bound a static coder can reach)."""
    arr = _symbols(symbols, alphabet)
    counts = np.bincount(arr, minlength=alphabet).astype(np.float64)
    nz = counts[counts > 0]
    return float(-(nz * np.log2(nz / arr.size)).sum()) if arr.size else 0.0


def _probabilities(counts: np.ndarray) -> np.ndarray:
    # at least two entries (a one-symbol alphabet has no Huffman tree); zero counts stay zero
    probs = counts.astype(np.float64)
    return np.concatenate([probs, np.zeros(max(0, 2 - len(probs)))])


def _words_to_bytes(words: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(words.astype("<u4")).view(np.uint8).copy()


def _bytes_to_words(payload: np.ndarray) -> np.ndarray:
    if payload.size % 4:
        raise ValueError(f"payload: expected a whole number of 32-bit words, got {payload.size} bytes")
    return np.ascontiguousarray(payload).view("<u4").astype(np.uint32)


def _require(module: str):
    """Import a coder's library, or an ``ImportError`` naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is needed for this entropy coder: pip install 'slimtorch-core[entropy]' (or use coder 'raw')"
        ) from err


def encode(symbols, alphabet: int, method: str = "ans") -> Encoded:
    """Entropy-code ``symbols`` (integers in [0, alphabet)) with ``method`` (module docstring)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    arr = _symbols(symbols, alphabet)
    n = int(arr.size)
    empty = np.zeros(0, np.int32)
    if method in ("zstd", "raw"):
        if alphabet > 256:
            raise ValueError(f"alphabet: {method} codes one byte per symbol, expected <= 256, got {alphabet}")
        data = arr.astype(np.uint8)
        if method == "zstd":
            zstandard = _require("zstandard")
            data = np.frombuffer(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data.tobytes()), np.uint8)
        return Encoded(method, data.copy(), empty, n, alphabet)
    counts = np.bincount(arr, minlength=alphabet).astype(np.int32)
    if n == 0 or np.count_nonzero(counts) == 1:  # no information: the counts say it all
        return Encoded(method, np.zeros(0, np.uint8), counts, n, alphabet)
    constriction = _require("constriction")
    probs = _probabilities(counts)
    if method == "huffman":
        tree = constriction.symbol.huffman.EncoderHuffmanTree(probs)
        encoder = constriction.symbol.QueueEncoder()
        for s in arr.tolist():
            encoder.encode_symbol(s, tree)
        words, _bits = encoder.get_compressed()
    else:
        model = constriction.stream.model.Categorical(probs, perfect=False)
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(arr, model)
        words = coder.get_compressed()
    return Encoded(method, _words_to_bytes(words), counts, n, alphabet)


def decode(encoded: Encoded) -> np.ndarray:
    """The symbols (int32, length ``num_symbols``) of an :class:`Encoded` stream; a stream that
    does not decode to ``num_symbols`` valid symbols raises ``ValueError``."""
    method, n, alphabet = encoded.method, encoded.num_symbols, encoded.alphabet
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"num_symbols: expected a non-negative int, got {n!r}")
    payload = np.asarray(encoded.payload, dtype=np.uint8)
    if method in ("zstd", "raw"):
        if method == "zstd":
            zstandard = _require("zstandard")
            try:  # max_output_size bounds the memory a tampered frame can claim
                raw = zstandard.ZstdDecompressor().decompress(payload.tobytes(), max_output_size=max(n, 1))
            except zstandard.ZstdError as err:
                raise ValueError(f"payload: not a valid zstd stream of {n} symbols: {err}") from err
            payload = np.frombuffer(raw, np.uint8)
        if payload.size != n:
            raise ValueError(f"payload: expected {n} symbols, decoded {payload.size}")
        out = payload.astype(np.int32)
    else:
        counts = np.asarray(encoded.counts, dtype=np.int64)
        if counts.shape != (alphabet,) or counts.min(initial=0) < 0 or counts.sum() != n:
            raise ValueError(f"counts: expected {alphabet} non-negative counts summing to {n}, got {counts.size}")
        if n == 0 or np.count_nonzero(counts) == 1:
            return np.full(n, int(np.argmax(counts)) if n else 0, np.int32)
        constriction = _require("constriction")
        probs = _probabilities(counts)
        words = _bytes_to_words(payload)
        try:
            if method == "huffman":
                tree = constriction.symbol.huffman.DecoderHuffmanTree(probs)
                decoder = constriction.symbol.QueueDecoder(words)
                out = np.fromiter((decoder.decode_symbol(tree) for _ in range(n)), np.int32, count=n)
            else:
                model = constriction.stream.model.Categorical(probs, perfect=False)
                out = constriction.stream.stack.AnsCoder(words).decode(model, n).astype(np.int32)
        except (ValueError, RuntimeError, AssertionError, OverflowError) as err:
            raise ValueError(f"payload: not a valid {method} stream of {n} symbols: {err}") from err
    if out.size and (out.min() < 0 or out.max() >= alphabet):
        raise ValueError(f"payload: decoded symbols outside [0, {alphabet})")
    return out


def bits_per_symbol(encoded: Encoded) -> float:
    return 8 * encoded.nbytes / encoded.num_symbols if encoded.num_symbols else math.nan
