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

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define WARPS_PER_BLOCK 4
#define WARP_M 32
#define M_TILES (WARP_M / 8)

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
    const int warp = threadIdx.x >> 5;
    const int g = lane >> 2;
    const int t = lane & 3;
    const int m0 = blockIdx.x * WARP_M;  // grid.x: M tiles (M can exceed 65535 tiles), grid.y: N tiles
    const int n0 = (blockIdx.y * WARPS_PER_BLOCK + warp) * 16;
    if (n0 >= N) return;  // whole warp idle (warps never split an mma)

    const int half_k = K / 2;
    const int steps = K / 32;
    const long long row_lo = min(n0 + g, N - 1);
    const long long row_hi = min(n0 + g + 8, N - 1);
    const unsigned* a_lo = reinterpret_cast<const unsigned*>(values + row_lo * half_k);
    const unsigned* a_hi = reinterpret_cast<const unsigned*>(values + row_hi * half_k);
    const unsigned* e_ptr = meta_mma + (long long)(n0 / 16) * steps * 16 + 2 * g + (t & 1);
    const unsigned* b_rows[M_TILES];
    for (int j = 0; j < M_TILES; ++j) {
        const long long m = min(m0 + 8 * j + g, M - 1);
        b_rows[j] = reinterpret_cast<const unsigned*>(x + m * K);
    }

    float acc[M_TILES][4];
    for (int j = 0; j < M_TILES; ++j)
        for (int i = 0; i < 4; ++i) acc[j][i] = 0.0f;

    for (int s = 0; s < steps; ++s) {
        // 32-bit words: stored values 16s + 2t (+8) are word 8s + t (+4); x columns 32s + 8q + 2t
        // are word 16s + 4q + t.
        const unsigned a[4] = {a_lo[8 * s + t], a_hi[8 * s + t], a_lo[8 * s + 4 + t], a_hi[8 * s + 4 + t]};
        const unsigned e = e_ptr[s * 16];
        for (int j = 0; j < M_TILES; ++j) {
            const unsigned* b_row = b_rows[j] + 16 * s + t;
            const unsigned b[4] = {b_row[0], b_row[4], b_row[8], b_row[12]};
            mma_sp_16832<BF16>(acc[j], a, b, e);
        }
    }

    const int n_lo = n0 + g;
    const int n_hi = n0 + g + 8;
    const float bias_lo = (bias != nullptr && n_lo < N) ? from_half_bits<BF16>(bias[n_lo]) : 0.0f;
    const float bias_hi = (bias != nullptr && n_hi < N) ? from_half_bits<BF16>(bias[n_hi]) : 0.0f;
    for (int j = 0; j < M_TILES; ++j) {
        for (int r = 0; r < 2; ++r) {
            const long long m = m0 + 8 * j + 2 * t + r;
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
