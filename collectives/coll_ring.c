/*
 * The ring pattern shared by the ring and halving algorithms and by the
 * coordinator (a reducescatter's result sizes): how count elements split into
 * one segment per rank, and which segment each rank sends and receives at each
 * step of a ring reduce-scatter.
 */
#include "coll.h"

void dc_ring_segment(size_t count, int size, int i, size_t *offset_p, size_t *len_p)
{
    size_t base = count / (size_t)size, extra = count % (size_t)size, ui = (size_t)i;

    *offset_p = ui * base + (ui < extra ? ui : extra);
    *len_p = base + (ui < extra);
}

void dc_ring_rs_step(int rank, int size, int step, int *send_seg_p, int *recv_seg_p)
{
    *send_seg_p = ((rank - step) % size + size) % size;
    *recv_seg_p = ((rank - step - 1) % size + size) % size;
}
