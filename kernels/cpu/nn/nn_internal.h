/* Shared by the files of kernels/cpu/nn; not part of nn.h. */
#ifndef DC_NN_INTERNAL_H
#define DC_NN_INTERNAL_H

/* The widest instruction set (NN_ISA_*) both the CPU and the cap of
 * nn_set_isa() allow. */
int nn_isa(void);
/* nn_set_threads()'s count for our kernels (1 by default). */
int nn_threads(void);

/* Runs fn(ctx, t, lo, hi) for contiguous shares [lo, hi) of [0, items) on
 * up to nn_threads() threads (t: 0 .. threads-1; 0 is the caller) and returns
 * when all are done. A thread that cannot be started has its share run by the
 * caller, so it never fails. */
typedef void (*nn_share_fn)(void *ctx, int t, int lo, int hi);
void nn_parallel_run(int items, nn_share_fn fn, void *ctx);

/* The dense layer's products with AVX-512 tiles (nn_dense.c). They return 0,
 * having done nothing, where they do not apply (no AVX-512, in not a multiple
 * of 16 for backward, out of memory); the caller then
 * uses the BLAS. Same arguments as nn_linear_forward/backward (dw, dx
 * overwritten, dx may be NULL; db is the caller's). */
int nn_dense_forward(int n, int in, int out, const float *x, const float *w, const float *b,
                     float *y);
int nn_dense_backward(int n, int in, int out, const float *x, const float *w, const float *dy,
                      float *dw, float *dx);

#endif
