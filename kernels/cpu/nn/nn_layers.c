/* The element-wise and small layers of dtrain's CNN (max-pool, ReLU, dropout,
 * softmax cross-entropy, SGD) and the counter-based random numbers they use. */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>

#include "nn.h"
#include "nn_internal.h"

static int thread_count = 1;

void nn_set_threads(int threads)
{
    if (threads > 0) {
        openblas_set_num_threads(threads);
        thread_count = threads < NN_MAX_THREADS ? threads : NN_MAX_THREADS;
    }
}

int nn_threads(void)
{
    return thread_count;
}

typedef struct share {
    nn_share_fn fn;
    void *ctx;
    int t, lo, hi;
} share_t;

static void *share_main(void *arg)
{
    share_t *sh = arg;

    sh->fn(sh->ctx, sh->t, sh->lo, sh->hi);
    return NULL;
}

void nn_parallel_run(int items, nn_share_fn fn, void *ctx)
{
    pthread_t th[NN_MAX_THREADS];
    share_t sh[NN_MAX_THREADS];
    int started[NN_MAX_THREADS] = {0};
    int threads = thread_count < items ? thread_count : items;

    for (int t = 0; t < threads; t++) {
        sh[t] = (share_t){fn, ctx, t, (int)((long)items * t / threads),
                          (int)((long)items * (t + 1) / threads)};
    }
    for (int t = 1; t < threads; t++) {
        started[t] = pthread_create(&th[t], NULL, share_main, &sh[t]) == 0;
    }
    if (threads > 0) {
        share_main(&sh[0]);
    }
    for (int t = 1; t < threads; t++) {
        if (started[t]) {
            pthread_join(th[t], NULL);
        } else {
            share_main(&sh[t]);
        }
    }
}

static int isa_cap = NN_ISA_AVX512;

int nn_set_isa(int max_isa)
{
    int old = isa_cap;

    isa_cap = max_isa;
    return old;
}

int nn_isa(void)
{
    static int cpu = -1;

    if (cpu < 0) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_cpu_init();
        cpu = !__builtin_cpu_supports("fma")       ? NN_ISA_PLAIN
              : __builtin_cpu_supports("avx512f") ? NN_ISA_AVX512
              : __builtin_cpu_supports("avx2")    ? NN_ISA_AVX2
                                                  : NN_ISA_PLAIN;
#else
        cpu = NN_ISA_PLAIN;
#endif
    }
    return cpu < isa_cap ? cpu : isa_cap;
}

const char *nn_kernels_config(void)
{
    static char buf[128];
    static const char *conv[] = {"plain loops", "AVX2+FMA", "AVX-512"};
    int isa = nn_isa();

    snprintf(buf, sizeof(buf), "direct convolutions: %s; dense layers: %s; %d thread%s",
             conv[isa], isa >= NN_ISA_AVX512 ? "AVX-512 tiles" : "BLAS", thread_count,
             thread_count > 1 ? "s" : "");
    return buf;
}

const char *nn_blas_config(void)
{
    return openblas_get_config();
}

uint64_t nn_rand_u64(uint64_t seed, uint64_t counter)
{
    /* splitmix64 of a seed-dependent stream position */
    uint64_t z = seed * 0xd1342543de82ef95ull + counter * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float nn_rand_uniform(uint64_t seed, uint64_t counter)
{
    return (float)(nn_rand_u64(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

void nn_maxpool2_forward(int n, int h, int w, int c, const float *x, float *y, int32_t *idx)
{
    const int oh_n = h / 2, ow_n = w / 2;
    size_t o = 0;

    for (int b = 0; b < n; b++) {
        for (int oh = 0; oh < oh_n; oh++) {
            for (int ow = 0; ow < ow_n; ow++) {
                /* offsets of the window's four pixels; the first maximum wins ties */
                size_t p00 = (((size_t)b * h + 2 * oh) * w + 2 * ow) * c;
                size_t p01 = p00 + c, p10 = p00 + (size_t)w * c, p11 = p10 + c;
                for (int ch = 0; ch < c; ch++, o++) {
                    size_t best = p00 + ch;
                    if (x[p01 + ch] > x[best]) {
                        best = p01 + ch;
                    }
                    if (x[p10 + ch] > x[best]) {
                        best = p10 + ch;
                    }
                    if (x[p11 + ch] > x[best]) {
                        best = p11 + ch;
                    }
                    y[o] = x[best];
                    idx[o] = (int32_t)best;
                }
            }
        }
    }
}

void nn_maxpool2_backward(int n, int h, int w, int c, const float *dy, const int32_t *idx,
                          float *dx)
{
    const size_t out = (size_t)n * (h / 2) * (w / 2) * c;

    memset(dx, 0, (size_t)n * h * w * c * sizeof(float));
    for (size_t o = 0; o < out; o++) {
        dx[idx[o]] += dy[o];
    }
}

void nn_relu_maxpool2_forward(int n, int h, int w, int c, const float *restrict x,
                              float *restrict y, int32_t *restrict idx)
{
    const int oh_n = h / 2, ow_n = w / 2;
    size_t o = 0;

    for (int b = 0; b < n; b++) {
        for (int oh = 0; oh < oh_n; oh++) {
            for (int ow = 0; ow < ow_n; ow++, o += (size_t)c) {
                const size_t p00 = (((size_t)b * h + 2 * oh) * w + 2 * ow) * c;
                const float *x00 = x + p00, *x01 = x00 + c, *x10 = x00 + (size_t)w * c,
                            *x11 = x10 + c;
                /* branch-free over the channels, so it vectorizes; the first
                 * maximum wins ties, as in nn_maxpool2_forward */
                for (int ch = 0; ch < c; ch++) {
                    float m = x00[ch];
                    int32_t i = (int32_t)p00 + ch;
                    i = x01[ch] > m ? (int32_t)(p00 + (size_t)c) + ch : i;
                    m = x01[ch] > m ? x01[ch] : m;
                    i = x10[ch] > m ? (int32_t)(p00 + (size_t)w * c) + ch : i;
                    m = x10[ch] > m ? x10[ch] : m;
                    i = x11[ch] > m ? (int32_t)(p00 + (size_t)(w + 1) * c) + ch : i;
                    m = x11[ch] > m ? x11[ch] : m;
                    y[o + ch] = m > 0.0f ? m : 0.0f;
                    idx[o + ch] = m > 0.0f ? i : -1;
                }
            }
        }
    }
}

void nn_relu_maxpool2_backward(int n, int h, int w, int c, const float *restrict dy,
                               const int32_t *restrict idx, float *restrict dx)
{
    const int oh_n = h / 2, ow_n = w / 2;
    size_t o = 0;

    for (int b = 0; b < n; b++) {
        for (int oh = 0; oh < oh_n; oh++) {
            for (int ow = 0; ow < ow_n; ow++, o += (size_t)c) {
                const size_t p00 = (((size_t)b * h + 2 * oh) * w + 2 * ow) * c;
                const int32_t i00 = (int32_t)p00, i01 = i00 + c, i10 = i00 + w * c,
                              i11 = i10 + c;
                float *d00 = dx + p00, *d01 = d00 + c, *d10 = d00 + (size_t)w * c,
                      *d11 = d10 + c;
                /* every element of the window written: no separate zeroing pass */
                for (int ch = 0; ch < c; ch++) {
                    const float g = dy[o + ch];
                    const int32_t i = idx[o + ch];
                    d00[ch] = i == i00 + ch ? g : 0.0f;
                    d01[ch] = i == i01 + ch ? g : 0.0f;
                    d10[ch] = i == i10 + ch ? g : 0.0f;
                    d11[ch] = i == i11 + ch ? g : 0.0f;
                }
            }
        }
    }
}

void nn_relu_forward(size_t count, const float *x, float *y)
{
    for (size_t i = 0; i < count; i++) {
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    }
}

void nn_relu_backward(size_t count, const float *y, const float *dy, float *dx)
{
    for (size_t i = 0; i < count; i++) {
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

void nn_dropout_forward(size_t count, float rate, uint64_t seed, uint64_t counter,
                        const float *x, float *mask, float *y)
{
    const float scale = rate < 1.0f ? 1.0f / (1.0f - rate) : 0.0f;

    for (size_t i = 0; i < count; i++) {
        float m = rate <= 0.0f ? 1.0f : (nn_rand_uniform(seed, counter + i) >= rate ? scale : 0.0f);
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

void nn_dropout_backward(size_t count, const float *mask, const float *dy, float *dx)
{
    for (size_t i = 0; i < count; i++) {
        dx[i] = dy[i] * mask[i];
    }
}

static int row_argmax(int classes, const float *row)
{
    int best = 0;

    for (int j = 1; j < classes; j++) {
        if (row[j] > row[best]) {
            best = j;
        }
    }
    return best;
}

void nn_argmax(int n, int classes, const float *logits, uint8_t *pred)
{
    for (int i = 0; i < n; i++) {
        pred[i] = (uint8_t)row_argmax(classes, logits + (size_t)i * classes);
    }
}

double nn_softmax_xent(int n, int classes, const float *logits, const uint8_t *labels,
                       float *dlogits, int *correct_p)
{
    double loss = 0.0;
    int correct = 0;

    for (int i = 0; i < n; i++) {
        const float *row = logits + (size_t)i * classes;
        int best = row_argmax(classes, row);
        double max = row[best], sum = 0.0;

        correct += best == labels[i];
        /* shifted by the maximum so exp never overflows */
        for (int j = 0; j < classes; j++) {
            sum += exp((double)row[j] - max);
        }
        double log_sum = log(sum) + max;
        loss += log_sum - row[labels[i]];
        if (dlogits != NULL) {
            float *drow = dlogits + (size_t)i * classes;
            for (int j = 0; j < classes; j++) {
                double p = exp((double)row[j] - log_sum);
                drow[j] = (float)((p - (j == labels[i])) / n);
            }
        }
    }
    if (correct_p != NULL) {
        *correct_p = correct;
    }
    return n > 0 ? loss / n : 0.0;
}

void nn_sgd_step(size_t count, float lr, float momentum, float weight_decay, const float *g,
                 float *v, float *w)
{
    for (size_t i = 0; i < count; i++) {
        float d = g[i] + weight_decay * w[i];
        v[i] = momentum * v[i] + d;
        w[i] -= lr * v[i];
    }
}
