/* Exact flat search in one pass: the products of queries and vectors and the running top-k
 * of each query, fused, so no [queries, vectors] matrix is ever written and read back.
 * Loaded with ctypes by fewshot_metric/store/flat_kernel.py, which splits the queries over
 * threads (one call each).
 *
 * Ranking: score(q, p) = q . p for inner product. For squared L2, score = q' . p' - ||p'||^2/2
 * with q' = q - shift and p' = p - shift, shift a centre of the vectors given by the caller
 * (distances do not change under a shift, and centring keeps the float32 rounding of the
 * expansion at the scale of the data's spread rather than of its distance from the origin):
 * the nearest vector has the largest score. The k distances returned are then computed directly, sum((q - p)^2), and re-sorted.
 * Ties as in FAISS's flat search (its heaps): for squared L2 the lower position wins; for
 * inner product the top-k is what FAISS's heap keeps, vectors taken in position order (an
 * equal score does not displace the k-th, a better one displaces the lowest position among
 * the worst), listed highest position first among equals.
 *
 * Layout: a micro-kernel keeps MR queries x NR vectors of scores in AVX-512 registers while
 * it runs over the dims (queries packed [dims][MR], vectors [dims][NR]; 8 x 48 measured best
 * on this project's machine, against 12 x 32, 14 x 32, 6 x 64 and 9 x 48); vectors are
 * packed a group that fits the core's L2 cache at a time, and every query tile runs over it.
 * A tile's scores go to the top-k only where some beat the query's k-th best so far (one
 * compare per 16 scores), best first, so a row of a tile costs one insertion when k = 1. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MR 8         /* queries per micro-kernel */
#define NV 3         /* 16-float registers of vectors per micro-kernel: MR * NV = 24 sums */
#define NR (16 * NV) /* vectors per micro-kernel (at most 64: one bit each in a mask) */

int fsm_supported(void) { return __builtin_cpu_supports("avx512f"); }

/* Puts (score, at) into a row's top-k s, position [k], kept by score, descending, among
 * equals the lower position first (or the higher: higher_first), dropping the last; `at`
 * exceeds every position there and score beats s[k - 1] (an empty slot holds -inf). */
static void insert(float *s, int64_t *position, int64_t k, float score, int64_t at,
                   int higher_first) {
    int64_t i = k - 1;
    while (i > 0 && (s[i - 1] < score || (higher_first && s[i - 1] == score))) {
        s[i] = s[i - 1];
        position[i] = position[i - 1];
        i--;
    }
    s[i] = score;
    position[i] = at;
}

/* Lanes of acc [NV] whose score is > x (or >= x: or_equal), as bits of one mask. */
__attribute__((target("avx512f"))) static inline uint64_t lanes_above(const __m512 *acc,
                                                                      float x, int or_equal) {
    const __m512 threshold = _mm512_set1_ps(x);
    uint64_t mask = 0;
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++)
        mask |= (uint64_t)_mm512_cmp_ps_mask(acc[v], threshold,
                                             or_equal ? _CMP_GE_OQ : _CMP_GT_OQ)
                << (16 * v);
    return mask;
}

/* Scores of one query tile q [d][MR] against one vector block p [d][NR] (+ bias [NR]) into
 * the top-k rows s, position [rows][k] of the tile's first `rows` queries; lanes outside
 * `valid` (padding past the last vector) are never taken. */
__attribute__((target("avx512f"))) static void tile(const float *q, const float *p,
                                                    const float *bias, int64_t d, int64_t base,
                                                    uint64_t valid, int64_t rows, int64_t k,
                                                    float *s, int64_t *position,
                                                    int inner_product) {
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
        int64_t *row_position = position + r * k;
        uint64_t beat = valid & lanes_above(acc[r], row_s[k - 1], 0);
        if (inner_product && beat) { /* FAISS's heap order: lanes in position order */
            float scores[NR];
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) _mm512_storeu_ps(scores + 16 * v, acc[r][v]);
            for (; beat; beat &= beat - 1) {
                const int j = __builtin_ctzll(beat);
                if (scores[j] > row_s[k - 1])
                    insert(row_s, row_position, k, scores[j], base + j, 1);
            }
        }
        while (beat) { /* take the best beating lane (the lowest of equals), then look again */
            __m512 best = _mm512_set1_ps(-INFINITY);
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++)
                best = _mm512_mask_max_ps(best, (__mmask16)(beat >> (16 * v)), best, acc[r][v]);
            const float top = _mm512_reduce_max_ps(best);
            const uint64_t tied = beat & lanes_above(acc[r], top, 1); /* == top */
            const int j = __builtin_ctzll(tied);
            insert(row_s, row_position, k, top, base + j, 0);
            beat &= ~(1ULL << j) & lanes_above(acc[r], row_s[k - 1], 0);
        }
    }
}

/* Packs vectors P[first .. first + count), minus shift [d] (or as they are: shift NULL), into
 * ppack [count / NR][d][NR] and biases (-||p||^2 / 2, or 0 for inner product) into bias
 * [count]; rows past c are zeros. Returns the mask of real rows in the last block. */
static uint64_t pack_vectors(const float *P, int64_t c, int64_t d, const float *shift,
                             int inner_product, int64_t first, int64_t count, float *ppack,
                             float *bias) {
    for (int64_t j = 0; j < count; j++) {
        const int64_t row = first + j;
        float *dst = ppack + (j / NR) * NR * d + j % NR, sq = 0.0f;
        for (int64_t t = 0; t < d; t++) {
            const float x = row < c ? P[row * d + t] - (shift ? shift[t] : 0.0f) : 0.0f;
            dst[t * NR] = x;
            sq += x * x;
        }
        bias[j] = inner_product ? 0.0f : -0.5f * sq;
    }
    const int64_t real = c - (first + count - NR);
    return real >= NR ? ~0ULL : (1ULL << real) - 1;
}

/* Packs queries Q [n, d] minus shift [d] (or as they are: NULL) into qpack [tiles][d][MR];
 * lanes past n are zeros. */
static void pack_queries(const float *Q, int64_t n, int64_t d, const float *shift,
                         float *qpack) {
    const int64_t tiles = (n + MR - 1) / MR;
    for (int64_t i = 0; i < tiles * MR; i++) {
        float *dst = qpack + (i / MR) * MR * d + i % MR;
        for (int64_t t = 0; t < d; t++)
            dst[t * MR] = i < n ? Q[i * d + t] - (shift ? shift[t] : 0.0f) : 0.0f;
    }
}

/* sum((a - b)^2) over d floats. */
__attribute__((target("avx512f"))) static float squared_distance(const float *a,
                                                                 const float *b, int64_t d) {
    __m512 sum = _mm512_setzero_ps();
    for (int64_t t = 0; t < d; t += 16) {
        const __mmask16 m = d - t >= 16 ? 0xFFFF : (__mmask16)((1U << (d - t)) - 1);
        const __m512 diff = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + t),
                                          _mm512_maskz_loadu_ps(m, b + t));
        sum = _mm512_fmadd_ps(diff, diff, sum);
    }
    return _mm512_reduce_add_ps(sum);
}

/* Queries Q [n, d] and vectors P [c, d], row-major float32 -> for each query its k nearest
 * vectors, nearest first: out [n, k] squared L2 distances (ascending; +inf where fewer than k
 * vectors), or inner products when inner_product (descending; -inf where fewer), and
 * position [n, k] (row of P; -1 where none). shift [d]: the centre to rank squared L2 around
 * (ignored for inner product). group_bytes: packed vectors per group (about half the L2
 * cache); chunk_bytes: packed queries per chunk (the vectors are packed again for each
 * chunk). Returns 0, or -1 when memory ran out, -2 on a CPU without AVX-512. */
int fsm_search(const float *Q, int64_t n, const float *P, int64_t c, int64_t d,
               int inner_product, const float *shift, int64_t k, float *out, int64_t *position,
               int64_t group_bytes, int64_t chunk_bytes) {
    if (!fsm_supported()) return -2;
    float *s = out; /* scores while searching, then distances in place */
    for (int64_t i = 0; i < n * k; i++) {
        s[i] = -INFINITY;
        position[i] = -1;
    }
    if (n == 0) return 0;
    if (inner_product) shift = NULL;
    const int64_t blocks = (c + NR - 1) / NR;
    int64_t group = group_bytes / (d * NR * (int64_t)sizeof(float));
    if (group > blocks) group = blocks;
    if (group < 1) group = 1;
    int64_t chunk = chunk_bytes / (d * (int64_t)sizeof(float));
    chunk -= chunk % MR;
    if (chunk > n) chunk = n;
    if (chunk < MR) chunk = MR;
    float *qpack = malloc((size_t)(((chunk + MR - 1) / MR) * MR * d) * sizeof(float));
    float *ppack = malloc((size_t)(group * NR * d) * sizeof(float));
    float *bias = malloc((size_t)(group * NR) * sizeof(float));
    if (!qpack || !ppack || !bias) {
        free(qpack);
        free(ppack);
        free(bias);
        return -1;
    }
    for (int64_t q0 = 0; q0 < n; q0 += chunk) {
        const int64_t m = n - q0 < chunk ? n - q0 : chunk, tiles = (m + MR - 1) / MR;
        pack_queries(Q + q0 * d, m, d, shift, qpack);
        for (int64_t g0 = 0; g0 < blocks; g0 += group) {
            const int64_t g1 = g0 + group < blocks ? g0 + group : blocks;
            const uint64_t last_valid =
                pack_vectors(P, c, d, shift, inner_product, g0 * NR, (g1 - g0) * NR, ppack,
                             bias);
            for (int64_t t0 = 0; t0 < tiles; t0++) {
                const int64_t rows = m - t0 * MR < MR ? m - t0 * MR : MR;
                for (int64_t b = g0; b < g1; b++)
                    tile(qpack + t0 * MR * d, ppack + (b - g0) * NR * d, bias + (b - g0) * NR,
                         d, b * NR, b == g1 - 1 ? last_valid : ~0ULL, rows, k,
                         s + (q0 + t0 * MR) * k, position + (q0 + t0 * MR) * k, inner_product);
            }
        }
    }
    for (int64_t i = 0; i < n; i++) {
        float *row_s = s + i * k;
        int64_t *row_position = position + i * k;
        if (inner_product) continue;
        for (int64_t j = 0; j < k; j++) { /* the distances themselves, re-sorted */
            row_s[j] = row_position[j] < 0
                           ? INFINITY
                           : squared_distance(Q + i * d, P + row_position[j] * d, d);
            for (int64_t at = j; at > 0 && row_position[at] >= 0 &&
                                 (row_s[at] < row_s[at - 1] ||
                                  (row_s[at] == row_s[at - 1] &&
                                   row_position[at] < row_position[at - 1]));
                 at--) {
                const float x = row_s[at];
                const int64_t p = row_position[at];
                row_s[at] = row_s[at - 1];
                row_position[at] = row_position[at - 1];
                row_s[at - 1] = x;
                row_position[at - 1] = p;
            }
        }
    }
    free(qpack);
    free(ppack);
    free(bias);
    return 0;
}
