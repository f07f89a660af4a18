/* Direct (implicit-GEMM) stride-1 convolution on NHWC tensors, without the
 * im2col matrix. Each image is copied once into a zero-bordered buffer; then
 * for output row oh and kernel row kh, the patch elements (kw, c) of output
 * pixel ow are one contiguous run of k*c floats of padded row oh + kh, starting
 * at pixel ow. So every product reads the padded image and the weights in place,
 * one image at a time (L1/L2 resident), instead of writing, reading and then
 * re-packing the whole batch's patch matrix (40 MB for conv2 at batch 64).
 *
 * The input gradient is the forward convolution of the zero-bordered output
 * gradient (border k-1-pad) with the weights flipped in kh, kw and transposed
 * in (channel, output channel). Every sum runs in a fixed order, so results
 * are deterministic. This file: scratch, padding, threads and the layer; one
 * image's register tiles are in nn_direct_tiles.c, Winograd in nn_winograd.c. */
#include <string.h>

#include "nn.h"
#include "nn_direct.h"
#include "nn_internal.h"

/* ---- shapes and scratch ---------------------------------------------------------- */

static int pad_back(const nn_conv_t *s)
{
    return s->k - 1 - s->pad;
}

/* Pixels of a zero-bordered row giving out_w outputs: out_w + k - 1, and for
 * k = 5 zeros up to the last Winograd tile's 8 inputs. */
static int padded_w(int out_w, int k)
{
    return (k == 5 ? wino_tiles(out_w) * WINO_M : out_w) + k - 1;
}

/* Floats of one zero-bordered image: the input's (border pad) or the output
 * gradient's (border k-1-pad), whichever is larger. */
static size_t padded_floats(const nn_conv_t *s)
{
    int oh = nn_conv_out_h(s), ow = nn_conv_out_w(s), pb = pad_back(s);
    size_t in = (size_t)(s->h + 2 * s->pad) * (size_t)padded_w(ow, s->k) * (size_t)s->c;
    size_t out = pb >= 0 ? (size_t)(oh + 2 * pb) * (size_t)padded_w(s->w, s->k) * (size_t)s->oc : 0;

    return in > out ? in : out;
}

/* The floats of one image's transformed input and products, for oh x ow
 * outputs of c channels into oc channels, zero where Winograd does not apply. */
static size_t wino_floats(int oh, int ow, int k, int c, int oc)
{
    if (k != 5) {
        return 0;
    }
    return (size_t)WINO * wino_tiles(ow) * ((size_t)(oh + k - 1) * c + (size_t)oh * oc);
}

static size_t thread_floats(const nn_conv_t *s)
{
    int oh = nn_conv_out_h(s), ow = nn_conv_out_w(s);
    size_t fw = wino_floats(oh, ow, s->k, s->c, s->oc);
    size_t bw = wino_floats(s->h, s->w, s->k, s->oc, s->c);

    return padded_floats(s) + (fw > bw ? fw : bw);
}

size_t nn_conv_direct_scratch_floats(const nn_conv_t *s)
{
    /* the re-laid-out weights (or weight gradient) and their Winograd
     * transform, then a padded image and Winograd planes per thread */
    size_t wn = (size_t)s->oc * s->k * s->k * s->c;

    return wn + (size_t)WINO * s->k * s->c * s->oc + thread_floats(s) * (size_t)nn_threads();
}

int nn_conv_direct_supported(const nn_conv_t *s)
{
    /* the input gradient needs a non-negative border k-1-pad */
    return s->k >= 1 && s->pad >= 0 && pad_back(s) >= 0 && nn_conv_out_h(s) >= 1 &&
           nn_conv_out_w(s) >= 1;
}

/* xp [h+2p][wp][c] = x [h][w][c] with a zero border of width p, and zeros to
 * the right up to wp >= w + 2p pixels. */
static void pad_image(int h, int w, int c, int p, int wp, const float *x, float *xp)
{
    const size_t row = (size_t)w * c, right = (size_t)(wp - w - p) * c;

    memset(xp, 0, (size_t)p * wp * c * sizeof(float));
    for (int i = 0; i < h; i++) {
        float *dst = xp + ((size_t)(i + p) * wp) * c;
        memset(dst, 0, (size_t)p * c * sizeof(float));
        memcpy(dst + (size_t)p * c, x + (size_t)i * row, row * sizeof(float));
        memset(dst + (size_t)p * c + row, 0, right * sizeof(float));
    }
    memset(xp + (size_t)(h + p) * wp * c, 0, (size_t)p * wp * c * sizeof(float));
}

/* ---- threads: images (forward, input gradient) or (kh, 32 channels) slices
 * of the weight gradient ((point, kh, 32 channels) with Winograd) are split
 * between nn_threads() threads; each output is computed by one thread in the
 * same order whatever the count, so results do not depend on it. ---- */

typedef struct work {
    const nn_conv_t *s;
    const geom_t *g;
    const float *in, *wt, *b, *dy;  /* in: images to pad (x, or dy for the input gradient) */
    float *out, *dwt, *scratch;     /* scratch: one padded image per thread */
    int in_h, in_w, in_c, pad;      /* the images in `in` and their border */
    size_t in_img, out_img, pad_img;
    int items;                      /* images, or weight-gradient slices */
    const float *u;                 /* Winograd weights, or NULL: direct */
    size_t thread_img;              /* floats of scratch per thread */
} work_t;

static float *thread_pad(work_t *w, int t)
{
    return w->scratch + (size_t)t * w->thread_img;
}

/* xp = image n of `in`, zero-bordered into rows of the geometry's width */
static void pad_input(const work_t *w, int n, float *xp)
{
    pad_image(w->in_h, w->in_w, w->in_c, w->pad, (int)(w->g->xrow / (size_t)w->in_c),
              w->in + (size_t)n * w->in_img, xp);
}

/* images [lo, hi): pad, then convolve */
static void conv_share(void *ctx, int t, int lo, int hi)
{
    work_t *w = ctx;
    float *xp = thread_pad(w, t);

    for (int n = lo; n < hi; n++) {
        pad_input(w, n, xp);
        if (w->u != NULL) {
            nn_wino_image(w->g, xp, w->u, w->b, xp + w->pad_img, w->out + (size_t)n * w->out_img);
        } else {
            nn_direct_conv_image(w->g, xp, w->wt, w->b, w->out + (size_t)n * w->out_img);
        }
    }
}

/* slices [lo, hi) of the weight gradient (kh, and 32 channels where they
 * divide), summed over every image */
static int wgrad_slices(const geom_t *g)
{
    return g->oc % 32 == 0 ? g->oc / 32 : 1;
}

static void wgrad_share(void *ctx, int t, int lo, int hi)
{
    work_t *w = ctx;
    const geom_t *g = w->g;
    const int per = wgrad_slices(g), width = g->oc / per;
    float *xp = thread_pad(w, t);

    for (int n = 0; n < w->s->n; n++) {
        pad_input(w, n, xp);
        for (int i = lo; i < hi; i++) {
            int o = (i % per) * width;
            nn_direct_wgrad_row(g, xp, w->dy + (size_t)n * w->out_img, i / per, o, o + width,
                                w->dwt);
        }
    }
}

/* Winograd weight gradient: slices [lo, hi) of (point, kh, 32 channels) of
 * du [8][k][c][oc], summed over every image (each image's transforms are
 * computed by every thread that has a slice). */
static void wino_wgrad_share(void *ctx, int t, int lo, int hi)
{
    work_t *w = ctx;
    const geom_t *g = w->g, gp = nn_wino_plane(g);
    const int per = wgrad_slices(g), width = g->oc / per;
    const size_t vplane = (size_t)(g->oh + g->k - 1) * wino_tiles(g->ow) * g->c;
    const size_t mplane = (size_t)gp.ow * g->oc, uplane = (size_t)g->k * g->c * g->oc;
    float *xp = thread_pad(w, t), *v = xp + w->pad_img, *m = v + WINO * vplane;

    for (int n = 0; n < w->s->n; n++) {
        pad_input(w, n, xp);
        nn_wino_input(g, xp, v);
        nn_wino_dy(g, w->dy + (size_t)n * w->out_img, m);
        for (int i = lo; i < hi; i++) {
            int p = i / (g->k * per), kh = i / per % g->k, o = (i % per) * width;
            nn_direct_wgrad_row(&gp, v + p * vplane, m + p * mplane, kh, o, o + width,
                                w->dwt + p * uplane);
        }
    }
}

/* ---- the layer ------------------------------------------------------------------- */

static size_t uwn(const nn_conv_t *s)
{
    return (size_t)WINO * s->k * s->c * s->oc;
}

/* The Winograd weights of wt into u where that path applies, else NULL. */
static const float *wino_prepare(const geom_t *g, const float *wt, float *u)
{
    if (!nn_wino_ok(g)) {
        return NULL;
    }
    nn_wino_weights(g, wt, u);
    return u;
}

void nn_conv2d_direct_forward(const nn_conv_t *s, const float *x, const float *w, const float *b,
                              float *scratch, float *y)
{
    const int oh = nn_conv_out_h(s), ow = nn_conv_out_w(s), kk = s->k * s->k;
    const geom_t g = {.oh = oh, .ow = ow, .c = s->c, .oc = s->oc, .k = s->k, .kc = s->k * s->c,
                      .xrow = (size_t)padded_w(ow, s->k) * s->c};
    const size_t wn = (size_t)s->oc * kk * s->c;
    float *wt = scratch;

    /* wt [kh][kw][c][oc] = w [oc][kh][kw][c] */
    for (int o = 0; o < s->oc; o++) {
        for (int t = 0; t < kk * s->c; t++) {
            wt[(size_t)t * s->oc + o] = w[(size_t)o * kk * s->c + t];
        }
    }
    work_t wk = {.s = s, .g = &g, .in = x, .wt = wt, .b = b, .out = y,
                 .scratch = scratch + wn + uwn(s), .in_h = s->h, .in_w = s->w, .in_c = s->c,
                 .pad = s->pad, .in_img = (size_t)s->h * s->w * s->c,
                 .out_img = (size_t)oh * ow * s->oc, .pad_img = padded_floats(s),
                 .items = s->n, .u = wino_prepare(&g, wt, scratch + wn),
                 .thread_img = thread_floats(s)};
    nn_parallel_run(s->n, conv_share, &wk);
}

void nn_conv2d_direct_backward(const nn_conv_t *s, const float *x, const float *w, const float *dy,
                               float *dw, float *db, float *scratch, float *dx)
{
    const int oh = nn_conv_out_h(s), ow = nn_conv_out_w(s), kk = s->k * s->k, pb = pad_back(s);
    const size_t out_img = (size_t)oh * ow * s->oc, in_img = (size_t)s->h * s->w * s->c;
    const size_t wn = (size_t)s->oc * kk * s->c;
    const geom_t g = {.oh = oh, .ow = ow, .c = s->c, .oc = s->oc, .k = s->k, .kc = s->k * s->c,
                      .xrow = (size_t)padded_w(ow, s->k) * s->c};
    float *wt = scratch;

    /* bias: the sum of dy over all pixels, in pixel order */
    memset(db, 0, (size_t)s->oc * sizeof(float));
    for (size_t p = 0; p < (size_t)s->n * oh * ow; p++) {
        const float *dp = dy + p * s->oc;
        for (int o = 0; o < s->oc; o++) {
            db[o] += dp[o];
        }
    }
    /* weights: wt [kh][kw*c][oc] accumulated image by image (directly, or
     * per Winograd point into the u area and then transformed), then transposed */
    const int wino = nn_wino_ok(&g);
    float *acc = wino ? scratch + wn : wt;
    memset(acc, 0, (wino ? uwn(s) : wn) * sizeof(float));
    work_t wk = {.s = s, .g = &g, .in = x, .dy = dy, .dwt = acc, .scratch = scratch + wn + uwn(s),
                 .in_h = s->h, .in_w = s->w, .in_c = s->c, .pad = s->pad, .in_img = in_img,
                 .out_img = out_img, .pad_img = padded_floats(s),
                 .items = (wino ? WINO : 1) * s->k * wgrad_slices(&g),
                 .thread_img = thread_floats(s)};
    nn_parallel_run(wk.items, wino ? wino_wgrad_share : wgrad_share, &wk);
    if (wino) {
        nn_wino_wgrad_out(&g, acc, wt);
    }
    for (int o = 0; o < s->oc; o++) {
        for (int t = 0; t < kk * s->c; t++) {
            dw[(size_t)o * kk * s->c + t] = wt[(size_t)t * s->oc + o];
        }
    }
    if (dx == NULL) {
        return;
    }
    /* input: the output gradient, bordered by k-1-pad, convolved with
     * wf [kh][kw][oc][c] = w [oc][k-1-kh][k-1-kw][c] */
    const geom_t gb = {.oh = s->h, .ow = s->w, .c = s->oc, .oc = s->c, .k = s->k,
                       .kc = s->k * s->oc, .xrow = (size_t)padded_w(s->w, s->k) * s->oc};
    for (int kh = 0; kh < s->k; kh++) {
        for (int kw = 0; kw < s->k; kw++) {
            const float *src = w + ((size_t)(s->k - 1 - kh) * s->k + (s->k - 1 - kw)) * s->c;
            float *dst = wt + ((size_t)kh * s->k + kw) * s->oc * s->c;
            for (int o = 0; o < s->oc; o++) {
                for (int c = 0; c < s->c; c++) {
                    dst[(size_t)o * s->c + c] = src[(size_t)o * kk * s->c + c];
                }
            }
        }
    }
    work_t wb = {.s = s, .g = &gb, .in = dy, .wt = wt, .b = NULL, .out = dx,
                 .scratch = scratch + wn + uwn(s), .in_h = oh, .in_w = ow, .in_c = s->oc,
                 .pad = pb, .in_img = out_img, .out_img = in_img, .pad_img = padded_floats(s),
                 .items = s->n, .u = wino_prepare(&gb, wt, scratch + wn),
                 .thread_img = thread_floats(s)};
    nn_parallel_run(s->n, conv_share, &wb);
}
