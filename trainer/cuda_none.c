/* model_cuda_ops for builds without CUDA: says why --device cuda is refused. */
#include <stddef.h>

#include "model.h"

const model_ops_t *model_cuda_ops(const char **why_p)
{
    *why_p = "this dtrain was built without CUDA (configure on a machine with the CUDA toolkit, "
             "-DDCOMM_WITH_CUDA=AUTO or ON)";
    return NULL;
}
