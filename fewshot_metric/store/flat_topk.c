/* Exact flat search in one pass: the products of queries and vectors and the running top-k
 * of each query, fused, so no [queries, vectors] matrix is ever written and read back.
 * Loaded with ctypes by fewshot_metric/store/flat_kernel.py, which splits the queries over
 * threads (one call each). On CPUs with AVX512-VNNI, int8 products screen the vectors first
 * and only those that could make the top-k are scored in float32 (see "Screening" below):
 * the same answers, to the bit, up to 3x faster (benchmarks/store_bench.py).
 *
 * Ranking: score(q, p) = q . p for inner product. For squared L2, score = q' . p' - ||p'||^2/2
 * with q' = q - shift and p' = p - shift, shift a centre of the vectors given by the caller
 * (distances do not change under a shift, and centring keeps the float32 rounding of the
 * expansion at the scale of the data's spread rather than of its distance from the origin):
 * the nearest vector has the largest score. The k distances returned are then computed
 * directly, sum((q - p)^2), and re-sorted.
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

/* The first min(left, 16) lanes of a 16-float register: what is left of a row of floats. */
static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? 0xFFFF : (__mmask16)((1U << left) - 1);
}

/* The real rows of the last block of NR when rows first .. first + count (a whole number of
 * blocks) are packed from c rows: one bit each. */
static inline uint64_t last_block_mask(int64_t c, int64_t first, int64_t count) {
    const int64_t real = c - (first + count - NR);
    return real >= NR ? ~0ULL : (1ULL << real) - 1;
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

/* -||p - shift||^2 / 2 for one vector p [d] (shift NULL: none): the bias of its squared-L2
 * score, summed in 16 lanes then reduced in a fixed order. One function (never inlined, so
 * compiled once) for packing and for re-checking screened candidates, whose scores must
 * equal the packed ones to the bit. */
__attribute__((noinline, target("avx512f"))) static float centred_bias(const float *p,
                                                                      const float *shift,
                                                                      int64_t d) {
    __m512 sum = _mm512_setzero_ps();
    for (int64_t t = 0; t < d; t += 16) {
        const __mmask16 m = tail_mask(d - t);
        const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, p + t),
                                       shift ? _mm512_maskz_loadu_ps(m, shift + t)
                                             : _mm512_setzero_ps());
        sum = _mm512_fmadd_ps(x, x, sum);
    }
    return -0.5f * _mm512_reduce_add_ps(sum);
}

/* Packs vectors P[first .. first + count), minus shift [d] (or as they are: shift NULL), into
 * ppack [count / NR][d][NR] and biases (-||p||^2 / 2, or 0 for inner product) into bias
 * [count]; rows past c are zeros. Returns the mask of real rows in the last block. */
static uint64_t pack_vectors(const float *P, int64_t c, int64_t d, const float *shift,
                             int inner_product, int64_t first, int64_t count, float *ppack,
                             float *bias) {
    for (int64_t j = 0; j < count; j++) {
        const int64_t row = first + j;
        float *dst = ppack + (j / NR) * NR * d + j % NR;
        for (int64_t t = 0; t < d; t++)
            dst[t * NR] = row < c ? P[row * d + t] - (shift ? shift[t] : 0.0f) : 0.0f;
        bias[j] = inner_product || row >= c ? 0.0f : centred_bias(P + row * d, shift, d);
    }
    return last_block_mask(c, first, count);
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
        const __mmask16 m = tail_mask(d - t);
        const __m512 diff = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + t),
                                          _mm512_maskz_loadu_ps(m, b + t));
        sum = _mm512_fmadd_ps(diff, diff, sum);
    }
    return _mm512_reduce_add_ps(sum);
}

/* ---- Screening: int8 products with a certified error bound, then exact float32 re-checks.
 *
 * Each centred query q' and vector p' is rounded to int8 codes with its own scale (s = max
 * |x| / 127): q~ = s_q * qc, p~ = s_p * pc. The approximate score a = s_q s_p (qc . pc) + bias
 * comes from VPDPBUSD (64 byte products per instruction against 16 float FMAs). Since
 * q'.p' - q~.p~ = q~.(p' - p~) + (q' - q~).p', |score - a| <= ||q~|| ||p' - p~|| +
 * ||q' - q~|| ||p'|| plus float rounding (of a, of the kernel's float32 score and of the
 * comparisons), all bounded per query and per block of vectors: beta. A vector is a candidate
 * while a + beta reaches the k-th largest a - beta so far; every vector of the exact top-k
 * stays one. Candidates are re-scored exactly as the float32 kernel scores them (same packing,
 * same order of FMAs: the same bits) and taken in position order by the same rules, so the
 * answers equal the float32 kernel's. A query with more candidates than its list holds
 * (vectors closer together than the int8 rounding) is screened again from its final bound,
 * then searched by the float32 kernel; huge, inf or NaN values leave no bound, and their
 * queries go to the float32 kernel at once. */

#define KR 4          /* bytes of one dim group: a 32-bit lane of VPDPBUSD */
#define LIST_START 96 /* candidates a list takes before its first compaction */
#define PROBE 256     /* queries screened before deciding whether screening pays (when all
                         vectors fit one group: with more, it always does) */

int fsm_screen_supported(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
}

/* Rounds x [d] to codes [d4 * KR] (zeros past d) in -127..127 with scale max|x| / 127;
 * returns the scale and sets the norms (in double) of x and of its rounding error
 * x - scale * code, sum(code) and sum(|code|). */
__attribute__((target("avx512f,avx512bw"))) static float quantise(const float *x, int64_t d,
                                                                  int8_t *code, double *norm,
                                                                  double *error, int64_t *sum,
                                                                  int64_t *sum_abs) {
    __m512 top = _mm512_setzero_ps();
    for (int64_t t = 0; t < d; t += 16) {
        const __mmask16 m = tail_mask(d - t);
        top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + t)));
    }
    const float most = _mm512_reduce_max_ps(top), scale = most / 127.0f;
    const __m512 inverse = _mm512_set1_ps(most > 0.0f ? 127.0f / most : 0.0f);
    const __m512d scale_d = _mm512_set1_pd(scale);
    __m512d nn = _mm512_setzero_pd(), ee = _mm512_setzero_pd();
    __m512i total = _mm512_setzero_si512(), total_abs = _mm512_setzero_si512();
    for (int64_t t = 0; t < d; t += 16) {
        const __mmask16 m = tail_mask(d - t);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + t);
        __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(v, inverse)); /* nearest */
        r = _mm512_min_epi32(_mm512_max_epi32(r, _mm512_set1_epi32(-127)),
                             _mm512_set1_epi32(127));
        _mm512_mask_cvtepi32_storeu_epi8(code + t, m, r);
        total = _mm512_add_epi32(total, r);
        total_abs = _mm512_add_epi32(total_abs, _mm512_abs_epi32(r));
        for (int h = 0; h < 2; h++) {
            const __m512d vd = _mm512_cvtps_pd(
                h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))
                  : _mm512_castps512_ps256(v));
            const __m512d rd = _mm512_cvtepi32_pd(h ? _mm512_extracti64x4_epi64(r, 1)
                                                    : _mm512_castsi512_si256(r));
            const __m512d e = _mm512_fnmadd_pd(scale_d, rd, vd); /* exact in double */
            nn = _mm512_fmadd_pd(vd, vd, nn);
            ee = _mm512_fmadd_pd(e, e, ee);
        }
    }
    for (int64_t t = d; t % KR; t++) code[t] = 0;
    *norm = sqrt(_mm512_reduce_add_pd(nn));
    *error = sqrt(_mm512_reduce_add_pd(ee));
    *sum = _mm512_reduce_add_epi32(total);
    *sum_abs = _mm512_reduce_add_epi32(total_abs);
    return scale;
}

/* Rounded up by 1e-5 relative: covers the float rounding of the bound's own arithmetic. */
static float up(double x) { return (float)(x * (1.0 + 1e-5)); }

/* Vectors P[first .. first + count) minus shift, for screening: codes [count / NR][d4][NR][KR]
 * (dims past d zero), scale [count], offset [count] = 128 * scale * sum(code) (queries are
 * stored as code + 128, unsigned), bias [count] (as pack_vectors), and per block of NR
 * bounds [4]: the largest ||p' - p~||, ||p'||, scale * sum(|code|) and |bias|. Rows past c
 * are zeros. x [d], code [d4 * KR]: scratch. Returns the mask of real rows in the last
 * block. */
static uint64_t screen_pack_vectors(const float *P, int64_t c, int64_t d, const float *shift,
                                    int inner_product, int64_t first, int64_t count,
                                    int8_t *codes, float *scale, float *offset, float *bias,
                                    float *bounds, float *x, int8_t *code) {
    const int64_t d4 = (d + KR - 1) / KR;
    for (int64_t b = 0; b < count / NR; b++)
        for (int i = 0; i < 4; i++) bounds[b * 4 + i] = 0.0f;
    for (int64_t j = 0; j < count; j++) {
        const int64_t row = first + j;
        int8_t *dst = codes + (j / NR) * d4 * NR * KR + (j % NR) * KR;
        float *bound = bounds + (j / NR) * 4;
        if (row >= c) {
            for (int64_t t = 0; t < d4; t++) __builtin_memset(dst + t * NR * KR, 0, KR);
            scale[j] = offset[j] = bias[j] = 0.0f;
            continue;
        }
        for (int64_t t = 0; t < d; t++) x[t] = P[row * d + t] - (shift ? shift[t] : 0.0f);
        double norm, error;
        int64_t sum, sum_abs;
        scale[j] = quantise(x, d, code, &norm, &error, &sum, &sum_abs);
        for (int64_t t = 0; t < d4; t++) __builtin_memcpy(dst + t * NR * KR, code + t * KR, KR);
        offset[j] = (float)(128.0 * scale[j] * (double)sum);
        bias[j] = inner_product ? 0.0f : centred_bias(P + row * d, shift, d);
        const float terms[4] = {up(error), up(norm), up((double)scale[j] * (double)sum_abs),
                                fabsf(bias[j])};
        for (int i = 0; i < 4; i++) { /* NaN (from a NaN or inf in p): no bound */
            const float term = terms[i] == terms[i] ? terms[i] : INFINITY;
            bound[i] = bound[i] > term ? bound[i] : term;
        }
    }
    return last_block_mask(c, first, count);
}

/* Queries Q [n, d] minus shift, for screening: codes + 128 [tiles][d4][MR][KR] (padding
 * 128: zero), scale [tiles * MR] and the coefficients [tiles][4][MR] that make a query's
 * bound against a block from the block's four bounds (beta = their dot product). Float
 * rounding: of a (about 2^11 roundings of s_q * scale * sum|code|), of the float32 score
 * ((d + 2) u (|bias| + ||q'|| ||p'||), u = 2^-24) and of comparing (8 u of the same). */
static void screen_pack_queries(const float *Q, int64_t n, int64_t tiles, int64_t d,
                                const float *shift, uint8_t *codes, float *scale,
                                float *coefficients, float *x, int8_t *code) {
    const int64_t d4 = (d + KR - 1) / KR;
    const double u = 0x1p-24, rounding = (d + 2) * u / (1.0 - (d + 2) * u) + 8 * u;
    for (int64_t i = 0; i < tiles * MR; i++) {
        uint8_t *dst = codes + (i / MR) * d4 * MR * KR + (i % MR) * KR;
        double norm = 0.0, error = 0.0;
        int64_t sum, sum_abs;
        if (i < n) {
            for (int64_t t = 0; t < d; t++) x[t] = Q[i * d + t] - (shift ? shift[t] : 0.0f);
            scale[i] = quantise(x, d, code, &norm, &error, &sum, &sum_abs);
        } else {
            scale[i] = 0.0f;
            __builtin_memset(code, 0, (size_t)(d4 * KR));
        }
        for (int64_t t = 0; t < d4; t++) { /* code + 128 as unsigned: flip each sign bit */
            uint32_t word;
            __builtin_memcpy(&word, code + t * KR, KR);
            word ^= 0x80808080u;
            __builtin_memcpy(dst + t * MR * KR, &word, KR);
        }
        float *coefficient = coefficients + (i / MR) * 4 * MR + i % MR;
        coefficient[0] = up(norm + error); /* >= ||q~|| */
        coefficient[MR] = up(error + rounding * norm);
        coefficient[2 * MR] = up(2048 * u * scale[i]);
        coefficient[3 * MR] = up(rounding);
    }
}

/* A query's screening state: the k largest lower bounds a - beta so far, descending
 * (lower [k]; -inf while fewer), and its candidates in position order with their upper
 * bounds a + beta (position, upper [cap]; some may have fallen below lower [k - 1] since).
 * count -1: the list overflowed (the lower bounds go on rising: a second pass from them
 * keeps fewer); -2: to be searched in float32. frozen: a second pass, whose lower bounds are
 * final (taking them again would count a vector twice). */
typedef struct {
    float *lower;
    int32_t *position;
    float *upper;
    int64_t count, limit; /* limit: entries before the list is compacted */
    int64_t taken;        /* vectors taken into the list, for the cost estimate */
    int frozen;
} Candidates;

/* Makes room for `more` candidates: past the list's limit, drops those below the k-th lower
 * bound and doubles the limit over what is left (up to cap); marks the query overflowed when
 * over half of cap would still be full. */
static void make_room(Candidates *q, int64_t k, int64_t cap, int64_t more) {
    if (q->count + more <= q->limit) return;
    int64_t kept = 0;
    for (int64_t i = 0; i < q->count; i++)
        if (q->upper[i] >= q->lower[k - 1]) {
            q->position[kept] = q->position[i];
            q->upper[kept++] = q->upper[i];
        }
    q->count = kept;
    if (kept + more > cap / 2) { /* too many vectors within the int8 rounding of each other */
        q->count = q->frozen ? -2 : -1;
        if (q->frozen) q->lower[k - 1] = INFINITY; /* nothing more passes */
    } else if (2 * (kept + more) > q->limit) {
        q->limit = 2 * (kept + more) < cap ? 2 * (kept + more) : cap;
    }
}

/* Screens one query tile q [d4][MR][KR] against one block p [d4][NR][KR] (scale, offset,
 * bias [NR], bounds [4]) into the candidates of the tile's first `rows` queries (scale and
 * coefficients [4][MR] of the tile). Lanes whose a reaches the k-th lower bound minus beta
 * pass: they raise the lower bounds and join the list (compressed stores, in lane order). */
__attribute__((target("avx512f,avx512bw,avx512vnni,fma"))) static void screen_tile(
    const uint8_t *q, const int8_t *p, const float *scale, const float *offset,
    const float *bias, const float *bounds, const float *query_scale,
    const float *coefficients, int64_t d4, int64_t base, uint64_t valid, int64_t rows,
    int64_t k, int64_t cap, Candidates *candidates) {
    __m512i acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_si512();
#pragma GCC unroll 2
    for (int64_t t = 0; t < d4; t++) {
        __m512i vectors[NV];
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++)
            vectors[v] = _mm512_loadu_si512(p + (t * NR + 16 * v) * KR);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            int32_t word;
            __builtin_memcpy(&word, q + (t * MR + r) * KR, sizeof word);
            const __m512i x = _mm512_set1_epi32(word);
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], x, vectors[v]);
        }
    }
    __m512 scales[NV], offsets[NV], biases[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) {
        scales[v] = _mm512_loadu_ps(scale + 16 * v);
        offsets[v] = _mm512_loadu_ps(offset + 16 * v);
        biases[v] = _mm512_loadu_ps(bias + 16 * v);
    }
    const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    float betas[MR]; /* the rows' bounds against this block */
    __m256 beta8 = _mm256_mul_ps(_mm256_loadu_ps(coefficients), _mm256_set1_ps(bounds[0]));
#pragma GCC unroll 3
    for (int i = 1; i < 4; i++)
        beta8 = _mm256_fmadd_ps(_mm256_loadu_ps(coefficients + i * MR),
                                _mm256_set1_ps(bounds[i]), beta8);
    /* below float32's normal range rounding is absolute, up to 2^-150 per operation: at
     * most d + 8 of them behind each score, two scores compared */
    beta8 = _mm256_add_ps(beta8, _mm256_set1_ps((float)(4 * d4 + 64) * 0x1p-149f));
    _mm256_storeu_ps(betas, beta8);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        if (r >= rows) break;
        Candidates *row = candidates + r;
        const float beta = betas[r];
        if (!(beta < 1e20f) && row->count != -2) { /* huge, inf or NaN values: no bound */
            row->count = -2;
            row->lower[k - 1] = INFINITY;
        }
        const __m512 qs = _mm512_set1_ps(query_scale[r]);
        __m512 a[NV];
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++)
            a[v] = _mm512_fmadd_ps(
                _mm512_fmsub_ps(_mm512_cvtepi32_ps(acc[r][v]), scales[v], offsets[v]), qs,
                biases[v]);
        const uint64_t pass = valid & lanes_above(a, row->lower[k - 1] - beta, 1);
        if (!pass) continue;
        const __m512 b = _mm512_set1_ps(beta);
        if (!row->frozen && k == 1) { /* the largest lower bound */
            __m512 top = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), (__mmask16)pass, a[0]);
#pragma GCC unroll 2
            for (int v = 1; v < NV; v++)
                top = _mm512_mask_max_ps(top, (__mmask16)(pass >> (16 * v)), top, a[v]);
            const float lower = _mm512_reduce_max_ps(top) - beta;
            if (lower > row->lower[0]) row->lower[0] = lower;
        } else if (!row->frozen) { /* the k largest lower bounds */
            float lowers[NR];
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) _mm512_storeu_ps(lowers + 16 * v, _mm512_sub_ps(a[v], b));
            for (uint64_t left = pass; left; left &= left - 1) {
                const float lower = lowers[__builtin_ctzll(left)];
                if (lower <= row->lower[k - 1]) continue;
                int64_t i = k - 1;
                for (; i > 0 && row->lower[i - 1] < lower; i--) row->lower[i] = row->lower[i - 1];
                row->lower[i] = lower;
            }
        }
        if (row->count < 0) continue;
        make_room(row, k, cap, __builtin_popcountll(pass));
        if (row->count < 0) continue;
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) { /* compressed in registers, stored whole (lists have
                                          16 spare entries) */
            const __mmask16 m = (__mmask16)(pass >> (16 * v));
            _mm512_storeu_ps(row->upper + row->count,
                             _mm512_maskz_compress_ps(m, _mm512_add_ps(a[v], b)));
            _mm512_storeu_si512(
                row->position + row->count,
                _mm512_maskz_compress_epi32(
                    m, _mm512_add_epi32(lanes, _mm512_set1_epi32((int32_t)(base + 16 * v)))));
            row->count += __builtin_popcount(m);
            row->taken += __builtin_popcount(m);
        }
    }
}

#define CHAINS 8 /* exact scores computed side by side: independent FMA chains */

/* The float32 kernel's scores of n pairs (query q[i] [d], vector P[at[i]] [d]) into out [n]:
 * the same values (bias as packed) and the same chain of FMAs as a lane of `tile`, so the
 * same bits; CHAINS pairs at a time. */
__attribute__((target("avx512f,fma"))) static void exact_scores(
    const float *const *q, const int32_t *at, int64_t n, const float *P, int64_t d,
    int inner_product, const float *shift, float *out) {
    for (int64_t i0 = 0; i0 < n; i0 += CHAINS) {
        const float *qs[CHAINS], *ps[CHAINS];
        float score[CHAINS];
#pragma GCC unroll 8
        for (int j = 0; j < CHAINS; j++) {
            const int64_t i = i0 + j < n ? i0 + j : i0; /* past n: a copy of the first */
            qs[j] = q[i];
            ps[j] = P + at[i] * d;
            score[j] = inner_product ? 0.0f : centred_bias(ps[j], shift, d);
        }
        for (int64_t t = 0; t < d; t++) {
            const float sh = shift ? shift[t] : 0.0f;
#pragma GCC unroll 8
            for (int j = 0; j < CHAINS; j++)
                score[j] = __builtin_fmaf(qs[j][t] - sh, ps[j][t] - sh, score[j]);
        }
        for (int j = 0; j < CHAINS && i0 + j < n; j++) out[i0 + j] = score[j];
    }
}

/* Float32 search of queries Q [n, d] into the top-k rows s (scores), position [n, k], which
 * hold -inf, -1 or earlier results. Returns 0, or -1 when memory ran out. */
static int search_float32(const float *Q, int64_t n, const float *P, int64_t c, int64_t d,
                          int inner_product, const float *shift, int64_t k, float *s,
                          int64_t *position, int64_t group_bytes, int64_t chunk_bytes) {
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
    free(qpack);
    free(ppack);
    free(bias);
    return 0;
}

/* Candidate pairs of the queries being finished: query, vector, exact score. */
typedef struct {
    const float **q;
    int32_t *at;
    float *score;
} Pairs;

/* Scores the candidates of rows [m] (m <= MR; queries q [m][d]) exactly and takes them, in
 * position order, into the top-k rows s, position of their output rows out [m]. Returns how
 * many it scored. */
__attribute__((target("avx512f"))) static int64_t finish(
    const Candidates *rows, int64_t m, const float *q, const int64_t *out, const Pairs *pairs,
    const float *P, int64_t d, int inner_product, const float *shift, int64_t k, float *s,
    int64_t *position) {
    int64_t first[MR + 1], n = 0;
    for (int64_t i = 0; i < m; i++) { /* the candidates still above the k-th lower bound */
        first[i] = n;
        const __m512 lower = _mm512_set1_ps(rows[i].lower[k - 1]);
        for (int64_t j = 0; j < rows[i].count; j += 16) {
            const __mmask16 valid = tail_mask(rows[i].count - j);
            const __mmask16 keep = _mm512_mask_cmp_ps_mask(
                valid, _mm512_maskz_loadu_ps(valid, rows[i].upper + j), lower, _CMP_GE_OQ);
            _mm512_mask_compressstoreu_epi32(
                pairs->at + n, keep, _mm512_maskz_loadu_epi32(valid, rows[i].position + j));
            n += __builtin_popcount(keep);
        }
        for (int64_t j = first[i]; j < n; j++) pairs->q[j] = q + i * d;
    }
    first[m] = n;
    exact_scores(pairs->q, pairs->at, n, P, d, inner_product, shift, pairs->score);
    for (int64_t i = 0; i < m; i++) {
        float *row_s = s + out[i] * k;
        int64_t *row_position = position + out[i] * k;
        for (int64_t j = first[i]; j < first[i + 1]; j++)
            if (pairs->score[j] > row_s[k - 1])
                insert(row_s, row_position, k, pairs->score[j], pairs->at[j], inner_product);
    }
    return n;
}

/* One screening call's buffers: a chunk's packed queries, a group's packed vectors, lower
 * bounds [chunk][k], candidate lists [slots][cap] (a tile's worth when all vectors fit one
 * group: its queries are finished before the next tile), output rows [chunk], and the
 * queries left to a second pass (chunk rows) or to float32 (query rows). */
typedef struct {
    uint8_t *qcodes;
    float *qscale, *coefficients;
    int8_t *vcodes;
    float *vscale, *voffset, *vbias, *bounds, *x;
    int8_t *code;
    float *lower, *again_q, *upper;
    int32_t *position;
    int64_t *out_rows, *again, *fallback, agains, fallbacks;
    Candidates *rows;
    Pairs pairs;
    int64_t taken, scored; /* over the rows finished: vectors listed, candidates scored */
} Screen;

/* Screens queries Q [m, d] (m <= the chunk; lower bounds set; frozen: a second pass) against
 * all vectors, then finishes each into its output row of s, position, or lists it in again
 * or fallback. */
static void screen_chunk(Screen *w, const float *Q, int64_t m, int frozen, const float *P,
                         int64_t c, int64_t d, int inner_product, const float *shift, int64_t k,
                         int64_t cap, int64_t group, float *s, int64_t *position) {
    const int64_t d4 = (d + KR - 1) / KR, blocks = (c + NR - 1) / NR, tiles = (m + MR - 1) / MR;
    const int one_group = group >= blocks;
    screen_pack_queries(Q, m, tiles, d, shift, w->qcodes, w->qscale, w->coefficients, w->x,
                        w->code);
    for (int64_t i = 0; i < m; i++) {
        const int64_t slot = one_group ? i % MR : i;
        w->rows[i] = (Candidates){w->lower + i * k, w->position + slot * (cap + 16),
                                  w->upper + slot * (cap + 16), 0,
                                  LIST_START < cap ? LIST_START : cap, 0, frozen};
    }
    for (int64_t g0 = 0; g0 < blocks; g0 += group) {
        const int64_t g1 = g0 + group < blocks ? g0 + group : blocks;
        const uint64_t last_valid =
            screen_pack_vectors(P, c, d, shift, inner_product, g0 * NR, (g1 - g0) * NR,
                                w->vcodes, w->vscale, w->voffset, w->vbias, w->bounds, w->x,
                                w->code);
        for (int64_t t0 = 0; t0 < tiles; t0++) {
            const int64_t rows = m - t0 * MR < MR ? m - t0 * MR : MR;
            for (int64_t b = g0; b < g1; b++) {
                const int64_t at = (b - g0) * NR;
                screen_tile(w->qcodes + t0 * MR * d4 * KR, w->vcodes + at * d4 * KR,
                            w->vscale + at, w->voffset + at, w->vbias + at,
                            w->bounds + (b - g0) * 4, w->qscale + t0 * MR,
                            w->coefficients + t0 * 4 * MR, d4, b * NR,
                            b == g1 - 1 ? last_valid : ~0ULL, rows, k, cap, w->rows + t0 * MR);
            }
            if (g1 < blocks) continue;
            for (int64_t i = t0 * MR; i < t0 * MR + rows; i++) { /* these queries are done */
                w->taken += w->rows[i].taken;
                if (w->rows[i].count == -1) w->again[w->agains++] = i;
                else if (w->rows[i].count < 0) w->fallback[w->fallbacks++] = w->out_rows[i];
            }
            w->scored += finish(w->rows + t0 * MR, rows, Q + t0 * MR * d, w->out_rows + t0 * MR,
                                &w->pairs, P, d, inner_product, shift, k, s, position);
        }
    }
}

/* Searches the queries Q[rows[i]] (i < n) in float32, gathered, and puts their top-k rows
 * back into s, position. */
static int search_fallbacks(const float *Q, const int64_t *rows, int64_t n, const float *P,
                            int64_t c, int64_t d, int inner_product, const float *shift,
                            int64_t k, float *s, int64_t *position, int64_t group_bytes,
                            int64_t chunk_bytes) {
    if (n == 0) return 0;
    float *fq = calloc((size_t)(n * d), sizeof(float)); /* calloc: quiets GCC 12 */
    float *fs = malloc((size_t)(n * k) * sizeof(float));
    int64_t *fp = malloc((size_t)(n * k) * sizeof(int64_t));
    int status = -1;
    if (fq && fs && fp) {
        for (int64_t i = 0; i < n; i++) {
            __builtin_memcpy(fq + i * d, Q + rows[i] * d, (size_t)d * sizeof(float));
            for (int64_t j = 0; j < k; j++) {
                fs[i * k + j] = -INFINITY;
                fp[i * k + j] = -1;
            }
        }
        status = search_float32(fq, n, P, c, d, inner_product, shift, k, fs, fp, group_bytes,
                                chunk_bytes);
        for (int64_t i = 0; status == 0 && i < n; i++)
            for (int64_t j = 0; j < k; j++) {
                s[rows[i] * k + j] = fs[i * k + j];
                position[rows[i] * k + j] = fp[i * k + j];
            }
    }
    free(fq);
    free(fs);
    free(fp);
    return status;
}

/* Whether screening the m queries just finished cost less than float32 would have, by the
 * work each does per query, in cycles of a core that runs two 16-lane FMAs or VPDPBUSDs a
 * cycle: float32 c d / 32; screening c (d / 128 + 1 / 4: the products and each row's bound
 * and compare per block of 48), per vector listed 4 (k = 1: vector code) or 16 (k > 1: its
 * lower bound taken one by one), and per candidate scored d + 60 (scalar FMA chains, eight
 * at a time, its row fetched, its bias); the last two fitted to timings on Omniglot
 * embeddings. Candidates are many where vectors crowd within the int8 rounding of a query's
 * k-th nearest (real embeddings, k = 5), and with few classes the float32 products they
 * replace are few. */
static int screening_pays(const Screen *w, int64_t m, int64_t c, int64_t d, int64_t k) {
    const double listed = k == 1 ? 4.0 : 16.0;
    const double screened = c * ((d + 3) / 4 / 32.0 + 0.25) +
                            (listed * w->taken + (d + 60.0) * w->scored) / m;
    return screened < c * d / 32.0;
}

/* As search_float32 (rows start at -inf, -1), screening with int8 first: candidate lists of
 * `cap` per query; a query whose list overflows is screened again from its final lower
 * bounds, and if it overflows again searched by search_float32; when all vectors fit one
 * group, the queries after the first PROBE go to search_float32 if screening did not pay
 * for those. Adds the number of queries screened twice to counts [0], of those searched in
 * float32 to counts [1]. */
static int search_screened(const float *Q, int64_t n, const float *P, int64_t c, int64_t d,
                           int inner_product, const float *shift, int64_t k, float *s,
                           int64_t *position, int64_t group_bytes, int64_t chunk_bytes,
                           int64_t cap, int64_t *counts) {
    if (n == 0) return 0;
    const int64_t d4 = (d + KR - 1) / KR, blocks = (c + NR - 1) / NR;
    int64_t group = group_bytes / (d4 * KR * NR);
    if (group > blocks) group = blocks;
    if (group < 1) group = 1;
    if (group == blocks && cap < blocks * NR) cap = blocks * NR; /* a tile's lists hold all */
    /* bytes per query: codes, a copy for a second pass, lower bounds, the rest, its list */
    int64_t chunk = chunk_bytes / (d4 * KR + d * 4 + k * 4 + 64 +
                                   (group < blocks) * (cap + 16) * 8);
    chunk -= chunk % MR;
    if (chunk > n) chunk = n;
    if (chunk < MR) chunk = MR;
    const int64_t most = ((chunk + MR - 1) / MR) * MR, slots = group < blocks ? most : MR;
    Screen w = {
        malloc((size_t)(most * d4 * KR)), malloc((size_t)most * sizeof(float)),
        malloc((size_t)(most * 4) * sizeof(float)), malloc((size_t)(group * NR * d4 * KR)),
        malloc((size_t)(group * NR) * sizeof(float)), malloc((size_t)(group * NR) * sizeof(float)),
        malloc((size_t)(group * NR) * sizeof(float)), malloc((size_t)(group * 4) * sizeof(float)),
        malloc((size_t)d * sizeof(float)), malloc((size_t)(d4 * KR)),
        malloc((size_t)(most * k) * sizeof(float)), malloc((size_t)(most * d) * sizeof(float)),
        malloc((size_t)(slots * (cap + 16)) * sizeof(float)),
        malloc((size_t)(slots * (cap + 16)) * sizeof(int32_t)),
        malloc((size_t)most * sizeof(int64_t)), malloc((size_t)most * sizeof(int64_t)),
        malloc((size_t)n * sizeof(int64_t)), 0, 0,
        malloc((size_t)most * sizeof(Candidates)),
        {malloc((size_t)(MR * (cap + 16)) * sizeof(float *)),
         malloc((size_t)(MR * (cap + 16)) * sizeof(int32_t)),
         malloc((size_t)(MR * (cap + 16)) * sizeof(float))},
        0, 0};
    int status = -1;
    if (!w.qcodes || !w.qscale || !w.coefficients || !w.vcodes || !w.vscale || !w.voffset ||
        !w.vbias || !w.bounds || !w.x || !w.code || !w.lower || !w.again_q || !w.upper ||
        !w.position || !w.out_rows || !w.again || !w.fallback || !w.rows || !w.pairs.q ||
        !w.pairs.at || !w.pairs.score)
        goto done;
    const int one_group = group == blocks;
    for (int64_t q0 = 0, m; q0 < n; q0 += m) {
        m = n - q0 < chunk ? n - q0 : chunk;
        if (one_group && q0 == 0 && m > PROBE) m = PROBE; /* then: screen the rest or not */
        for (int64_t i = 0; i < m; i++) {
            w.out_rows[i] = q0 + i;
            for (int64_t j = 0; j < k; j++) w.lower[i * k + j] = -INFINITY;
        }
        w.agains = 0;
        screen_chunk(&w, Q + q0 * d, m, 0, P, c, d, inner_product, shift, k, cap, group, s,
                     position);
        for (int64_t j = 0; j < w.agains; j++) { /* slot j <= again[j]: moved in order */
            const int64_t i = w.again[j];
            __builtin_memmove(w.lower + j * k, w.lower + i * k, (size_t)k * sizeof(float));
            __builtin_memcpy(w.again_q + j * d, Q + (q0 + i) * d, (size_t)d * sizeof(float));
            w.out_rows[j] = q0 + i;
        }
        counts[0] += w.agains;
        if (w.agains)
            screen_chunk(&w, w.again_q, w.agains, 1, P, c, d, inner_product, shift, k, cap,
                         group, s, position);
        if (one_group && q0 == 0 && q0 + m < n && !screening_pays(&w, m, c, d, k)) {
            counts[1] += n - m;
            status = search_float32(Q + m * d, n - m, P, c, d, inner_product, shift, k,
                                    s + m * k, position + m * k, group_bytes, chunk_bytes);
            if (status) goto done;
            break;
        }
    }
    counts[1] += w.fallbacks;
    status = search_fallbacks(Q, w.fallback, w.fallbacks, P, c, d, inner_product, shift, k, s,
                              position, group_bytes, chunk_bytes);
done:
    free(w.qcodes);
    free(w.qscale);
    free(w.coefficients);
    free(w.vcodes);
    free(w.vscale);
    free(w.voffset);
    free(w.vbias);
    free(w.bounds);
    free(w.x);
    free(w.code);
    free(w.lower);
    free(w.again_q);
    free(w.upper);
    free(w.position);
    free(w.out_rows);
    free(w.again);
    free(w.fallback);
    free(w.rows);
    free(w.pairs.q);
    free(w.pairs.at);
    free(w.pairs.score);
    return status;
}

/* Queries Q [n, d] and vectors P [c, d], row-major float32 -> for each query its k nearest
 * vectors, nearest first: out [n, k] squared L2 distances (ascending; +inf where fewer than k
 * vectors), or inner products when inner_product (descending; -inf where fewer), and
 * position [n, k] (row of P; -1 where none). shift [d]: the centre to rank squared L2 around
 * (ignored for inner product). group_bytes: packed vectors per group (about half the L2
 * cache); chunk_bytes: packed queries per chunk (the vectors are packed again for each
 * chunk). screen_cap > 0: screen with int8 first, with candidate lists of that many per query
 * (where the CPU has AVX512-VNNI; the answers are the same), adding to counts [2] the queries
 * screened twice and those searched in float32 after all. Returns 0, or -1 when memory ran
 * out, -2 on a CPU without AVX-512. */
int fsm_search(const float *Q, int64_t n, const float *P, int64_t c, int64_t d,
               int inner_product, const float *shift, int64_t k, float *out, int64_t *position,
               int64_t group_bytes, int64_t chunk_bytes, int64_t screen_cap,
               int64_t *counts) {
    if (!fsm_supported()) return -2;
    float *s = out; /* scores while searching, then distances in place */
    for (int64_t i = 0; i < n * k; i++) {
        s[i] = -INFINITY;
        position[i] = -1;
    }
    if (inner_product) shift = NULL;
    /* int32 sums of d products of at most 255 * 127; int32 positions */
    const int screen = screen_cap > 0 && d <= 65536 && c <= INT32_MAX - NR &&
                       fsm_screen_supported();
    const int status =
        screen ? search_screened(Q, n, P, c, d, inner_product, shift, k, s, position,
                                 group_bytes, chunk_bytes, screen_cap, counts)
               : search_float32(Q, n, P, c, d, inner_product, shift, k, s, position,
                                group_bytes, chunk_bytes);
    if (status) return status;
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
    return 0;
}
