// Host harness for the index arithmetic of kernels/sparse/src/slimtorch/sparse/cuda/sparse24_mma_sp.cu:
// it includes the .cu itself (S24_SOURCE, a quoted path given with -D; without __CUDACC__ only the S24_HD
// index functions compile) and prints, for every warp, lane and k-step of a launch on (M, N, K), the
// 32-bit word each lane loads into each mma.sp operand register and where each accumulator is stored,
// composed exactly as the kernel composes them. tests/sparse/test_mma_sp.py turns those addresses into
// the mma's A / B / E operands by the PTX fragment layouts and compares with the 2:4 reference.
//
//   g++ -std=c++17 -DS24_SOURCE='"…/sparse24_mma_sp.cu"' mma_sp_index_harness.cpp && ./a.out M N K
//
// Output lines (integers): A m0 n0 s lane i word | E m0 n0 s lane word | B m0 n0 s lane j q word |
// D m0 n0 lane j h r row col.
#include <cstdio>
#include <cstdlib>

#include S24_SOURCE

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s M N K\n", argv[0]);
        return 2;
    }
    const int M = std::atoi(argv[1]), N = std::atoi(argv[2]), K = std::atoi(argv[3]);
    const int steps = K / 32;
    const int blocks_m = (M + WARP_M - 1) / WARP_M;
    const int blocks_n = (N + 16 * WARPS_PER_BLOCK - 1) / (16 * WARPS_PER_BLOCK);
    for (int bm = 0; bm < blocks_m; ++bm) {
        for (int bn = 0; bn < blocks_n; ++bn) {
            for (int warp = 0; warp < WARPS_PER_BLOCK; ++warp) {
                const int m0 = bm * WARP_M;
                const int n0 = s24_warp_n0(bn, warp);
                if (n0 >= N) continue;  // the kernel's idle warps
                for (int lane = 0; lane < 32; ++lane) {
                    const int g = s24_group(lane), t = s24_tig(lane);
                    for (int s = 0; s < steps; ++s) {
                        for (int i = 0; i < 4; ++i)
                            std::printf("A %d %d %d %d %d %lld\n", m0, n0, s, lane, i,
                                        s24_a_lane(n0, g, t, i, N, K) + (long long)s * s24_a_step());
                        std::printf("E %d %d %d %d %lld\n", m0, n0, s, lane,
                                    s24_e_lane(n0, g, t, K) + (long long)s * s24_e_step());
                        for (int j = 0; j < M_TILES; ++j)
                            for (int q = 0; q < 4; ++q)
                                std::printf("B %d %d %d %d %d %d %lld\n", m0, n0, s, lane, j, q,
                                            s24_b_lane(m0, j, g, t, q, M, K) + (long long)s * s24_b_step());
                    }
                    for (int j = 0; j < M_TILES; ++j)
                        for (int h = 0; h < 2; ++h)
                            for (int r = 0; r < 2; ++r)
                                std::printf("D %d %d %d %d %d %d %d %d\n", m0, n0, lane, j, h, r, s24_d_row(m0, j, t, r),
                                            s24_d_col(n0, g, h));
                }
            }
        }
    }
    return 0;
}
