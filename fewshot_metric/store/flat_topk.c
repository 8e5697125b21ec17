/* Exact flat search in one pass: the products of queries and vectors and the running top-k
 * of each query, fused, so no [queries, vectors] matrix of distances is ever written and read
 * back (what FAISS's flat search spends as much time on as on the products at small dims).
 * Loaded with ctypes by fewshot_metric/store/flat_kernel.py, which splits the queries over
 * threads (one call each).
 *
 * score(q, p) = q . p + bias(p); bias = -||p||^2 / 2 for squared L2 (the nearest vector has
 * the largest score: ||q - p||^2 = ||q||^2 - 2 score) and 0 for inner product.
 *
 * Layout: a micro-kernel keeps MR queries x NR vectors of scores in AVX-512 registers while
 * it runs over the dims (queries packed [dims][MR], vectors [dims][NR]; 8 x 48 measured best
 * on this project's machine, against 12 x 32, 14 x 32, 6 x 64 and 9 x 48); vectors are
 * packed a group that fits the core's L2 cache at a time, and every query tile runs over it.
 * A tile's scores go to the top-k only where some beat the query's k-th best so far (one
 * compare per 16 scores), best first, so a row of a tile costs one insertion when k = 1.
 * Ties keep the lower position first. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MR 8       /* queries per micro-kernel */
#define NV 3       /* 16-float registers of vectors per micro-kernel: MR * NV = 24 sums */
#define NR (16 * NV) /* vectors per micro-kernel (at most 64: one bit each in a mask) */

int fsm_supported(void) { return __builtin_cpu_supports("avx512f"); }

/* Puts (score, position) into a row's top-k, sorted by score, descending; score beats s[k-1]. */
static void insert(float *s, int64_t *position, int64_t k, float score, int64_t at) {
    int64_t i = k - 1;
    while (i > 0 && s[i - 1] < score) {
        s[i] = s[i - 1];
        position[i] = position[i - 1];
        i--;
    }
    s[i] = score;
    position[i] = at;
}

/* Scores of one query tile q [d][MR] against one vector block p [d][NR] (+ bias [NR]) into
 * the top-k rows s, position [rows][k] of the tile's first `rows` queries. */
__attribute__((target("avx512f"))) static void tile(const float *q, const float *p,
                                                    const float *bias, int64_t d, int64_t base,
                                                    int64_t rows, int64_t k, float *s,
                                                    int64_t *position) {
    __m512 acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_loadu_ps(bias + 16 * v);
#pragma GCC unroll 2
    for (int64_t t = 0; t < d; t++) {
        __m512 vectors[NV];
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) vectors[v] = _mm512_loadu_ps(p + t * NR + 16 * v);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const __m512 x = _mm512_set1_ps(q[t * MR + r]);
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(x, vectors[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        if (r >= rows) break;
        float *row_s = s + r * k;
        uint64_t beat = 0; /* lanes whose score beats the row's k-th best */
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++)
            beat |= (uint64_t)_mm512_cmp_ps_mask(acc[r][v], _mm512_set1_ps(row_s[k - 1]),
                                                 _CMP_GT_OQ) << (16 * v);
        while (beat) { /* insert the best beating lane (the lowest of equals), then re-check */
            __m512 best = _mm512_set1_ps(-INFINITY);
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++)
                best = _mm512_mask_max_ps(best, (__mmask16)(beat >> (16 * v)), best, acc[r][v]);
            const float top = _mm512_reduce_max_ps(best);
            uint64_t equal = 0;
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++)
                equal |= (uint64_t)_mm512_cmp_ps_mask(acc[r][v], _mm512_set1_ps(top), _CMP_EQ_OQ)
                         << (16 * v);
            const int j = __builtin_ctzll(beat & equal);
            insert(row_s, position + r * k, k, top, base + j);
            beat &= ~(1ULL << j);
            uint64_t still = 0;
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++)
                still |= (uint64_t)_mm512_cmp_ps_mask(acc[r][v], _mm512_set1_ps(row_s[k - 1]),
                                                      _CMP_GT_OQ) << (16 * v);
            beat &= still;
        }
    }
}

/* Packs vectors P[first .. first + count) (rows past c: zeros, bias -inf, so they never
 * beat anything) into ppack [count / NR][d][NR] and their biases into bias [count]. */
static void pack_vectors(const float *P, int64_t c, int64_t d, int inner_product,
                         int64_t first, int64_t count, float *ppack, float *bias) {
    for (int64_t j = 0; j < count; j++) {
        const int64_t row = first + j;
        float *dst = ppack + (j / NR) * NR * d + j % NR, sq = 0.0f;
        for (int64_t t = 0; t < d; t++) {
            const float x = row < c ? P[row * d + t] : 0.0f;
            dst[t * NR] = x;
            sq += x * x;
        }
        bias[j] = row >= c ? -INFINITY : inner_product ? 0.0f : -0.5f * sq;
    }
}

/* Packs queries Q [n, d] into qpack [tiles][d][MR] (lanes past n: zeros) and their squared
 * norms into qnorm [n]. */
static void pack_queries(const float *Q, int64_t n, int64_t d, float *qpack, float *qnorm) {
    const int64_t tiles = (n + MR - 1) / MR;
    for (int64_t i = 0; i < tiles * MR; i++) {
        float *dst = qpack + (i / MR) * MR * d + i % MR, sq = 0.0f;
        for (int64_t t = 0; t < d; t++) {
            const float x = i < n ? Q[i * d + t] : 0.0f;
            dst[t * MR] = x;
            sq += x * x;
        }
        if (i < n) qnorm[i] = sq;
    }
}

/* Queries Q [n, d] and vectors P [c, d], row-major float32 -> for each query its k nearest
 * vectors, nearest first: out [n, k] squared L2 distances (ascending; +inf where fewer than k
 * vectors), or inner products when inner_product (descending; -inf where fewer), and
 * position [n, k] (row of P; -1 where none). group_bytes: packed vectors per group (about
 * half the L2 cache); chunk_bytes: packed queries per chunk (the vectors are packed again
 * for each chunk). Returns 0, or -1 when memory ran out, -2 on a CPU without AVX-512. */
int fsm_search(const float *Q, int64_t n, const float *P, int64_t c, int64_t d,
               int inner_product, int64_t k, float *out, int64_t *position, int64_t group_bytes,
               int64_t chunk_bytes) {
    if (!fsm_supported()) return -2;
    float *s = out; /* scores while searching, then distances in place */
    for (int64_t i = 0; i < n * k; i++) {
        s[i] = -INFINITY;
        position[i] = -1;
    }
    if (n == 0) return 0;
    const int64_t blocks = (c + NR - 1) / NR;
    int64_t group = group_bytes / (d * NR * (int64_t)sizeof(float));
    if (group > blocks) group = blocks;
    if (group < 1) group = 1;
    int64_t chunk = chunk_bytes / (d * (int64_t)sizeof(float));
    chunk -= chunk % MR;
    if (chunk > n) chunk = n;
    if (chunk < MR) chunk = MR;
    float *qpack = malloc((size_t)(((chunk + MR - 1) / MR) * MR * d) * sizeof(float));
    float *qnorm = malloc((size_t)n * sizeof(float));
    float *ppack = malloc((size_t)(group * NR * d) * sizeof(float));
    float *bias = malloc((size_t)(group * NR) * sizeof(float));
    if (!qpack || !qnorm || !ppack || !bias) {
        free(qpack);
        free(qnorm);
        free(ppack);
        free(bias);
        return -1;
    }
    for (int64_t q0 = 0; q0 < n; q0 += chunk) {
        const int64_t m = n - q0 < chunk ? n - q0 : chunk, tiles = (m + MR - 1) / MR;
        pack_queries(Q + q0 * d, m, d, qpack, qnorm + q0);
        for (int64_t g0 = 0; g0 < blocks; g0 += group) {
            const int64_t g1 = g0 + group < blocks ? g0 + group : blocks;
            pack_vectors(P, c, d, inner_product, g0 * NR, (g1 - g0) * NR, ppack, bias);
            for (int64_t t0 = 0; t0 < tiles; t0++) {
                const int64_t rows = m - t0 * MR < MR ? m - t0 * MR : MR;
                for (int64_t b = g0; b < g1; b++)
                    tile(qpack + t0 * MR * d, ppack + (b - g0) * NR * d, bias + (b - g0) * NR,
                         d, b * NR, rows, k, s + (q0 + t0 * MR) * k,
                         position + (q0 + t0 * MR) * k);
            }
        }
    }
    if (!inner_product) /* ||q - p||^2 = ||q||^2 - 2 score, >= 0 despite rounding */
        for (int64_t i = 0; i < n * k; i++) {
            const float distance = qnorm[i / k] - 2.0f * s[i];
            s[i] = distance > 0.0f ? distance : 0.0f;
        }
    free(qpack);
    free(qnorm);
    free(ppack);
    free(bias);
    return 0;
}
