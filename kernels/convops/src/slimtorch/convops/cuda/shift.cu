// Standalone per-channel integer shift (Wu et al. 2018 grouped shift; Chen et al. 2019 sparse shift):
//
//     y[n, c, h, w] = x[n, c, h + dy[c], w + dx[c]]      (0 outside the image)
//
// offsets: int32 (C, 2) = (dy, dx) per channel. The backward pass is the same kernel with the negated
// offsets. Pure data movement, so elements are moved as raw words (2, 4 or 8 bytes: fp16/bf16,
// fp32, fp64); a zero word is +0.0 in every float format.
//
// Layouts (both contiguous in their own memory format):
//   NCHW: one thread per output element (grid-stride loop), coalesced along W.
//   NHWC (channels_last): one thread per group of VEC channels of one pixel. Where the VEC channels
//   share one offset (grouped shift: whole channel groups do) the group moves as one 16-byte load and
//   store; otherwise channel by channel. The vector kernel needs C % VEC == 0 and 16-byte aligned
//   pointers (the launcher checks, else it runs VEC = 1).
//
// Opt-in in slimtorch.convops.shift until verified on a GPU (it compiles in CI for sm_80 / sm_90).

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

template <typename T>
__device__ __forceinline__ void shift_nchw(const T* __restrict__ x, const int* __restrict__ offsets,
                                           T* __restrict__ y, long long total, int C, int H, int W) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int w = (int)(i % W);
        const long long rows = i / W;
        const int h = (int)(rows % H);
        const int c = (int)((rows / H) % C);
        const int ih = h + offsets[2 * c];
        const int iw = w + offsets[2 * c + 1];
        T v = 0;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
            v = x[i + (long long)(ih - h) * W + (iw - w)];
        }
        y[i] = v;
    }
}

// V: the type moving VEC words at once (uint4 = 16 bytes), or T itself with VEC = 1.
template <typename T, typename V, int VEC>
__device__ __forceinline__ void shift_nhwc(const T* __restrict__ x, const int* __restrict__ offsets,
                                           T* __restrict__ y, long long groups, int C, int H, int W) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long v = (long long)blockIdx.x * blockDim.x + threadIdx.x; v < groups; v += step) {
        const long long e = v * VEC;  // first element of this group of channels
        const int c0 = (int)(e % C);
        const long long pixel = e / C;
        const int w = (int)(pixel % W);
        const int h = (int)((pixel / W) % H);
        const int dy = offsets[2 * c0];
        const int dx = offsets[2 * c0 + 1];
        bool uniform = true;
#pragma unroll
        for (int j = 1; j < VEC; ++j) {
            uniform = uniform && offsets[2 * (c0 + j)] == dy && offsets[2 * (c0 + j) + 1] == dx;
        }
        if (uniform) {
            const int ih = h + dy;
            const int iw = w + dx;
            V value;
            if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
                value = *reinterpret_cast<const V*>(x + e + ((long long)(ih - h) * W + (iw - w)) * C);
            } else {
                value = V{};
            }
            *reinterpret_cast<V*>(y + e) = value;
        } else {
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                const int ih = h + offsets[2 * (c0 + j)];
                const int iw = w + offsets[2 * (c0 + j) + 1];
                T value = 0;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
                    value = x[e + j + ((long long)(ih - h) * W + (iw - w)) * C];
                }
                y[e + j] = value;
            }
        }
    }
}

#define SHIFT_KERNELS(T)                                                                                    \
    extern "C" __global__ void shift_nchw_##T(const T* x, const int* offsets, T* y, long long total, int C, \
                                              int H, int W) {                                              \
        shift_nchw<T>(x, offsets, y, total, C, H, W);                                                      \
    }                                                                                                       \
    extern "C" __global__ void shift_nhwc_##T(const T* x, const int* offsets, T* y, long long total, int C, \
                                              int H, int W) {                                              \
        shift_nhwc<T, T, 1>(x, offsets, y, total, C, H, W);                                                \
    }                                                                                                       \
    extern "C" __global__ void shift_nhwc_vec_##T(const T* x, const int* offsets, T* y, long long groups,  \
                                                  int C, int H, int W) {                                   \
        shift_nhwc<T, uint4, (int)(sizeof(uint4) / sizeof(T))>(x, offsets, y, groups, C, H, W);           \
    }

SHIFT_KERNELS(u16)
SHIFT_KERNELS(u32)
SHIFT_KERNELS(u64)
