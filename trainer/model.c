/* The forward and backward passes of dtrain's CNN over a model_ops_t. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* Shapes of the network; per-image sizes in floats. */
enum {
    C1 = 32, C2 = 64, K = 5, PAD = 2, FC1 = 1024,
    IMG = MODEL_IMAGE * MODEL_IMAGE,            /* 784 */
    A1 = IMG * C1,                              /* 28x28x32 */
    P1 = (MODEL_IMAGE / 2) * (MODEL_IMAGE / 2) * C1, /* 14x14x32 */
    A2 = (MODEL_IMAGE / 2) * (MODEL_IMAGE / 2) * C2, /* 14x14x64 */
    P2 = (MODEL_IMAGE / 4) * (MODEL_IMAGE / 4) * C2, /* 7x7x64 = 3136 */
};

static nn_conv_t conv1_shape(int n)
{
    return (nn_conv_t){.n = n, .h = MODEL_IMAGE, .w = MODEL_IMAGE, .c = 1, .oc = C1, .k = K, .pad = PAD};
}

static nn_conv_t conv2_shape(int n)
{
    return (nn_conv_t){.n = n, .h = MODEL_IMAGE / 2, .w = MODEL_IMAGE / 2, .c = C1, .oc = C2, .k = K,
                       .pad = PAD};
}

static void *cpu_alloc(size_t bytes)
{
    /* aligned for the BLAS, and touched now rather than in the first step */
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;

    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) {
        return NULL;
    }
    memset(p, 0, rounded);
    return p;
}

static void cpu_copy(void *dst, const void *src, size_t bytes)
{
    if (dst != src) {
        memcpy(dst, src, bytes);
    }
}

const model_ops_t model_cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .conv2d_forward = nn_conv2d_forward,
    .conv2d_backward = nn_conv2d_backward,
    .maxpool2_forward = nn_maxpool2_forward,
    .maxpool2_backward = nn_maxpool2_backward,
    .relu_forward = nn_relu_forward,
    .relu_backward = nn_relu_backward,
    .linear_forward = nn_linear_forward,
    .linear_backward = nn_linear_backward,
    .dropout_forward = nn_dropout_forward,
    .dropout_backward = nn_dropout_backward,
    .softmax_xent = nn_softmax_xent,
    .sgd_step = nn_sgd_step,
    .conv2d_direct_scratch_floats = nn_conv_direct_scratch_floats,
    .conv2d_direct_forward = nn_conv2d_direct_forward,
    .conv2d_direct_backward = nn_conv2d_direct_backward,
    .relu_maxpool2_forward = nn_relu_maxpool2_forward,
    .relu_maxpool2_backward = nn_relu_maxpool2_backward,
};

/* Floats of a convolution's scratch: the patch matrix, or the direct kernels'
 * padded image and weights; the direct path needs no patch-gradient matrix. */
static size_t col_floats(const model_ops_t *o, const nn_conv_t *s)
{
    return o->conv2d_direct_forward != NULL ? o->conv2d_direct_scratch_floats(s)
                                            : nn_conv_col_floats(s);
}

static size_t dcol_floats(const model_ops_t *o, const nn_conv_t *s)
{
    return o->conv2d_direct_forward != NULL ? 0 : nn_conv_col_floats(s);
}

int model_create(model_t *m, const model_ops_t *ops, int batch)
{
    static const struct { const char *name; size_t weights, biases; } shapes[MODEL_LAYERS] = {
        {"conv1", (size_t)C1 * K * K * 1, C1},
        {"conv2", (size_t)C2 * K * K * C1, C2},
        {"fc1", (size_t)FC1 * P2, FC1},
        {"fc2", (size_t)MODEL_CLASSES * FC1, MODEL_CLASSES},
    };
    const size_t b = (size_t)batch, f = sizeof(float);
    size_t off = 0;

    memset(m, 0, sizeof(*m));
    m->ops = ops;
    m->batch = batch;
    for (int l = 0; l < MODEL_LAYERS; l++) {
        m->layer[l] = (model_layer_t){shapes[l].name, off, shapes[l].weights, shapes[l].biases};
        off += shapes[l].weights + shapes[l].biases;
    }
    m->nparams = off;
    nn_conv_t s1 = conv1_shape(batch), s2 = conv2_shape(batch);
    struct { void **p; size_t bytes; } bufs[] = {
        {(void **)&m->params, off * f}, {(void **)&m->grads, off * f},
        {(void **)&m->momentum, off * f},
        {(void **)&m->x, b * IMG * f}, {(void **)&m->col1, col_floats(ops, &s1) * f},
        {(void **)&m->a1, b * A1 * f}, {(void **)&m->p1, b * P1 * f},
        {(void **)&m->col2, col_floats(ops, &s2) * f}, {(void **)&m->a2, b * A2 * f},
        {(void **)&m->p2, b * P2 * f}, {(void **)&m->h, b * FC1 * f},
        {(void **)&m->hd, b * FC1 * f}, {(void **)&m->mask, b * FC1 * f},
        {(void **)&m->logits, b * MODEL_CLASSES * f},
        {(void **)&m->dlogits, b * MODEL_CLASSES * f}, {(void **)&m->dhd, b * FC1 * f},
        {(void **)&m->dh, b * FC1 * f}, {(void **)&m->dp2, b * P2 * f},
        {(void **)&m->da2, b * A2 * f}, {(void **)&m->dcol2, dcol_floats(ops, &s2) * f},
        {(void **)&m->dp1, b * P1 * f}, {(void **)&m->da1, b * A1 * f},
        {(void **)&m->idx1, b * P1 * sizeof(int32_t)}, {(void **)&m->idx2, b * P2 * sizeof(int32_t)},
        {(void **)&m->labels, b},
    };
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        *bufs[i].p = ops->alloc(bufs[i].bytes);
        if (*bufs[i].p == NULL) {
            model_destroy(m);
            return -1;
        }
    }
    return 0;
}

void model_destroy(model_t *m)
{
    void *bufs[] = {m->params, m->grads, m->momentum, m->x, m->col1, m->a1, m->p1, m->col2,
                    m->a2, m->p2, m->h, m->hd, m->mask, m->logits, m->dlogits, m->dhd, m->dh,
                    m->dp2, m->da2, m->dcol2, m->dp1, m->da1, m->idx1, m->idx2, m->labels};

    if (m->ops == NULL) {
        return;
    }
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        if (bufs[i] != NULL) {
            m->ops->free(bufs[i]);
        }
    }
    memset(m, 0, sizeof(*m));
}

void model_init_params(const model_t *m, uint64_t seed, float *params_host)
{
    /* fan_in and fan_out of each layer's weights, as Keras counts them */
    static const int fans[MODEL_LAYERS][2] = {
        {K * K * 1, K * K * C1}, {K * K * C1, K * K * C2}, {P2, FC1}, {FC1, MODEL_CLASSES}};
    uint64_t counter = 0;

    for (int l = 0; l < MODEL_LAYERS; l++) {
        const model_layer_t *ly = &m->layer[l];
        float limit = sqrtf(6.0f / (float)(fans[l][0] + fans[l][1]));
        for (size_t i = 0; i < ly->weights; i++) {
            float u = nn_rand_uniform(seed, counter++);
            params_host[ly->offset + i] = (2.0f * u - 1.0f) * limit;
        }
        memset(params_host + ly->offset + ly->weights, 0, ly->biases * sizeof(float));
    }
}

static float *weights(const model_t *m, float *base, int l)
{
    return base + m->layer[l].offset;
}

static float *biases(const model_t *m, float *base, int l)
{
    return base + m->layer[l].offset + m->layer[l].weights;
}

/* Convolution l (with bias) of x into y, directly or by im2col + GEMM. */
static void conv_forward(model_t *m, const nn_conv_t *s, const float *x, int l, float *col,
                         float *y)
{
    const model_ops_t *o = m->ops;

    if (o->conv2d_direct_forward != NULL) {
        o->conv2d_direct_forward(s, x, weights(m, m->params, l), biases(m, m->params, l), col, y);
    } else {
        o->conv2d_forward(s, x, weights(m, m->params, l), biases(m, m->params, l), col, y);
    }
}

/* Gradients of convolution l from dy; dx NULL for the first layer. */
static void conv_backward(model_t *m, const nn_conv_t *s, const float *x, int l, float *col,
                          const float *dy, float *dcol, float *dx)
{
    const model_ops_t *o = m->ops;

    if (o->conv2d_direct_backward != NULL) {
        o->conv2d_direct_backward(s, x, weights(m, m->params, l), dy, weights(m, m->grads, l),
                                  biases(m, m->grads, l), col, dx);
    } else {
        o->conv2d_backward(s, col, weights(m, m->params, l), dy, weights(m, m->grads, l),
                           biases(m, m->grads, l), dcol, dx);
    }
}

/* ReLU in place on a [n][hw][hw][c], then 2x2 max-pool into p. */
static void relu_pool_forward(model_t *m, int n, int hw, int c, float *a, float *p, int32_t *idx)
{
    const model_ops_t *o = m->ops;

    if (o->relu_maxpool2_forward != NULL) {
        o->relu_maxpool2_forward(n, hw, hw, c, a, p, idx);
    } else {
        o->relu_forward((size_t)n * hw * hw * c, a, a);
        o->maxpool2_forward(n, hw, hw, c, a, p, idx);
    }
}

/* da from dp through the pool and the ReLU of relu_pool_forward. */
static void relu_pool_backward(model_t *m, int n, int hw, int c, const float *dp,
                               const int32_t *idx, const float *a, float *da)
{
    const model_ops_t *o = m->ops;

    if (o->relu_maxpool2_backward != NULL) {
        o->relu_maxpool2_backward(n, hw, hw, c, dp, idx, da);
    } else {
        o->maxpool2_backward(n, hw, hw, c, dp, idx, da);
        o->relu_backward((size_t)n * hw * hw * c, a, da, da);
    }
}

void model_forward(model_t *m, int n, const float *x_host, const uint8_t *labels_host, int train,
                   uint64_t dropout_seed, uint64_t dropout_counter, double *loss_p,
                   int *correct_p)
{
    const model_ops_t *o = m->ops;
    nn_conv_t s1 = conv1_shape(n), s2 = conv2_shape(n);
    const size_t b = (size_t)n;

    o->upload(m->x, x_host, b * IMG * sizeof(float));
    o->upload(m->labels, labels_host, b);
    conv_forward(m, &s1, m->x, 0, m->col1, m->a1);
    relu_pool_forward(m, n, MODEL_IMAGE, C1, m->a1, m->p1, m->idx1);
    conv_forward(m, &s2, m->p1, 1, m->col2, m->a2);
    relu_pool_forward(m, n, MODEL_IMAGE / 2, C2, m->a2, m->p2, m->idx2);
    o->linear_forward(n, P2, FC1, m->p2, weights(m, m->params, 2), biases(m, m->params, 2), m->h);
    o->relu_forward(b * FC1, m->h, m->h);
    o->dropout_forward(b * FC1, train ? 0.4f : 0.0f, dropout_seed, dropout_counter, m->h, m->mask,
                       m->hd);
    o->linear_forward(n, FC1, MODEL_CLASSES, m->hd, weights(m, m->params, 3),
                      biases(m, m->params, 3), m->logits);
    *loss_p = o->softmax_xent(n, MODEL_CLASSES, m->logits, m->labels, train ? m->dlogits : NULL,
                              correct_p);
}

int model_backward(model_t *m, int n, model_grad_ready_fn ready, void *ctx)
{
    const model_ops_t *o = m->ops;
    nn_conv_t s1 = conv1_shape(n), s2 = conv2_shape(n);
    const size_t b = (size_t)n;
    int rc;

    o->linear_backward(n, FC1, MODEL_CLASSES, m->hd, weights(m, m->params, 3), m->dlogits,
                       weights(m, m->grads, 3), biases(m, m->grads, 3), m->dhd);
    if ((rc = ready(ctx, 3)) != 0) {
        return rc;
    }
    o->dropout_backward(b * FC1, m->mask, m->dhd, m->dh);
    o->relu_backward(b * FC1, m->h, m->dh, m->dh);
    o->linear_backward(n, P2, FC1, m->p2, weights(m, m->params, 2), m->dh, weights(m, m->grads, 2),
                       biases(m, m->grads, 2), m->dp2);
    if ((rc = ready(ctx, 2)) != 0) {
        return rc;
    }
    relu_pool_backward(m, n, MODEL_IMAGE / 2, C2, m->dp2, m->idx2, m->a2, m->da2);
    conv_backward(m, &s2, m->p1, 1, m->col2, m->da2, m->dcol2, m->dp1);
    if ((rc = ready(ctx, 1)) != 0) {
        return rc;
    }
    relu_pool_backward(m, n, MODEL_IMAGE, C1, m->dp1, m->idx1, m->a1, m->da1);
    conv_backward(m, &s1, m->x, 0, m->col1, m->da1, NULL, NULL);
    return ready(ctx, 0);
}

void model_update_layer(model_t *m, int l, float lr, float momentum, float weight_decay)
{
    const model_layer_t *ly = &m->layer[l];
    size_t bo = ly->offset + ly->weights;

    m->ops->sgd_step(ly->weights, lr, momentum, weight_decay, m->grads + ly->offset,
                     m->momentum + ly->offset, m->params + ly->offset);
    m->ops->sgd_step(ly->biases, lr, momentum, 0.0f, m->grads + bo, m->momentum + bo,
                     m->params + bo);
}

void model_update(model_t *m, float lr, float momentum, float weight_decay)
{
    for (int l = 0; l < MODEL_LAYERS; l++) {
        model_update_layer(m, l, lr, momentum, weight_decay);
    }
}
