"""The program -> tile map of the per-image [pixels × channels] kernels (depthwise, shuffle; private).

Grid axis 0 enumerates (image, tile of BLOCK_P pixels of that image), axis 1 tiles of BLOCK_C
channels; pixels are the row-major positions of an H×W (or OH×OW) image.
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
