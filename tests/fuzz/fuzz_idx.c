/* libFuzzer harness: dtrain's IDX loader (trainer/idx.c), plain and gzip.
 * Input: a byte whose low bit asks for images (3 dimensions) or labels (1),
 * then the file. A loaded file's data must be as large as its dimensions. */
#include "fuzz_common.h"
#include "fuzz_trainer.h"
#include "idx.h"

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
    int dims = (fuzz_u8(&in) & 1) ? 3 : 1;
    idx_data_t d = {0};
    char err[512];

    if (idx_load(fuzz_file(in.p, in.left), dims, &d, err, sizeof(err)) == 0) {
        size_t len = (size_t)d.count * (size_t)d.rows * (size_t)d.cols;
        volatile uint8_t sink;

        if (d.count <= 0 || d.rows <= 0 || d.cols <= 0 ||
            (dims == 1 && (d.rows != 1 || d.cols != 1))) {
            abort();
        }
        sink = d.data[0];
        sink = d.data[len - 1];
        (void)sink;
        idx_free(&d);
    } else if (strlen(err) == 0) {
        abort(); /* a failure always says why */
    }
    return 0;
}
