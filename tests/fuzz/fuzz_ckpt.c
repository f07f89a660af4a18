/* libFuzzer harness: dtrain's checkpoint loader (trainer/checkpoint.c).
 * Input: a u16 giving the model's parameter count (% 4096), then the file. */
#include "checkpoint.h"
#include "fuzz_common.h"
#include "fuzz_trainer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    ckpt_header_t h = {.nparams = fuzz_u16(&in) % 4096};
    size_t n = (size_t)h.nparams;
    float *params = malloc((n > 0 ? n : 1) * sizeof(float));
    float *momentum = malloc((n > 0 ? n : 1) * sizeof(float));
    char err[512];

    if (params == NULL || momentum == NULL) {
        abort();
    }
    if (ckpt_load(fuzz_file(in.p, in.left), &h, params, momentum, err, sizeof(err)) == 0) {
        if (h.nparams != n) {
            abort();
        }
    } else if (strlen(err) == 0) {
        abort();
    }
    free(params);
    free(momentum);
    return 0;
}
