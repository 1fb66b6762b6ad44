/* initbench's probe kernel: the per-piece sums a probed step needs, for every watched
 * float32 tensor of a CPU run, read in place in one call (see initbench/native.py).
 *
 * For each row (a contiguous float32 tensor), in the order given:
 *   - per piece of `piece` elements (the last may be shorter): the sum and the sum of
 *     squares, accumulated in float32 lanes (as torch's float32 reductions do) and
 *     combined in float64, written at out[at + k] and out[squares + at + k] for the
 *     row's k-th piece;
 *   - the `rest` elements after its whole pieces (if any), as float64, at out[rest_at];
 *   - its fraction count, if any, at out[count_at]: for dead_frac the number of units
 *     (dimension 1 of a (batch, units, inner) view) > 0 somewhere; for sat_frac the
 *     number of elements with |x - centre| > threshold, both computed in float32 as
 *     torch does (so the counts equal the torch path's).
 * Single-threaded and deterministic: the same input gives the same bits.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));

enum { N_FIELDS = 10 };
enum { NUMEL, PIECE, PIECES, REST, AT, REST_AT, KIND, COUNT_AT, UNITS, INNER };
enum { NO_COUNT = 0, DEAD = 1, SATURATED = 2 };

static void piece_sums(const float *x, int64_t n, double *sum, double *square) {
    v8f a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        v8f u, w;
        memcpy(&u, x + i, sizeof u);
        memcpy(&w, x + i + 8, sizeof w);
        a0 += u;
        a1 += w;
        b0 += u * u;
        b1 += w * w;
    }
    double s = 0.0, q = 0.0;
    for (int j = 0; j < 8; ++j) {
        s += (double)a0[j] + (double)a1[j];
        q += (double)b0[j] + (double)b1[j];
    }
    for (; i < n; ++i) {
        double v = x[i];
        s += v;
        q += v * v;
    }
    *sum = s;
    *square = q;
}

static int64_t alive_units(const float *x, int64_t numel, int64_t units, int64_t inner,
                           float *peak) {
    int64_t batch = numel / (units * inner), alive = 0;
    for (int64_t u = 0; u < units; ++u) peak[u] = -INFINITY;
    for (int64_t b = 0; b < batch; ++b) {
        const float *row = x + b * units * inner;
        if (inner == 1) {
            for (int64_t u = 0; u < units; ++u) peak[u] = row[u] > peak[u] ? row[u] : peak[u];
            continue;
        }
        for (int64_t u = 0; u < units; ++u)
            for (int64_t s = 0; s < inner; ++s) {
                float v = row[u * inner + s];
                peak[u] = v > peak[u] ? v : peak[u];
            }
    }
    for (int64_t u = 0; u < units; ++u) alive += peak[u] > 0.0f;
    return alive;
}

static int64_t saturated(const float *x, int64_t n, float centre, float threshold) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) count += fabsf(x[i] - centre) > threshold;
    return count;
}

/* Returns 0, or -1 if a work buffer could not be allocated. */
int probe_rows(int64_t n_rows, const int64_t *pointers, const int64_t *fields,
               const double *ranges, int64_t squares, double *out) {
    int64_t most_units = 1;
    for (int64_t r = 0; r < n_rows; ++r)
        if (fields[r * N_FIELDS + KIND] == DEAD && fields[r * N_FIELDS + UNITS] > most_units)
            most_units = fields[r * N_FIELDS + UNITS];
    float *peak = malloc(sizeof(float) * (size_t)most_units);
    if (peak == NULL) return -1;
    for (int64_t r = 0; r < n_rows; ++r) {
        const int64_t *f = fields + r * N_FIELDS;
        const float *x = (const float *)(intptr_t)pointers[r];
        int64_t piece = f[PIECE];
        for (int64_t k = 0; k < f[PIECES]; ++k) {
            int64_t start = k * piece, stop = start + piece < f[NUMEL] ? start + piece : f[NUMEL];
            piece_sums(x + start, stop - start, out + f[AT] + k, out + squares + f[AT] + k);
        }
        for (int64_t k = 0; k < f[REST]; ++k) out[f[REST_AT] + k] = x[f[PIECES] * piece + k];
        if (f[KIND] == DEAD)
            out[f[COUNT_AT]] = (double)alive_units(x, f[NUMEL], f[UNITS], f[INNER], peak);
        else if (f[KIND] == SATURATED)
            out[f[COUNT_AT]] =
                (double)saturated(x, f[NUMEL], (float)ranges[2 * r], (float)ranges[2 * r + 1]);
    }
    free(peak);
    return 0;
}
