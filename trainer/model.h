/* dtrain's network, the model of TensorFlow's layers tutorial: conv 5x5x32 +
 * ReLU + max-pool 2, conv 5x5x64 + ReLU + max-pool 2, dense 1024 + ReLU +
 * dropout 0.4, dense 10, on 28x28x1 images. All parameters live in one array
 * (layer by layer, weights then biases) so checkpoints, broadcasts and the
 * optimizer treat them as one vector; gradients mirror that layout. The layers
 * run through an ops table, the CPU's (kernels/cpu/nn) or the GPU's. */
#ifndef DTRAIN_MODEL_H
#define DTRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "nn.h"

enum { MODEL_LAYERS = 4, MODEL_CLASSES = 10, MODEL_IMAGE = 28 };

/* One device's layer implementations; buffers are that device's memory. */
typedef struct model_ops {
    const char *name;
    void *(*alloc)(size_t bytes);     /* zeroed; NULL when out of memory */
    void (*free)(void *p);
    void (*upload)(void *dst, const void *src_host, size_t bytes);
    void (*download)(void *dst_host, const void *src, size_t bytes);
    void (*conv2d_forward)(const nn_conv_t *s, const float *x, const float *w, const float *b,
                           float *col, float *y);
    void (*conv2d_backward)(const nn_conv_t *s, const float *col, const float *w,
                            const float *dy, float *dw, float *db, float *dcol, float *dx);
    void (*maxpool2_forward)(int n, int h, int w, int c, const float *x, float *y, int32_t *idx);
    void (*maxpool2_backward)(int n, int h, int w, int c, const float *dy, const int32_t *idx,
                              float *dx);
    void (*relu_forward)(size_t count, const float *x, float *y);
    void (*relu_backward)(size_t count, const float *y, const float *dy, float *dx);
    void (*linear_forward)(int n, int in, int out, const float *x, const float *w,
                           const float *b, float *y);
    void (*linear_backward)(int n, int in, int out, const float *x, const float *w,
                            const float *dy, float *dw, float *db, float *dx);
    void (*dropout_forward)(size_t count, float rate, uint64_t seed, uint64_t counter,
                            const float *x, float *mask, float *y);
    void (*dropout_backward)(size_t count, const float *mask, const float *dy, float *dx);
    /* logits and labels in device memory; dlogits may be NULL */
    double (*softmax_xent)(int n, int classes, const float *logits, const uint8_t *labels,
                           float *dlogits, int *correct_p);
    void (*sgd_step)(size_t count, float lr, float momentum, float weight_decay, const float *g,
                     float *v, float *w);
    /* Optional (NULL: the layers above). Convolution without a patch matrix:
     * scratch of conv2d_direct_scratch_floats() floats, backward reads the
     * forward's input; and ReLU + max-pool in one pass, idx -1 where no
     * gradient flows. */
    size_t (*conv2d_direct_scratch_floats)(const nn_conv_t *s);
    void (*conv2d_direct_forward)(const nn_conv_t *s, const float *x, const float *w,
                                  const float *b, float *scratch, float *y);
    void (*conv2d_direct_backward)(const nn_conv_t *s, const float *x, const float *w,
                                   const float *dy, float *dw, float *db, float *scratch,
                                   float *dx);
    void (*relu_maxpool2_forward)(int n, int h, int w, int c, const float *x, float *y,
                                  int32_t *idx);
    void (*relu_maxpool2_backward)(int n, int h, int w, int c, const float *dy,
                                   const int32_t *idx, float *dx);
} model_ops_t;

extern const model_ops_t model_cpu_ops;
/* The GPU's table, or NULL with a reason in *why_p when this build or machine
 * has none. */
const model_ops_t *model_cuda_ops(const char **why_p);

typedef struct model_layer {
    const char *name;   /* "conv1" ... used in tensor names */
    size_t offset;      /* first weight in params/grads */
    size_t weights;     /* weight count; the biases follow */
    size_t biases;
} model_layer_t;

/* Called by backward as soon as a layer's gradients are complete (layer index,
 * last layer first), so they can be reduced while backward goes on. */
typedef int (*model_grad_ready_fn)(void *ctx, int layer);

typedef struct model {
    const model_ops_t *ops;
    int batch;                      /* largest batch the buffers hold */
    model_layer_t layer[MODEL_LAYERS];
    size_t nparams;
    float *params, *grads, *momentum;   /* device memory, nparams each */
    /* activations and their gradients for `batch` images (device memory); with
     * direct convolutions col1 and col2 are their scratch and dcol2 is unused */
    float *x, *col1, *a1, *p1, *col2, *a2, *p2, *h, *hd, *mask, *logits;
    float *dlogits, *dhd, *dh, *dp2, *da2, *dcol2, *dp1, *da1;
    int32_t *idx1, *idx2;
    uint8_t *labels;
} model_t;

/* Allocates parameters and every buffer for batches of up to `batch` images. */
int model_create(model_t *m, const model_ops_t *ops, int batch);
void model_destroy(model_t *m);
/* Glorot-uniform weights (TensorFlow's default), zero biases, into host memory. */
void model_init_params(const model_t *m, uint64_t seed, float *params_host);

/* x_host: n normalised images (n x 28 x 28 floats); labels_host: n labels.
 * Training forward applies dropout with (seed, counter); loss and correct
 * predictions come back through the pointers. */
void model_forward(model_t *m, int n, const float *x_host, const uint8_t *labels_host, int train,
                   uint64_t dropout_seed, uint64_t dropout_counter, double *loss_p,
                   int *correct_p);
/* After a training forward: every gradient, calling ready(ctx, layer) per layer
 * from the last; stops and returns ready's status when it is non-zero. */
int model_backward(model_t *m, int n, model_grad_ready_fn ready, void *ctx);
/* SGD with momentum; weight decay on weights only, not biases. */
void model_update(model_t *m, float lr, float momentum, float weight_decay);
/* The same for layer l alone (the layers' updates are independent). */
void model_update_layer(model_t *m, int l, float lr, float momentum, float weight_decay);

#endif
