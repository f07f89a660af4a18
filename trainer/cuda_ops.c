/* model_cuda_ops: the GPU's table, from kernels/cuda, when a GPU is present. */
#include <stddef.h>

#include "model.h"
#include "nn_cuda.h"

static const model_ops_t cuda_ops = {
    .name = "cuda",
    .alloc = nn_cuda_alloc,
    .free = nn_cuda_free,
    .upload = nn_cuda_upload,
    .download = nn_cuda_download,
    .conv2d_forward = nn_cuda_conv2d_forward,
    .conv2d_backward = nn_cuda_conv2d_backward,
    .maxpool2_forward = nn_cuda_maxpool2_forward,
    .maxpool2_backward = nn_cuda_maxpool2_backward,
    .relu_forward = nn_cuda_relu_forward,
    .relu_backward = nn_cuda_relu_backward,
    .linear_forward = nn_cuda_linear_forward,
    .linear_backward = nn_cuda_linear_backward,
    .dropout_forward = nn_cuda_dropout_forward,
    .dropout_backward = nn_cuda_dropout_backward,
    .softmax_xent = nn_cuda_softmax_xent,
    .sgd_step = nn_cuda_sgd_step,
};

const model_ops_t *model_cuda_ops(const char **why_p)
{
    static char why[256];

    if (!nn_cuda_available(why, sizeof(why))) {
        *why_p = why;
        return NULL;
    }
    return &cuda_ops;
}
