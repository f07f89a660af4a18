/*
 * The algorithms select.c chooses from, one row each with its cost model. Rows
 * of one collective are listed from the most to the least general, since table
 * order breaks ties in predicted cost; the exception is "mpi", first of its
 * collective, which the model prices at the cheapest of dcomm's own
 * algorithms when every link is mpi (MPI runs the same schedules without
 * dcomm's per-message layer), so it wins those ties. The control rows serve
 * the coordinator's agreement messages, the device rows tensors in device
 * memory (select.h).
 */
#include "select.h"

const dc_algo_row_t dc_algo_table[] = {
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_MPI, &dc_allreduce_mpi_algo},
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_RING, &dc_allreduce_ring_algo},
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_RAB, &dc_allreduce_rab_algo},
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_RD, &dc_allreduce_rd_algo},
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_DBTREE, &dc_allreduce_dbtree_algo},
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_SHMDIRECT, &dc_allreduce_shmdirect_algo},
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_HIER, &dc_allreduce_hier_algo},
    {DC_COLL_ALLGATHER, DC_COST_ALLGATHER_MPI, &dc_allgather_mpi_algo},
    {DC_COLL_ALLGATHER, DC_COST_ALLGATHER_RING, &dc_allgather_ring_algo},
    {DC_COLL_ALLGATHER, DC_COST_ALLGATHER_BRUCK, &dc_allgather_bruck_algo},
    {DC_COLL_ALLGATHER, DC_COST_ALLGATHER_HIER, &dc_allgather_hier_algo},
    {DC_COLL_BROADCAST, DC_COST_BCAST_MPI, &dc_bcast_mpi_algo},
    {DC_COLL_BROADCAST, DC_COST_BCAST_BINOMIAL, &dc_bcast_binomial_algo},
    {DC_COLL_BROADCAST, DC_COST_BCAST_CHAIN, &dc_bcast_chain_algo},
    {DC_COLL_REDUCESCATTER, DC_COST_REDUCESCATTER_RING, &dc_reducescatter_ring_algo},
    {DC_COLL_REDUCESCATTER, DC_COST_REDUCESCATTER_RHALVING, &dc_reducescatter_rhalving_algo},
    {DC_COLL_ALLTOALL, DC_COST_ALLTOALL_PAIRWISE, &dc_alltoall_pairwise_algo},
    {DC_COLL_BARRIER, DC_COST_BARRIER_DISSEMINATION, &dc_barrier_dissemination_algo},
};

const int dc_algo_table_len = (int)(sizeof(dc_algo_table) / sizeof(dc_algo_table[0]));

/* Recursive doubling: log2(p) steps for a vector of a few KiB; ring where it
 * declines. Binomial: rank 0's settings, once. */
const dc_pref_row_t dc_control_table[] = {
    {DC_COLL_ALLREDUCE, &dc_allreduce_rd_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_ring_algo},
    {DC_COLL_BROADCAST, &dc_bcast_binomial_algo},
};

const int dc_control_table_len = (int)(sizeof(dc_control_table) / sizeof(dc_control_table[0]));

/* Device buffers: NCCL's own collectives (coll_nccl.c). Barrier has none: it
 * carries no buffer, so it never runs on the device. */
const dc_pref_row_t dc_device_table[] = {
    {DC_COLL_ALLREDUCE, &dc_allreduce_nccl_algo},
    {DC_COLL_BROADCAST, &dc_bcast_nccl_algo},
    {DC_COLL_ALLGATHER, &dc_allgather_nccl_algo},
    {DC_COLL_REDUCESCATTER, &dc_reducescatter_nccl_algo},
    {DC_COLL_ALLTOALL, &dc_alltoall_nccl_algo},
};

const int dc_device_table_len = (int)(sizeof(dc_device_table) / sizeof(dc_device_table[0]));
