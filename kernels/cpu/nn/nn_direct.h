/* Shared by the files of the direct convolution (kernels/cpu/nn): nn_direct.c
 * (the layer: scratch, zero-bordered images, threads), nn_direct_tiles.c (one
 * image's convolution and weight gradient in register tiles) and nn_winograd.c
 * (the Winograd F(4,5) transforms of the 5x5 layers with AVX-512). */
#ifndef DC_NN_DIRECT_H
#define DC_NN_DIRECT_H

#include <stddef.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NN_X86 1
#endif

#ifdef NN_X86
#define AVX2 __attribute__((target("avx2,fma")))
#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline
#define AVX512 __attribute__((target("avx512f,fma")))
#define AVX512_INLINE __attribute__((target("avx512f,fma"), always_inline)) static inline
#endif

/* One image's geometry: y [oh][ow][oc] = conv(xp, wt) + b, wt [k][k][c][oc],
 * xp a zero-bordered image with rows of xrow floats. */
typedef struct geom {
    int oh, ow, c, oc, k;
    int kc;         /* floats of a patch row: k * c (direct), c (a Winograd plane) */
    size_t xrow;    /* floats per padded input row */
} geom_t;

/* Winograd F(4,5) along the rows (WINO = 8 transformed points, WINO_M = 4
 * outputs a tile) for 5x5 kernels: a row of ow outputs is cut into
 * wino_tiles(ow) tiles, the last one partial. */
enum { WINO = 8, WINO_M = 4 };

static inline int wino_tiles(int ow)
{
    return (ow + WINO_M - 1) / WINO_M;
}

/* y [oh][ow][oc] = conv(xp, wt) + b for one image (b may be NULL). */
void nn_direct_conv_image(const geom_t *g, const float *xp, const float *wt, const float *b,
                          float *y);
/* dwt [kh][k*c][o_lo..o_hi) += sum over the image's pixels of patch x dy. */
void nn_direct_wgrad_row(const geom_t *g, const float *xp, const float *dy, int kh, int o_lo,
                         int o_hi, float *dwt);

/* 1 when the Winograd path applies: AVX-512, k = 5, oc % 32 == 0, c >= 8. */
int nn_wino_ok(const geom_t *g);
/* u [8][k][c][oc] = G wt [k][k][c][oc] along kw */
void nn_wino_weights(const geom_t *g, const float *wt, float *u);
/* dwt [k][k][c][oc] = G^T du [8][k][c][oc] along the points */
void nn_wino_wgrad_out(const geom_t *g, const float *du, float *dwt);
/* v [8][oh+4][tiles][c] = B^T of each row tile of 8 inputs (stride 4) of xp */
void nn_wino_input(const geom_t *g, const float *xp, float *v);
/* m [8][oh][tiles][oc] = A dy [oh][ow][oc] for each tile of 4 pixels */
void nn_wino_dy(const geom_t *g, const float *dy, float *m);
/* The geometry of one point's plane (see nn_winograd.c). */
geom_t nn_wino_plane(const geom_t *g);
/* One image through the Winograd transforms: xp -> y (+ b); v: scratch. */
void nn_wino_image(const geom_t *g, const float *xp, const float *u, const float *b, float *v,
                   float *y);

#endif
