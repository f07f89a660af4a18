/* libFuzzer harness: the check of a peer's shm segment header
 * (transports/shm, dc_shm_seg_find_ring), then the accesses the transport
 * makes through the ring it found (its control block, the first and last byte
 * of its data), exactly as ep_map_peer and the send path do.
 *
 * The segment is laid out as mmap would map it (page-rounded).
 * Input: the address record's pid (i32, little-endian) and the peer's rank
 * (a byte, % 8), our rank (a byte, % 8), then the segment as the peer left it
 * (its size is what remains, as fstat would report it; the record's size
 * agrees, since ep_map_peer checks that first). */
#include <stdio.h>

#include "fuzz_common.h"
#include "shm/shm.h"

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
    dc_shm_seg_t *seg = NULL;
    volatile uint8_t sink;
    int32_t pid;
    int peer, me, ring;

    uint32_t u = 0;

    for (int i = 0; i < 4; i++) {
        u |= (uint32_t)fuzz_u8(&in) << (8 * i);
    }
    pid = (int32_t)u;
    peer = fuzz_u8(&in) % 8;
    me = fuzz_u8(&in) % 8;
    data = in.p;
    size = in.left;

    /* As mmap gives it: whole pages, the bytes past the file's end in its last
     * page read as zero, and ASan sees any access beyond. An empty file cannot
     * be mapped (ep_map_peer fails before the check). */
    if (size == 0) {
        return 0;
    }
    size_t mapped = (size + 4095) & ~(size_t)4095;
    if (posix_memalign((void **)&seg, 4096, mapped) != 0) {
        abort();
    }
    memset(seg, 0, mapped);
    memcpy(seg, data, size);
    ring = dc_shm_seg_find_ring(seg, size, peer, pid, me, "/proc/4242/fd/7");
    if (ring >= 0) {
        const dc_shm_ring_t *r = &seg->rings[ring];
        const uint8_t *tx_data = (const uint8_t *)seg + r->data_offset;
        uint64_t tx_mask = seg->ring_size - 1;

        sink = (uint8_t)atomic_load_explicit(&r->head, memory_order_relaxed);
        sink = (uint8_t)atomic_load_explicit(&r->tail, memory_order_relaxed);
        sink = tx_data[0];
        sink = tx_data[tx_mask];
        (void)sink;
    }
    free(seg);
    return 0;
}
