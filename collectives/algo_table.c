/*
 * The algorithms select.c chooses from, one row each; each algorithm prices
 * itself (dc_coll_algo_t.cost, beside it in its file). Rows of one collective
 * are listed from the most to the least general, since table order breaks
 * ties in predicted cost; the exception is "mpi", first of its collective,
 * which prices itself at the cheapest of dcomm's own flat schedules when every
 * link is mpi (MPI runs the same schedules without dcomm's per-message layer),
 * so it wins those ties. The control rows serve the coordinator's agreement
 * messages, the device rows tensors in device memory (select.h).
 */
#include "select.h"

const dc_algo_row_t dc_algo_table[] = {
    {DC_COLL_ALLREDUCE, &dc_allreduce_mpi_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_ring_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_rab_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_rd_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_dbtree_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_shmdirect_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_hier_algo},
    {DC_COLL_ALLGATHER, &dc_allgather_mpi_algo},
    {DC_COLL_ALLGATHER, &dc_allgather_ring_algo},
    {DC_COLL_ALLGATHER, &dc_allgather_bruck_algo},
    {DC_COLL_ALLGATHER, &dc_allgather_hier_algo},
    {DC_COLL_BROADCAST, &dc_bcast_mpi_algo},
    {DC_COLL_BROADCAST, &dc_bcast_binomial_algo},
    {DC_COLL_BROADCAST, &dc_bcast_chain_algo},
    {DC_COLL_REDUCESCATTER, &dc_reducescatter_ring_algo},
    {DC_COLL_REDUCESCATTER, &dc_reducescatter_rhalving_algo},
    {DC_COLL_ALLTOALL, &dc_alltoall_pairwise_algo},
    {DC_COLL_BARRIER, &dc_barrier_dissemination_algo},
};

const int dc_algo_table_len = (int)(sizeof(dc_algo_table) / sizeof(dc_algo_table[0]));

/* Recursive doubling: log2(p) steps for a vector of a few KiB; ring where it
 * declines. Binomial: rank 0's settings, once. */
const dc_algo_row_t dc_control_table[] = {
    {DC_COLL_ALLREDUCE, &dc_allreduce_rd_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_ring_algo},
    {DC_COLL_BROADCAST, &dc_bcast_binomial_algo},
};

const int dc_control_table_len = (int)(sizeof(dc_control_table) / sizeof(dc_control_table[0]));

/* Device buffers: NCCL's own collectives (coll_nccl.c). Barrier has none: it
 * carries no buffer, so it never runs on the device. */
const dc_algo_row_t dc_device_table[] = {
    {DC_COLL_ALLREDUCE, &dc_allreduce_nccl_algo},
    {DC_COLL_BROADCAST, &dc_bcast_nccl_algo},
    {DC_COLL_ALLGATHER, &dc_allgather_nccl_algo},
    {DC_COLL_REDUCESCATTER, &dc_reducescatter_nccl_algo},
    {DC_COLL_ALLTOALL, &dc_alltoall_nccl_algo},
};

const int dc_device_table_len = (int)(sizeof(dc_device_table) / sizeof(dc_device_table[0]));
