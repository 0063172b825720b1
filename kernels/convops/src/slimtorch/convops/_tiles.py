"""The program -> tile maps of the per-image [pixels × channels] kernels (depthwise, shuffle; private).

:func:`image_tile` (the depthwise input gradient): grid axis 0 enumerates (image, tile of BLOCK_P
pixels of that image), axis 1 tiles of BLOCK_C channels; pixels are the row-major positions of an
H×W (or OH×OW) image. :func:`pixel_tile` (the depthwise forward, the shuffles): 2-D BLOCK_H × BLOCK_W
pixel blocks instead.
"""

import triton
import triton.language as tl


@triton.jit
def image_tile(pixels, width, channels, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """-> (image as int64, rows, cols and in-range mask of the tile's pixels, its channels and their mask)."""
    tiles_p = tl.cdiv(pixels, BLOCK_P)
    n = (tl.program_id(0) // tiles_p).to(tl.int64)
    p = (tl.program_id(0) % tiles_p) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return n, p // width, p % width, p < pixels, c, c < channels


def image_grid(images: int, pixels: int, channels: int):
    """The launch grid matching :func:`image_tile` for the autotuned BLOCK_P / BLOCK_C."""

    def grid(meta):
        return (images * triton.cdiv(pixels, meta["BLOCK_P"]), triton.cdiv(channels, meta["BLOCK_C"]))

    return grid


@triton.jit
def pixel_tile(height, width, channels, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """The 2-D tile map: grid axis 0 enumerates (image, BLOCK_H × BLOCK_W pixel block of its
    height × width grid) row-major, axis 1 tiles of BLOCK_C channels. Returns (image as int64, rows
    and cols of the tile's BLOCK_H·BLOCK_W pixels (row-major in the block: / and % by the constexpr
    BLOCK_W are shifts), their in-range mask, the channels and their mask). A k×k stencil over a
    2-D block reads its (BLOCK_H + k − 1) × (BLOCK_W + k − 1) halo once per program (L1) instead of
    the three full rows a 1-D run of pixels re-reads from L2."""
    tiles_w = tl.cdiv(width, BLOCK_W)
    tiles = tl.cdiv(height, BLOCK_H) * tiles_w
    pid = tl.program_id(0)
    n = (pid // tiles).to(tl.int64)
    t = pid % tiles
    p = tl.arange(0, BLOCK_H * BLOCK_W)
    rows = (t // tiles_w) * BLOCK_H + p // BLOCK_W
    cols = (t % tiles_w) * BLOCK_W + p % BLOCK_W
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return n, rows, cols, (rows < height) & (cols < width), c, c < channels


def pixel_grid(images: int, height: int, width: int, channels: int, block_c: str = "BLOCK_C"):
    """The launch grid matching :func:`pixel_tile` for the autotuned BLOCK_H / BLOCK_W and the
    channel block named ``block_c``."""

    def grid(meta):
        blocks = triton.cdiv(height, meta["BLOCK_H"]) * triton.cdiv(width, meta["BLOCK_W"])
        return (images * blocks, triton.cdiv(channels, meta[block_c]))

    return grid
