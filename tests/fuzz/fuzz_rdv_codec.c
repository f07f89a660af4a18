/* libFuzzer harness: the rendezvous wire codec (util/rdv_proto.c).
 * Input: one byte choosing the frame limit (before or after authentication),
 * then a byte stream decoded frame by frame as the server does. Every frame that
 * decodes must encode back to exactly the bytes it came from. */
#include <stdio.h>

#include "fuzz_common.h"
#include "rdv.h"

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
    size_t max = (fuzz_u8(&in) & 1) ? DC_RDV_MAX_AUTH_FRAME : DC_RDV_MAX_FRAME;
    uint8_t *buf = fuzz_dup(in.p, in.left);
    size_t len = in.left, off = 0;

    while (off < len) {
        dc_rdv_msg_t msg;
        size_t used = 0;
        dc_status_t status = dc_rdv_msg_decode(buf + off, len - off, max, &msg, &used);

        if (status != DCOMM_OK) {
            /* INPROGRESS (needs more bytes) or malformed: the server stops here. */
            if (status != DCOMM_INPROGRESS && status != DCOMM_ERR_INVALID_ARG) {
                abort();
            }
            break;
        }
        if (used < DC_RDV_HDR_LEN + 1 || used > len - off) {
            abort();
        }
        size_t want = dc_rdv_msg_size(&msg);
        uint8_t *out = malloc(want > 0 ? want : 1);

        if (want != used || dc_rdv_msg_encode(&msg, out, want) != used ||
            memcmp(out, buf + off, used) != 0) {
            fprintf(stderr, "rdv codec: type %d frame of %zu bytes does not re-encode "
                    "(size %zu)\n", (int)msg.type, used, want);
            abort();
        }
        /* A short buffer must be refused, never overrun. */
        if (dc_rdv_msg_encode(&msg, out, want - 1) != 0) {
            abort();
        }
        free(out);
        off += used;
    }
    free(buf);
    return 0;
}
