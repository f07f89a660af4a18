/* dtrain's CPU layers: forward passes against direct loops written from the
 * definitions, backward passes against central finite differences of a scalar
 * loss L = sum(y * r) (so dL/dy = r), dropout's statistics and determinism, and
 * the SGD update against its formula. */
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

static uint64_t rng_counter;

static float urand(float lo, float hi)
{
    return lo + (hi - lo) * nn_rand_uniform(12345, rng_counter++);
}

static float *rand_buf(size_t n, float lo, float hi)
{
    float *p = malloc((n ? n : 1) * sizeof(float));

    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        p[i] = urand(lo, hi);
    }
    return p;
}

static float *zero_buf(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));

    assert_non_null(p);
    return p;
}

static double dot(size_t n, const float *a, const float *b)
{
    double s = 0.0;

    for (size_t i = 0; i < n; i++) {
        s += (double)a[i] * b[i];
    }
    return s;
}

/* Analytic gradient g against (L(p+eps) - L(p-eps)) / 2eps for `checks` entries
 * of p spread over its length. */
typedef double (*loss_fn_t)(void *ctx);

static void grad_check(const char *what, float *p, const float *g, size_t n, size_t checks,
                       loss_fn_t loss, void *ctx)
{
    const float eps = 1e-2f;
    size_t step = n / checks ? n / checks : 1;

    for (size_t i = 0; i < n; i += step) {
        float saved = p[i];
        p[i] = saved + eps;
        double up = loss(ctx);
        p[i] = saved - eps;
        double down = loss(ctx);
        p[i] = saved;
        double num = (up - down) / (2.0 * eps);
        double tol = 2e-2 * fmax(1.0, fabs(num));
        if (fabs(num - g[i]) > tol) {
            fail_msg("%s[%zu]: analytic %.6f, numeric %.6f", what, i, (double)g[i], num);
        }
    }
}

/* ---- convolution --------------------------------------------------------------- */

typedef struct conv_case {
    nn_conv_t s;
    float *x, *w, *b, *col, *y, *r;
} conv_case_t;

static void conv_naive(const nn_conv_t *s, const float *x, const float *w, const float *b,
                       float *y)
{
    int oh_n = nn_conv_out_h(s), ow_n = nn_conv_out_w(s);

    for (int n = 0; n < s->n; n++)
        for (int oh = 0; oh < oh_n; oh++)
            for (int ow = 0; ow < ow_n; ow++)
                for (int o = 0; o < s->oc; o++) {
                    double acc = b[o];
                    for (int kh = 0; kh < s->k; kh++)
                        for (int kw = 0; kw < s->k; kw++)
                            for (int c = 0; c < s->c; c++) {
                                int ih = oh - s->pad + kh, iw = ow - s->pad + kw;
                                if (ih < 0 || ih >= s->h || iw < 0 || iw >= s->w) {
                                    continue;
                                }
                                acc += (double)x[((n * s->h + ih) * s->w + iw) * s->c + c] *
                                       w[((o * s->k + kh) * s->k + kw) * s->c + c];
                            }
                    y[((n * oh_n + oh) * ow_n + ow) * s->oc + o] = (float)acc;
                }
}

static size_t conv_in(const nn_conv_t *s)
{
    return (size_t)s->n * s->h * s->w * s->c;
}

static size_t conv_out(const nn_conv_t *s)
{
    return (size_t)s->n * nn_conv_out_h(s) * nn_conv_out_w(s) * s->oc;
}

static size_t conv_wn(const nn_conv_t *s)
{
    return (size_t)s->oc * s->k * s->k * s->c;
}

static double conv_loss(void *ctx)
{
    conv_case_t *cc = ctx;

    nn_conv2d_forward(&cc->s, cc->x, cc->w, cc->b, cc->col, cc->y);
    return dot(conv_out(&cc->s), cc->y, cc->r);
}

static const nn_conv_t conv_shapes[] = {
    {.n = 2, .h = 7, .w = 6, .c = 1, .oc = 3, .k = 5, .pad = 2},
    {.n = 1, .h = 5, .w = 5, .c = 3, .oc = 4, .k = 3, .pad = 1},
    {.n = 3, .h = 6, .w = 8, .c = 2, .oc = 5, .k = 3, .pad = 0},
    {.n = 2, .h = 4, .w = 4, .c = 4, .oc = 2, .k = 5, .pad = 2}, /* kernel wider than image half */
};

static void conv_setup(conv_case_t *cc, const nn_conv_t *s)
{
    cc->s = *s;
    cc->x = rand_buf(conv_in(s), -1, 1);
    cc->w = rand_buf(conv_wn(s), -0.5f, 0.5f);
    cc->b = rand_buf((size_t)s->oc, -0.5f, 0.5f);
    cc->col = zero_buf(nn_conv_col_floats(s));
    cc->y = zero_buf(conv_out(s));
    cc->r = rand_buf(conv_out(s), -1, 1);
}

static void conv_free(conv_case_t *cc)
{
    free(cc->x), free(cc->w), free(cc->b), free(cc->col), free(cc->y), free(cc->r);
}

static void test_conv_forward(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof(conv_shapes) / sizeof(conv_shapes[0]); t++) {
        conv_case_t cc;
        conv_setup(&cc, &conv_shapes[t]);
        float *ref = zero_buf(conv_out(&cc.s));
        nn_conv2d_forward(&cc.s, cc.x, cc.w, cc.b, cc.col, cc.y);
        conv_naive(&cc.s, cc.x, cc.w, cc.b, ref);
        for (size_t i = 0; i < conv_out(&cc.s); i++) {
            if (fabsf(cc.y[i] - ref[i]) > 1e-4f) {
                fail_msg("shape %zu: y[%zu] = %f, reference %f", t, i, cc.y[i], ref[i]);
            }
        }
        free(ref);
        conv_free(&cc);
    }
}

static void test_conv_backward(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof(conv_shapes) / sizeof(conv_shapes[0]); t++) {
        conv_case_t cc;
        conv_setup(&cc, &conv_shapes[t]);
        const nn_conv_t *s = &cc.s;
        float *dw = zero_buf(conv_wn(s)), *db = zero_buf((size_t)s->oc);
        float *dcol = zero_buf(nn_conv_col_floats(s)), *dx = zero_buf(conv_in(s));

        nn_conv2d_forward(s, cc.x, cc.w, cc.b, cc.col, cc.y);
        nn_conv2d_backward(s, cc.col, cc.w, cc.r, dw, db, dcol, dx);
        grad_check("conv dw", cc.w, dw, conv_wn(s), 40, conv_loss, &cc);
        grad_check("conv db", cc.b, db, (size_t)s->oc, 8, conv_loss, &cc);
        grad_check("conv dx", cc.x, dx, conv_in(s), 40, conv_loss, &cc);

        /* dx == NULL: the weight gradients alone, unchanged */
        float *dw2 = zero_buf(conv_wn(s)), *db2 = zero_buf((size_t)s->oc);
        nn_conv2d_forward(s, cc.x, cc.w, cc.b, cc.col, cc.y);
        nn_conv2d_backward(s, cc.col, cc.w, cc.r, dw2, db2, NULL, NULL);
        assert_memory_equal(dw, dw2, conv_wn(s) * sizeof(float));
        assert_memory_equal(db, db2, (size_t)s->oc * sizeof(float));
        free(dw), free(db), free(dcol), free(dx), free(dw2), free(db2);
        conv_free(&cc);
    }
}

/* ---- direct convolution: every instruction-set variant against the naive
 * loops and the im2col layer, and its gradients against finite differences ---- */

static const nn_conv_t direct_shapes[] = {
    {.n = 2, .h = 14, .w = 14, .c = 32, .oc = 64, .k = 5, .pad = 2}, /* dtrain's conv2 */
    {.n = 1, .h = 28, .w = 28, .c = 1, .oc = 32, .k = 5, .pad = 2},  /* dtrain's conv1 */
    {.n = 2, .h = 5, .w = 19, .c = 8, .oc = 16, .k = 3, .pad = 1},   /* tiles of 14, 4, 1 */
    {.n = 1, .h = 6, .w = 7, .c = 3, .oc = 8, .k = 3, .pad = 0},     /* "valid" */
    {.n = 2, .h = 4, .w = 5, .c = 2, .oc = 5, .k = 5, .pad = 2},     /* plain loops only */
    {.n = 1, .h = 3, .w = 10, .c = 8, .oc = 32, .k = 5, .pad = 2},   /* Winograd, 5 tiles a row */
    {.n = 3, .h = 4, .w = 6, .c = 12, .oc = 32, .k = 5, .pad = 2},   /* Winograd, partial vectors */
    {.n = 1, .h = 3, .w = 8, .c = 32, .oc = 32, .k = 5, .pad = 2},   /* Winograd, whole tiles */
    {.n = 2, .h = 2, .w = 7, .c = 32, .oc = 32, .k = 5, .pad = 2},   /* Winograd, a tile of 3 */
    {.n = 1, .h = 6, .w = 9, .c = 8, .oc = 32, .k = 5, .pad = 0},    /* Winograd, "valid" */
};

static void assert_close(const char *what, size_t t, int isa, const float *got, const float *ref,
                         size_t count, float tol)
{
    for (size_t i = 0; i < count; i++) {
        if (!(fabsf(got[i] - ref[i]) <= tol * fmaxf(1.0f, fabsf(ref[i])))) {
            fail_msg("shape %zu, isa %d: %s[%zu] = %f, reference %f", t, isa, what, i,
                     (double)got[i], (double)ref[i]);
        }
    }
}

static double direct_loss(void *ctx)
{
    conv_case_t *cc = ctx;

    nn_conv2d_direct_forward(&cc->s, cc->x, cc->w, cc->b, cc->col, cc->y);
    return dot(conv_out(&cc->s), cc->y, cc->r);
}

static void direct_case(size_t t, int isa)
{
    const nn_conv_t *s = &direct_shapes[t];
    conv_case_t cc;

    conv_setup(&cc, s);
    float *scratch = zero_buf(nn_conv_direct_scratch_floats(s)), *ref = zero_buf(conv_out(s));
    float *dw = zero_buf(conv_wn(s)), *db = zero_buf((size_t)s->oc), *dx = zero_buf(conv_in(s));
    float *rdw = zero_buf(conv_wn(s)), *rdb = zero_buf((size_t)s->oc);
    float *rdx = zero_buf(conv_in(s)), *dcol = zero_buf(nn_conv_col_floats(s));

    assert_true(nn_conv_direct_supported(s));
    nn_conv2d_direct_forward(s, cc.x, cc.w, cc.b, scratch, cc.y);
    conv_naive(s, cc.x, cc.w, cc.b, ref);
    assert_close("y", t, isa, cc.y, ref, conv_out(s), 1e-4f);

    nn_conv2d_direct_backward(s, cc.x, cc.w, cc.r, dw, db, scratch, dx);
    nn_conv2d_forward(s, cc.x, cc.w, cc.b, cc.col, ref);
    nn_conv2d_backward(s, cc.col, cc.w, cc.r, rdw, rdb, dcol, rdx);
    assert_close("dw", t, isa, dw, rdw, conv_wn(s), 1e-4f);
    assert_close("db", t, isa, db, rdb, (size_t)s->oc, 1e-5f);
    assert_close("dx", t, isa, dx, rdx, conv_in(s), 1e-4f);

    /* dx == NULL: the same weight gradients, bit for bit */
    float *dw2 = zero_buf(conv_wn(s)), *db2 = zero_buf((size_t)s->oc);
    nn_conv2d_direct_backward(s, cc.x, cc.w, cc.r, dw2, db2, scratch, NULL);
    assert_memory_equal(dw, dw2, conv_wn(s) * sizeof(float));
    assert_memory_equal(db, db2, (size_t)s->oc * sizeof(float));

    if (conv_in(s) <= 1024) { /* finite differences on the small shapes */
        free(cc.col);
        cc.col = scratch;
        grad_check("direct dw", cc.w, dw, conv_wn(s), 40, direct_loss, &cc);
        grad_check("direct db", cc.b, db, (size_t)s->oc, 8, direct_loss, &cc);
        grad_check("direct dx", cc.x, dx, conv_in(s), 40, direct_loss, &cc);
        cc.col = NULL;
    }
    free(scratch), free(ref), free(dw), free(db), free(dx), free(rdw), free(rdb), free(rdx), free(dcol);
    free(dw2), free(db2);
    conv_free(&cc);
}

static void test_conv_direct(void **state)
{
    (void)state;
    const int isas[] = {NN_ISA_AVX512, NN_ISA_AVX2, NN_ISA_PLAIN};

    for (size_t i = 0; i < sizeof(isas) / sizeof(isas[0]); i++) {
        int saved = nn_set_isa(isas[i]);
        for (size_t t = 0; t < sizeof(direct_shapes) / sizeof(direct_shapes[0]); t++) {
            direct_case(t, isas[i]);
        }
        nn_set_isa(saved);
    }
    /* a border wider than k - 1 has no input-gradient convolution */
    nn_conv_t wide = {.n = 1, .h = 4, .w = 4, .c = 1, .oc = 8, .k = 3, .pad = 3};
    assert_false(nn_conv_direct_supported(&wide));
}

/* Threads split images and weight-gradient slices; every result must be the
 * same, bit for bit, as with one thread (a --resume depends on it). */
static void direct_run(const nn_conv_t *s, const conv_case_t *cc, int threads, float *out)
{
    nn_set_threads(threads);
    float *scratch = zero_buf(nn_conv_direct_scratch_floats(s));
    float *y = out, *dw = y + conv_out(s), *db = dw + conv_wn(s), *dx = db + s->oc;

    nn_conv2d_direct_forward(s, cc->x, cc->w, cc->b, scratch, y);
    nn_conv2d_direct_backward(s, cc->x, cc->w, cc->r, dw, db, scratch, dx);
    nn_set_threads(1);
    free(scratch);
}

static void test_conv_direct_threads(void **state)
{
    (void)state;
    for (size_t t = 0; t < 3; t++) {
        const nn_conv_t *s = &direct_shapes[t];
        size_t total = conv_out(s) + conv_wn(s) + (size_t)s->oc + conv_in(s);
        float *one = zero_buf(total), *many = zero_buf(total);
        conv_case_t cc;

        conv_setup(&cc, s);
        direct_run(s, &cc, 1, one);
        for (int threads = 2; threads <= 5; threads += 3) { /* 5: more than some shares */
            memset(many, 0, total * sizeof(float));
            direct_run(s, &cc, threads, many);
            assert_memory_equal(one, many, total * sizeof(float));
        }
        free(one), free(many);
        conv_free(&cc);
    }
}

/* ---- linear -------------------------------------------------------------------- */

typedef struct lin_case {
    int n, in, out;
    float *x, *w, *b, *y, *r;
} lin_case_t;

static double lin_loss(void *ctx)
{
    lin_case_t *lc = ctx;

    nn_linear_forward(lc->n, lc->in, lc->out, lc->x, lc->w, lc->b, lc->y);
    return dot((size_t)lc->n * lc->out, lc->y, lc->r);
}

static void linear_case(int n, int in, int out)
{
    lin_case_t lc = {.n = n, .in = in, .out = out};
    size_t nx = (size_t)lc.n * lc.in, nw = (size_t)lc.out * lc.in, ny = (size_t)lc.n * lc.out;

    lc.x = rand_buf(nx, -1, 1), lc.w = rand_buf(nw, -1, 1), lc.b = rand_buf((size_t)lc.out, -1, 1);
    lc.y = zero_buf(ny), lc.r = rand_buf(ny, -1, 1);
    nn_linear_forward(lc.n, lc.in, lc.out, lc.x, lc.w, lc.b, lc.y);
    for (int i = 0; i < lc.n; i++) {
        for (int o = 0; o < lc.out; o++) {
            double acc = lc.b[o];
            for (int k = 0; k < lc.in; k++) {
                acc += (double)lc.x[i * lc.in + k] * lc.w[o * lc.in + k];
            }
            assert_true(fabs(acc - lc.y[i * lc.out + o]) < 1e-4);
        }
    }
    float *dw = zero_buf(nw), *db = zero_buf((size_t)lc.out), *dx = zero_buf(nx);
    nn_linear_backward(lc.n, lc.in, lc.out, lc.x, lc.w, lc.r, dw, db, dx);
    grad_check("linear dw", lc.w, dw, nw, 50, lin_loss, &lc);
    grad_check("linear db", lc.b, db, (size_t)lc.out, 11, lin_loss, &lc);
    grad_check("linear dx", lc.x, dx, nx, 50, lin_loss, &lc);
    /* dx == NULL: the same weight gradients, bit for bit */
    float *dw2 = zero_buf(nw), *db2 = zero_buf((size_t)lc.out);
    nn_linear_backward(lc.n, lc.in, lc.out, lc.x, lc.w, lc.r, dw2, db2, NULL);
    assert_memory_equal(dw, dw2, nw * sizeof(float));
    assert_memory_equal(db, db2, (size_t)lc.out * sizeof(float));
    free(dw), free(db), free(dx), free(dw2), free(db2);
    free(lc.x), free(lc.w), free(lc.b), free(lc.y), free(lc.r);
}

/* Every shape with our AVX-512 tiles (where the CPU has them) and with the
 * BLAS: row tiles of 7 and single rows, column blocks of 64 and of 16-48, batch
 * sizes that are not multiples of 16, and an input size the tiles refuse. */
static void test_linear(void **state)
{
    (void)state;
    static const int shapes[][3] = {{5, 37, 11}, {20, 48, 15}, {3, 80, 9}, {64, 128, 8}};
    const int isas[] = {NN_ISA_AVX512, NN_ISA_AVX2};

    for (size_t i = 0; i < sizeof(isas) / sizeof(isas[0]); i++) {
        int saved = nn_set_isa(isas[i]);
        for (size_t t = 0; t < sizeof(shapes) / sizeof(shapes[0]); t++) {
            linear_case(shapes[t][0], shapes[t][1], shapes[t][2]);
        }
        nn_set_isa(saved);
    }
    /* threads split rows or column blocks: the same bits as one thread */
    for (size_t t = 1; t < sizeof(shapes) / sizeof(shapes[0]); t++) {
        const int n = shapes[t][0], in = shapes[t][1], out = shapes[t][2];
        const size_t nx = (size_t)n * in, nw = (size_t)out * in, ny = (size_t)n * out;
        const size_t total = ny + nw + (size_t)out + nx;
        float *x = rand_buf(nx, -1, 1), *w = rand_buf(nw, -1, 1), *b = rand_buf((size_t)out, -1, 1);
        float *r = rand_buf(ny, -1, 1), *res[2] = {zero_buf(total), zero_buf(total)};
        for (int i = 0; i < 2; i++) {
            float *y = res[i], *dw = y + ny, *db = dw + nw, *dx = db + out;
            nn_set_threads(i == 0 ? 1 : 3);
            nn_linear_forward(n, in, out, x, w, b, y);
            nn_linear_backward(n, in, out, x, w, r, dw, db, dx);
        }
        nn_set_threads(1);
        assert_memory_equal(res[0], res[1], total * sizeof(float));
        free(x), free(w), free(b), free(r), free(res[0]), free(res[1]);
    }
}

/* ---- max-pool and ReLU --------------------------------------------------------- */

typedef struct pool_case {
    int n, h, w, c;
    float *x, *y, *r;
    int32_t *idx;
} pool_case_t;

static double pool_loss(void *ctx)
{
    pool_case_t *pc = ctx;

    nn_maxpool2_forward(pc->n, pc->h, pc->w, pc->c, pc->x, pc->y, pc->idx);
    return dot((size_t)pc->n * (pc->h / 2) * (pc->w / 2) * pc->c, pc->y, pc->r);
}

static void test_maxpool(void **state)
{
    (void)state;
    pool_case_t pc = {.n = 2, .h = 6, .w = 4, .c = 3};
    size_t nx = (size_t)pc.n * pc.h * pc.w * pc.c, ny = nx / 4;

    /* distinct values a finite step cannot reorder: a permutation, spaced by 0.1 */
    pc.x = zero_buf(nx);
    for (size_t i = 0; i < nx; i++) {
        pc.x[i] = (float)((i * 37) % nx) * 0.1f;
    }
    pc.y = zero_buf(ny), pc.r = rand_buf(ny, -1, 1);
    pc.idx = calloc(ny, sizeof(int32_t));
    assert_non_null(pc.idx);
    nn_maxpool2_forward(pc.n, pc.h, pc.w, pc.c, pc.x, pc.y, pc.idx);
    for (int b = 0; b < pc.n; b++)
        for (int oh = 0; oh < pc.h / 2; oh++)
            for (int ow = 0; ow < pc.w / 2; ow++)
                for (int c = 0; c < pc.c; c++) {
                    float m = -INFINITY;
                    for (int dh = 0; dh < 2; dh++)
                        for (int dw = 0; dw < 2; dw++)
                            m = fmaxf(m, pc.x[((b * pc.h + 2 * oh + dh) * pc.w + 2 * ow + dw) * pc.c + c]);
                    assert_true(pc.y[((b * pc.h / 2 + oh) * pc.w / 2 + ow) * pc.c + c] == m);
                }
    float *dx = zero_buf(nx);
    nn_maxpool2_backward(pc.n, pc.h, pc.w, pc.c, pc.r, pc.idx, dx);
    grad_check("maxpool dx", pc.x, dx, nx, nx, pool_loss, &pc);
    free(dx), free(pc.x), free(pc.y), free(pc.r), free(pc.idx);
}

/* ReLU + max-pool in one pass equals ReLU then max-pool exactly, ties and
 * all-negative windows included; its backward equals their backwards. */
static void test_relu_maxpool(void **state)
{
    (void)state;
    const int n = 3, h = 6, w = 8, c = 19;
    const size_t nx = (size_t)n * h * w * c, ny = nx / 4;
    float *x = zero_buf(nx), *a = zero_buf(nx), *y = zero_buf(ny), *ry = zero_buf(ny);
    float *dy = rand_buf(ny, -1, 1), *dx = zero_buf(nx), *rdx = zero_buf(nx);
    int32_t *idx = calloc(ny, sizeof(int32_t)), *ridx = calloc(ny, sizeof(int32_t));

    assert_non_null(idx);
    assert_non_null(ridx);
    for (size_t i = 0; i < nx; i++) {
        /* few distinct values: many ties, negatives and zeros */
        x[i] = (float)((int)((i * 7919) % 9) - 5) * 0.25f;
    }
    memcpy(a, x, nx * sizeof(float));
    nn_relu_forward(nx, a, a);
    nn_maxpool2_forward(n, h, w, c, a, ry, ridx);
    nn_relu_maxpool2_forward(n, h, w, c, x, y, idx);
    assert_memory_equal(y, ry, ny * sizeof(float));
    size_t flowing = 0;
    for (size_t o = 0; o < ny; o++) {
        assert_int_equal(idx[o], y[o] > 0.0f ? ridx[o] : -1);
        flowing += idx[o] >= 0;
    }
    assert_true(flowing > 0 && flowing < ny);
    nn_maxpool2_backward(n, h, w, c, dy, ridx, rdx);
    nn_relu_backward(nx, a, rdx, rdx);
    for (size_t i = 0; i < nx; i++) {
        dx[i] = 99.0f; /* every element must be overwritten */
    }
    nn_relu_maxpool2_backward(n, h, w, c, dy, idx, dx);
    assert_memory_equal(dx, rdx, nx * sizeof(float));
    free(x), free(a), free(y), free(ry), free(dy), free(dx), free(rdx), free(idx), free(ridx);
}

typedef struct relu_case {
    size_t n;
    float *x, *y, *r;
} relu_case_t;

static double relu_loss(void *ctx)
{
    relu_case_t *rc = ctx;

    nn_relu_forward(rc->n, rc->x, rc->y);
    return dot(rc->n, rc->y, rc->r);
}

static void test_relu(void **state)
{
    (void)state;
    relu_case_t rc = {.n = 64};
    rc.x = rand_buf(rc.n, -1, 1), rc.y = zero_buf(rc.n), rc.r = rand_buf(rc.n, -1, 1);
    for (size_t i = 0; i < rc.n; i++) {
        /* keep every input farther from the kink than the finite step */
        if (fabsf(rc.x[i]) < 0.05f) {
            rc.x[i] = i % 2 ? 0.5f : -0.5f;
        }
    }
    nn_relu_forward(rc.n, rc.x, rc.y);
    for (size_t i = 0; i < rc.n; i++) {
        assert_true(rc.y[i] == (rc.x[i] > 0 ? rc.x[i] : 0.0f));
    }
    float *dx = zero_buf(rc.n);
    nn_relu_backward(rc.n, rc.y, rc.r, dx);
    grad_check("relu dx", rc.x, dx, rc.n, rc.n, relu_loss, &rc);
    /* in place (y again from the unperturbed x: grad_check left the last
     * evaluation's y behind) */
    nn_relu_forward(rc.n, rc.x, rc.y);
    float *copy = malloc(rc.n * sizeof(float));
    assert_non_null(copy);
    memcpy(copy, rc.x, rc.n * sizeof(float));
    nn_relu_forward(rc.n, copy, copy);
    assert_memory_equal(copy, rc.y, rc.n * sizeof(float));
    free(copy), free(dx), free(rc.x), free(rc.y), free(rc.r);
}

/* ---- dropout ------------------------------------------------------------------- */

static void test_dropout(void **state)
{
    (void)state;
    const size_t n = 100000;
    const float rate = 0.4f;
    float *x = rand_buf(n, 0.5f, 1.5f), *y = zero_buf(n), *mask = zero_buf(n);
    float *y2 = zero_buf(n), *mask2 = zero_buf(n), *dx = zero_buf(n);

    nn_dropout_forward(n, rate, 7, 1000, x, mask, y);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(mask[i] == 0.0f || fabsf(mask[i] - 1.0f / 0.6f) < 1e-6f);
        kept += mask[i] != 0.0f;
        assert_true(y[i] == x[i] * mask[i]);
    }
    /* 60000 expected; a binomial std of about 155 */
    assert_in_range(kept, 59000, 61000);
    /* the same seed and counter give the same mask; another counter another one */
    nn_dropout_forward(n, rate, 7, 1000, x, mask2, y2);
    assert_memory_equal(mask, mask2, n * sizeof(float));
    nn_dropout_forward(n, rate, 7, 1000 + n, x, mask2, y2);
    assert_memory_not_equal(mask, mask2, n * sizeof(float));
    /* backward is the same mask */
    nn_dropout_backward(n, mask, x, dx);
    assert_memory_equal(dx, y, n * sizeof(float));
    /* rate 0: identity */
    nn_dropout_forward(n, 0.0f, 7, 0, x, mask2, y2);
    assert_memory_equal(x, y2, n * sizeof(float));
    free(x), free(y), free(mask), free(y2), free(mask2), free(dx);
}

/* ---- softmax cross-entropy ----------------------------------------------------- */

typedef struct xent_case {
    int n, classes;
    float *logits;
    uint8_t *labels;
} xent_case_t;

static double xent_loss(void *ctx)
{
    xent_case_t *xc = ctx;

    return nn_softmax_xent(xc->n, xc->classes, xc->logits, xc->labels, NULL, NULL);
}

static void test_softmax_xent(void **state)
{
    (void)state;
    xent_case_t xc = {.n = 6, .classes = 10};
    size_t nl = (size_t)xc.n * xc.classes;
    uint8_t labels[6] = {0, 3, 9, 9, 5, 1};

    xc.logits = rand_buf(nl, -3, 3);
    xc.labels = labels;
    /* large logits must not overflow */
    xc.logits[7] = 80.0f;
    float *d = zero_buf(nl);
    int correct = -1;
    double loss = nn_softmax_xent(xc.n, xc.classes, xc.logits, labels, d, &correct);

    double ref = 0.0;
    int ref_correct = 0;
    for (int i = 0; i < xc.n; i++) {
        const float *row = xc.logits + i * xc.classes;
        double sum = 0.0;
        int best = 0;
        for (int j = 0; j < xc.classes; j++) {
            sum += exp((double)row[j] - 80.0);
            best = row[j] > row[best] ? j : best;
        }
        ref += log(sum) + 80.0 - row[labels[i]];
        ref_correct += best == labels[i];
    }
    ref /= xc.n;
    assert_true(isfinite(loss));
    assert_true(fabs(loss - ref) < 1e-6 * fmax(1.0, fabs(ref)));
    assert_int_equal(correct, ref_correct);
    grad_check("xent dlogits", xc.logits, d, nl, nl, xent_loss, &xc);

    uint8_t pred[6];
    nn_argmax(xc.n, xc.classes, xc.logits, pred);
    assert_int_equal(pred[0], 7);
    free(d), free(xc.logits);
}

/* ---- SGD ----------------------------------------------------------------------- */

static void test_sgd(void **state)
{
    (void)state;
    const size_t n = 17;
    float *w = rand_buf(n, -1, 1), *v = zero_buf(n), *g = zero_buf(n);
    double wr[17], vr[17];

    for (size_t i = 0; i < n; i++) {
        wr[i] = w[i];
        vr[i] = 0.0;
    }
    for (int step = 0; step < 5; step++) {
        for (size_t i = 0; i < n; i++) {
            g[i] = urand(-1, 1);
            vr[i] = 0.9 * vr[i] + (g[i] + 0.01 * wr[i]);
            wr[i] -= 0.1 * vr[i];
        }
        nn_sgd_step(n, 0.1f, 0.9f, 0.01f, g, v, w);
    }
    for (size_t i = 0; i < n; i++) {
        assert_true(fabs(w[i] - wr[i]) < 1e-5);
        assert_true(fabs(v[i] - vr[i]) < 1e-5);
    }
    /* momentum 0 and no decay: plain gradient descent */
    float w1[1] = {1.0f}, v1[1] = {0.0f}, g1[1] = {0.5f};
    nn_sgd_step(1, 0.2f, 0.0f, 0.0f, g1, v1, w1);
    assert_true(w1[0] == 0.9f);
    free(w), free(v), free(g);
}

static void test_rand(void **state)
{
    (void)state;
    assert_true(nn_rand_u64(1, 2) == nn_rand_u64(1, 2));
    assert_true(nn_rand_u64(1, 2) != nn_rand_u64(2, 2));
    assert_true(nn_rand_u64(1, 2) != nn_rand_u64(1, 3));
    double mean = 0.0;
    for (int i = 0; i < 10000; i++) {
        float u = nn_rand_uniform(3, (uint64_t)i);
        assert_true(u >= 0.0f && u < 1.0f);
        mean += u;
    }
    assert_true(fabs(mean / 10000 - 0.5) < 0.02);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_forward), cmocka_unit_test(test_conv_backward),
        cmocka_unit_test(test_linear),       cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_relu),         cmocka_unit_test(test_relu_maxpool),
        cmocka_unit_test(test_conv_direct),  cmocka_unit_test(test_conv_direct_threads),         cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_softmax_xent), cmocka_unit_test(test_sgd),
        cmocka_unit_test(test_rand),
    };

    nn_set_threads(1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
