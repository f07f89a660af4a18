/* dtrain's GPU layers (kernels/cuda) against the CPU layers on the same random
 * inputs: every output within 1e-4 relative (GEMM summation order differs);
 * max-pool indices, ReLU, dropout masks and the SGD update exactly. Skips with a
 * message where this build has no CUDA or the machine no GPU. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nn.h"
#ifdef DC_HAVE_NN_CUDA
#include "nn_cuda.h"
#endif

#define REL_TOL 1e-4

#ifdef DC_HAVE_NN_CUDA
static uint64_t counter;

static float *host_rand(size_t n)
{
    float *p = malloc(n * sizeof(float));

    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        p[i] = 2.0f * nn_rand_uniform(99, counter++) - 1.0f;
    }
    return p;
}

static float *dev_copy(const float *h, size_t n)
{
    float *d = nn_cuda_alloc(n * sizeof(float));

    assert_non_null(d);
    nn_cuda_upload(d, h, n * sizeof(float));
    return d;
}

/* device buffer d against host reference ref */
static void expect_close(const char *what, const float *d, const float *ref, size_t n)
{
    float *h = malloc(n * sizeof(float));

    assert_non_null(h);
    nn_cuda_download(h, d, n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        double tol = REL_TOL * fmax(1.0, fabs(ref[i]));
        if (fabs((double)h[i] - ref[i]) > tol) {
            fail_msg("%s[%zu]: gpu %.7f, cpu %.7f", what, i, (double)h[i], (double)ref[i]);
        }
    }
    free(h);
}

static void expect_equal(const char *what, const void *d, const void *ref, size_t bytes)
{
    void *h = malloc(bytes);

    assert_non_null(h);
    nn_cuda_download(h, d, bytes);
    if (memcmp(h, ref, bytes) != 0) {
        fail_msg("%s: gpu and cpu differ", what);
    }
    free(h);
}

static void test_conv(void **state)
{
    (void)state;
    nn_conv_t s = {.n = 3, .h = 14, .w = 14, .c = 8, .oc = 16, .k = 5, .pad = 2};
    size_t nx = (size_t)s.n * s.h * s.w * s.c, nw = (size_t)s.oc * s.k * s.k * s.c;
    size_t ny = (size_t)s.n * nn_conv_out_h(&s) * nn_conv_out_w(&s) * s.oc, ncol = nn_conv_col_floats(&s);
    float *x = host_rand(nx), *w = host_rand(nw), *b = host_rand((size_t)s.oc), *dy = host_rand(ny);
    float *col = malloc(ncol * 4), *y = malloc(ny * 4), *dw = malloc(nw * 4), *db = malloc(s.oc * 4);
    float *dcol = malloc(ncol * 4), *dx = malloc(nx * 4);
    nn_conv2d_forward(&s, x, w, b, col, y);
    nn_conv2d_backward(&s, col, w, dy, dw, db, dcol, dx);

    float *gx = dev_copy(x, nx), *gw = dev_copy(w, nw), *gb = dev_copy(b, s.oc), *gdy = dev_copy(dy, ny);
    float *gcol = nn_cuda_alloc(ncol * 4), *gy = nn_cuda_alloc(ny * 4), *gdw = nn_cuda_alloc(nw * 4);
    float *gdb = nn_cuda_alloc(s.oc * 4), *gdcol = nn_cuda_alloc(ncol * 4), *gdx = nn_cuda_alloc(nx * 4);
    nn_cuda_conv2d_forward(&s, gx, gw, gb, gcol, gy);
    nn_cuda_conv2d_backward(&s, gcol, gw, gdy, gdw, gdb, gdcol, gdx);
    expect_equal("conv im2col", gcol, col, ncol * 4);
    expect_close("conv y", gy, y, ny);
    expect_close("conv dw", gdw, dw, nw);
    expect_close("conv db", gdb, db, (size_t)s.oc);
    expect_close("conv dx", gdx, dx, nx);

    /* linear on the same buffers */
    int n = 5, in = 200, out = 30;
    nn_linear_forward(n, in, out, x, w, b, y);
    nn_linear_backward(n, in, out, x, w, y, dw, db, dx);
    nn_cuda_linear_forward(n, in, out, gx, gw, gb, gy);
    nn_cuda_linear_backward(n, in, out, gx, gw, gy, gdw, gdb, gdx);
    expect_close("linear y", gy, y, (size_t)n * out);
    expect_close("linear dw", gdw, dw, (size_t)out * in);
    expect_close("linear db", gdb, db, (size_t)out);
    expect_close("linear dx", gdx, dx, (size_t)n * in);

    void *all[] = {x, w, b, dy, col, y, dw, db, dcol, dx};
    for (size_t i = 0; i < 10; i++) free(all[i]);
    void *gall[] = {gx, gw, gb, gdy, gcol, gy, gdw, gdb, gdcol, gdx};
    for (size_t i = 0; i < 10; i++) nn_cuda_free(gall[i]);
}

static void test_elementwise(void **state)
{
    (void)state;
    int n = 2, h = 6, w = 8, c = 5;
    size_t nx = (size_t)n * h * w * c, ny = nx / 4;
    float *x = host_rand(nx), *dy = host_rand(ny), *y = malloc(ny * 4), *dx = malloc(nx * 4);
    int32_t *idx = malloc(ny * 4);
    float *gx = dev_copy(x, nx), *gdy = dev_copy(dy, ny), *gy = nn_cuda_alloc(ny * 4);
    float *gdx = nn_cuda_alloc(nx * 4);
    int32_t *gidx = nn_cuda_alloc(ny * 4);

    nn_maxpool2_forward(n, h, w, c, x, y, idx);
    nn_maxpool2_backward(n, h, w, c, dy, idx, dx);
    nn_cuda_maxpool2_forward(n, h, w, c, gx, gy, gidx);
    nn_cuda_maxpool2_backward(n, h, w, c, gdy, gidx, gdx);
    expect_equal("maxpool y", gy, y, ny * 4);
    expect_equal("maxpool idx", gidx, idx, ny * 4);
    expect_equal("maxpool dx", gdx, dx, nx * 4);

    float *r = malloc(nx * 4), *dr = malloc(nx * 4), *gr = nn_cuda_alloc(nx * 4);
    float *gdr = nn_cuda_alloc(nx * 4), *gdx2 = dev_copy(x, nx);
    nn_relu_forward(nx, x, r);
    nn_relu_backward(nx, r, x, dr);
    nn_cuda_relu_forward(nx, gx, gr);
    nn_cuda_relu_backward(nx, gr, gdx2, gdr);
    expect_equal("relu y", gr, r, nx * 4);
    expect_equal("relu dx", gdr, dr, nx * 4);

    /* dropout: the same counter-based masks */
    nn_dropout_forward(nx, 0.4f, 5, 77, x, r, dr);
    nn_cuda_dropout_forward(nx, 0.4f, 5, 77, gx, gr, gdr);
    expect_equal("dropout mask", gr, r, nx * 4);
    expect_equal("dropout y", gdr, dr, nx * 4);

    /* SGD: the same float operations */
    float *g = host_rand(nx), *v = host_rand(nx), *wt = host_rand(nx);
    float *gg = dev_copy(g, nx), *gv = dev_copy(v, nx), *gwt = dev_copy(wt, nx);
    nn_sgd_step(nx, 0.05f, 0.9f, 5e-4f, g, v, wt);
    nn_cuda_sgd_step(nx, 0.05f, 0.9f, 5e-4f, gg, gv, gwt);
    expect_equal("sgd v", gv, v, nx * 4);
    expect_equal("sgd w", gwt, wt, nx * 4);

    /* softmax cross-entropy */
    int rows = 7, classes = 10;
    uint8_t labels[7] = {1, 2, 3, 4, 5, 6, 9};
    float *dl = malloc((size_t)rows * classes * 4), *gdl = nn_cuda_alloc((size_t)rows * classes * 4);
    uint8_t *glab = nn_cuda_alloc(sizeof(labels));
    nn_cuda_upload(glab, labels, sizeof(labels));
    int ok_c, ok_g;
    double lc = nn_softmax_xent(rows, classes, x, labels, dl, &ok_c);
    double lg = nn_cuda_softmax_xent(rows, classes, gx, glab, gdl, &ok_g);
    assert_true(fabs(lc - lg) < 1e-6 * fmax(1.0, fabs(lc)));
    assert_int_equal(ok_c, ok_g);
    expect_close("xent dlogits", gdl, dl, (size_t)rows * classes);

    void *all[] = {x, dy, y, dx, idx, r, dr, g, v, wt, dl};
    for (size_t i = 0; i < 11; i++) free(all[i]);
    void *gall[] = {gx, gdy, gy, gdx, gidx, gr, gdr, gdx2, gg, gv, gwt, gdl, glab};
    for (size_t i = 0; i < 13; i++) nn_cuda_free(gall[i]);
}

static int need_gpu(void **state)
{
    (void)state;
    return 0;
}
#endif

int main(void)
{
#ifndef DC_HAVE_NN_CUDA
    printf("test_nn_cuda: SKIPPED: this build has no CUDA layers (no CUDA toolkit found at "
           "configure time, or -DDCOMM_WITH_CUDA=OFF)\n");
    return 0;
#else
    char why[256];
    if (!nn_cuda_available(why, sizeof(why))) {
        printf("test_nn_cuda: SKIPPED: %s\n", why);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_elementwise),
    };
    nn_set_threads(1);
    return cmocka_run_group_tests(tests, need_gpu, NULL);
#endif
}
