/* The machine's peak float32 FMA rate, in GFLOP/s: every OpenMP thread runs 12 independent AVX2
   FMA chains on registers only (enough to cover the FMA latency on both pipes of current x86
   cores), best of 5 runs. benchmarks/seed_workloads.py builds it with
   `cc -O3 -funroll-all-loops -mavx2 -mfma -fopenmp` and prints its result beside the matmul rates. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#define CHAINS 12
int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 200000000L;
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = omp_get_wtime();
        float sink = 0;
        int nthreads = 1;
#pragma omp parallel reduction(+:sink)
        {
#pragma omp single
            nthreads = omp_get_num_threads();
            __m256 acc[CHAINS];
            __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
            for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_set1_ps((float)c);
            for (long i = 0; i < iters / nthreads; i++)
                for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
            float out[8];
            for (int c = 1; c < CHAINS; c++) acc[0] = _mm256_add_ps(acc[0], acc[c]);
            _mm256_storeu_ps(out, acc[0]);
            sink += out[0];
        }
        double t = omp_get_wtime() - t0;
        double flops = 2.0 * 8 * CHAINS * (double)(iters / nthreads) * nthreads;
        if (flops / t > best) best = flops / t;
        if (sink == 12345.f) printf("!");
    }
    printf("%.1f\n", best / 1e9);
    return 0;
}
