/* The element-wise and small layers of dtrain's CNN (max-pool, ReLU, dropout,
 * softmax cross-entropy, SGD) and the counter-based random numbers they use. */
#include <float.h>
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "nn.h"

void nn_set_threads(int threads)
{
    if (threads > 0) {
        openblas_set_num_threads(threads);
    }
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
