// 2:4 sparse weight x dense activations on sparse tensor cores (sm_80+):
//     out (M, N) = x (M, K) @ W.T + bias,   W (N, K) 2:4 sparse, fp32 accumulation.
//
// Each warp computes out^T tiles with  mma.sp.sync.aligned.m16n8k32.row.col.f32.{f16,bf16}:
//   A (16 x 32, sparse)  = 16 rows of W (output features n0 .. n0+15) x 32 dense K columns,
//                          given as 16 x 16 stored values + metadata;
//   B (32 x 8, dense)    = x^T: 32 K columns x 8 rows of x (m0 .. m0+7);
//   D (16 x 8, fp32)     = out^T tile.
// A warp owns 16 output features x WARP_M rows of x (WARP_M / 8 mma tiles sharing one A fragment);
// a block is 4 warps stacked along N (64 features x WARP_M rows).
//
// Register fragments (PTX ISA, "Matrix fragments for sparse mma.m16n8k32 .f16/.bf16"), lane T,
// g = T >> 2, t = T & 3, stored values V (N, K/2) with k-step s covering V columns 16s .. 16s+15:
//   A: a0 = V[n0+g][16s+2t : +2], a1 = V[n0+g+8][16s+2t : +2],
//      a2 = V[n0+g][16s+8+2t : +2], a3 = V[n0+g+8][16s+8+2t : +2]          (two halves per reg)
//   B: b_q = x[m0+g][32s + 8q + 2t : +2], q = 0..3
//   D: d0,d1 = out[m0+2t, m0+2t+1][n0+g],  d2,d3 = out[m0+2t, m0+2t+1][n0+g+8]
//   E (metadata, sparsity selector 0): meta_mma[n0/16][s][2g + (t & 1)], prepared on the host by
//      slimtorch.sparse.formats.to_mma_sp_metadata (lanes with t & 2 are not read by the hardware).
//
// Requirements (checked by the Python launcher): K % 32 == 0, x and values contiguous, 4-byte
// aligned rows (K even). Rows past N or M are clamped for loads and masked at the store.
// Simple by design (operands straight from global memory/L1, no shared-memory pipeline): a correct
// reference for sparse tensor cores, opt-in until measured on a GPU.

// The index arithmetic (which word each lane loads, where each accumulator goes) is in the S24_HD
// functions below, plain C++ under any compiler: tests/sparse/mma_sp_index_harness.cpp includes this
// very file with g++ (no __CUDACC__: the device code below is skipped) and checks them lane by lane
// against the PTX fragment layouts (tests/sparse/test_mma_sp.py).

#define WARPS_PER_BLOCK 4
#define WARP_M 32
#define M_TILES (WARP_M / 8)

#ifdef __CUDACC__
#define S24_HD __host__ __device__ __forceinline__
#else
#define S24_HD inline
#endif

S24_HD int s24_min(int a, int b) { return a < b ? a : b; }
// Lane T of a warp: group g = T >> 2 (fragment row), thread-in-group t = T & 3 (fragment column pair).
S24_HD int s24_group(int lane) { return lane >> 2; }
S24_HD int s24_tig(int lane) { return lane & 3; }
// First output feature of warp `warp` of block `block_n` (4 warps stacked along N, 16 features each).
S24_HD int s24_warp_n0(int block_n, int warp) { return (block_n * WARPS_PER_BLOCK + warp) * 16; }
// Every operand word a lane loads at k-step s is  base + s24_*_lane(...) + s * s24_*_step()  (32-bit
// words): the lane part is computed once, each step advances the pointers by s24_*_step(). Rows past N
// or M are clamped (loaded, never stored).
// A (values V (N, K/2) 16-bit, as (N, K/4) words; 16 x 32 sparse = 16 x 16 stored): register i = 0..3
// holds V[n0 + g + 8 (i & 1)][16 s + 8 (i >> 1) + 2 t, +1].
S24_HD long long s24_a_lane(int n0, int g, int t, int i, int N, int K) {
    return (long long)s24_min(n0 + g + 8 * (i & 1), N - 1) * (K / 4) + 4 * (i >> 1) + t;
}
S24_HD int s24_a_step() { return 8; }
// E (metadata, sparsity selector 0): meta_mma[n0 / 16][s][2 g + (t & 1)], meta_mma (ceil(N/16), K/32, 16)
// (lanes with t & 2 are not read by the hardware).
S24_HD long long s24_e_lane(int n0, int g, int t, int K) {
    return (long long)(n0 / 16) * (K / 32) * 16 + 2 * g + (t & 1);
}
S24_HD int s24_e_step() { return 16; }
// B (x^T, 32 x 8 dense; x (M, K) as (M, K/2) words) of m-tile j: register q = 0..3 holds
// x[m0 + 8 j + g][32 s + 8 q + 2 t, +1].
S24_HD long long s24_b_lane(int m0, int j, int g, int t, int q, int M, int K) {
    return (long long)s24_min(m0 + 8 * j + g, M - 1) * (K / 2) + 4 * q + t;
}
S24_HD int s24_b_step() { return 16; }
// D (out^T, 16 x 8 fp32) of m-tile j: d[2 h + r] = out[m0 + 8 j + 2 t + r][n0 + g + 8 h], h, r in {0, 1}.
S24_HD int s24_d_row(int m0, int j, int t, int r) { return m0 + 8 * j + 2 * t + r; }
S24_HD int s24_d_col(int n0, int g, int h) { return n0 + g + 8 * h; }

#ifdef __CUDACC__
#include <cuda_fp16.h>
#include <cuda_bf16.h>

template <bool BF16>
__device__ __forceinline__ void mma_sp_16832(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[4],
                                             unsigned e) {
    if (BF16) {
        asm volatile(
            "mma.sp.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
    } else {
        asm volatile(
            "mma.sp.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
    }
}

template <bool BF16>
__device__ __forceinline__ unsigned short to_half_bits(float v) {
    if (BF16) {
        __nv_bfloat16 h = __float2bfloat16_rn(v);
        return *reinterpret_cast<unsigned short*>(&h);
    }
    __half h = __float2half_rn(v);
    return *reinterpret_cast<unsigned short*>(&h);
}

template <bool BF16>
__device__ __forceinline__ float from_half_bits(unsigned short bits) {
    if (BF16) return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(&bits));
    return __half2float(*reinterpret_cast<const __half*>(&bits));
}

// x: (M, K) 16-bit, values: (N, K/2) 16-bit, meta_mma: (ceil(N/16), K/32, 16) int32,
// bias: (N,) 16-bit or null, out: (M, N) 16-bit.
template <bool BF16>
__device__ void sparse24_mma_sp(const unsigned short* __restrict__ x, const unsigned short* __restrict__ values,
                                const unsigned* __restrict__ meta_mma, const unsigned short* __restrict__ bias,
                                unsigned short* __restrict__ out, int M, int N, int K) {
    const int lane = threadIdx.x & 31;
    const int g = s24_group(lane);
    const int t = s24_tig(lane);
    const int m0 = blockIdx.x * WARP_M;  // grid.x: M tiles (M can exceed 65535 tiles), grid.y: N tiles
    const int n0 = s24_warp_n0(blockIdx.y, threadIdx.x >> 5);
    if (n0 >= N) return;  // whole warp idle (warps never split an mma)

    const int steps = K / 32;
    const unsigned* x_words = reinterpret_cast<const unsigned*>(x);
    const unsigned* v_words = reinterpret_cast<const unsigned*>(values);
    const unsigned* a_ptr[4];
    for (int i = 0; i < 4; ++i) a_ptr[i] = v_words + s24_a_lane(n0, g, t, i, N, K);
    const unsigned* e_ptr = meta_mma + s24_e_lane(n0, g, t, K);
    const unsigned* b_ptr[M_TILES][4];
    for (int j = 0; j < M_TILES; ++j)
        for (int q = 0; q < 4; ++q) b_ptr[j][q] = x_words + s24_b_lane(m0, j, g, t, q, M, K);

    float acc[M_TILES][4];
    for (int j = 0; j < M_TILES; ++j)
        for (int i = 0; i < 4; ++i) acc[j][i] = 0.0f;

    for (int s = 0; s < steps; ++s) {
        const unsigned a[4] = {*a_ptr[0], *a_ptr[1], *a_ptr[2], *a_ptr[3]};
        const unsigned e = *e_ptr;
        for (int j = 0; j < M_TILES; ++j) {
            const unsigned b[4] = {*b_ptr[j][0], *b_ptr[j][1], *b_ptr[j][2], *b_ptr[j][3]};
            mma_sp_16832<BF16>(acc[j], a, b, e);
            for (int q = 0; q < 4; ++q) b_ptr[j][q] += s24_b_step();
        }
        for (int i = 0; i < 4; ++i) a_ptr[i] += s24_a_step();
        e_ptr += s24_e_step();
    }

    const int n_lo = s24_d_col(n0, g, 0);
    const int n_hi = s24_d_col(n0, g, 1);
    const float bias_lo = (bias != nullptr && n_lo < N) ? from_half_bits<BF16>(bias[n_lo]) : 0.0f;
    const float bias_hi = (bias != nullptr && n_hi < N) ? from_half_bits<BF16>(bias[n_hi]) : 0.0f;
    for (int j = 0; j < M_TILES; ++j) {
        for (int r = 0; r < 2; ++r) {
            const long long m = s24_d_row(m0, j, t, r);
            if (m >= M) continue;
            if (n_lo < N) out[m * N + n_lo] = to_half_bits<BF16>(acc[j][r] + bias_lo);
            if (n_hi < N) out[m * N + n_hi] = to_half_bits<BF16>(acc[j][2 + r] + bias_hi);
        }
    }
}

extern "C" __global__ void __launch_bounds__(WARPS_PER_BLOCK * 32)
    sparse24_mma_sp_f16(const unsigned short* x, const unsigned short* values, const unsigned* meta_mma,
                        const unsigned short* bias, unsigned short* out, int M, int N, int K) {
    sparse24_mma_sp<false>(x, values, meta_mma, bias, out, M, N, K);
}

extern "C" __global__ void __launch_bounds__(WARPS_PER_BLOCK * 32)
    sparse24_mma_sp_bf16(const unsigned short* x, const unsigned short* values, const unsigned* meta_mma,
                         const unsigned short* bias, unsigned short* out, int M, int N, int K) {
    sparse24_mma_sp<true>(x, values, meta_mma, bias, out, M, N, K);
}
#endif  // __CUDACC__
