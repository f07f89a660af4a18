/*
 * Algorithm selection: for each collective, rank the algorithm rows by an
 * alpha-beta(-gamma) cost model of the transport serving the comm, after the
 * user's DCOMM_TUNE overrides. Every rank must pick the same algorithm for the
 * same tensor, so the ranking depends only on values that are identical on all
 * ranks: the arguments, the rules, and link parameters that are either
 * compile-time defaults or broadcast by dc_select_calibrate.
 */
#ifndef DC_SELECT_H
#define DC_SELECT_H

#include <stddef.h>

#include "coll.h"
#include "coll_cost.h"
#include "dc_coll.h"

/* Collectives are numbered by util/dc_coll.h's dc_coll_t; the selector knows
 * DC_COLL_ALLREDUCE .. DC_COLL_BARRIER. */
#define DC_SELECT_NCOLLS DC_COLL_NALGO

/* Name used by DCOMM_TUNE ("allreduce", "broadcast" ...); NULL when out of range. */
const char *dc_select_coll_name(int coll);

/* Transport classes (dc_link_class_t) are in coll_cost.h. */

/* "self", "shm", "tcp" ... as dc_net_transport_name gives them; -1 when unknown. */
int dc_link_class_from_name(const char *transport_name);
const char *dc_link_class_name(dc_link_class_t cls);

/* One selectable algorithm. Table order breaks ties in predicted cost. */
typedef struct dc_algo_row {
    int coll;                   /* DC_COLL_ALLREDUCE .. DC_COLL_BARRIER */
    const dc_coll_algo_t *algo; /* ranked by algo->cost */
} dc_algo_row_t;

/* The algorithms built into this library (collectives/algo_table.c). */
extern const dc_algo_row_t dc_algo_table[];
extern const int dc_algo_table_len;

/* The coordinator's own agreement traffic (the fast path's bit vector, the
 * settings of rank 0 at start-up): tiny, latency-bound messages whose algorithm
 * must not depend on the cost model, calibration, autotune or DCOMM_TUNE (every
 * cycle pays for it). Ranked by their order alone: the caller runs the first
 * row of its collective whose supported() accepts (collectives/algo_table.c). */
extern const dc_algo_row_t dc_control_table[];
extern const int dc_control_table_len;

/* Tensors in device memory (ctx->dev set): a device library's own collectives
 * (coll_nccl.c). One row per collective so far, ranked by order alone like
 * the control rows (collectives/algo_table.c). */
extern const dc_algo_row_t dc_device_table[];
extern const int dc_device_table_len;

#define DC_SELECT_MAX_ROWS 32 /* rows per table, all collectives together */

typedef struct dc_select dc_select_t;

/* Parses tune_spec (DCOMM_TUNE; NULL or "" for none) against dc_algo_table.
 * A malformed spec gives DCOMM_ERR_INVALID_ARG with a dc_error_set message
 * quoting the bad rule and saying what was expected. */
dc_status_t dc_select_create(const char *tune_spec, dc_select_t **sel_p);

/* The same over another table (unit tests; rows must outlive sel). */
dc_status_t dc_select_create_rows(const char *tune_spec, const dc_algo_row_t *rows, int nrows,
                                  dc_select_t **sel_p);

void dc_select_destroy(dc_select_t *sel);

/* Link parameters of one transport class: latency alpha in microseconds and
 * bandwidth in GB/s (10^9 bytes per second). Ignored unless both are > 0.
 * Must be given the same values on every rank. */
void dc_select_set_link(dc_select_t *sel, dc_link_class_t cls, double alpha_us, double bw_gbs);

/* Local compute rates of the model, GB/s: reduce (bytes of one input folded
 * into another per second: gamma = 1/reduce_gbs) and memory copy (used by
 * shm-direct). Ignored unless > 0. Same on every rank. */
void dc_select_set_compute(dc_select_t *sel, double reduce_gbs, double copy_gbs);

/* Multiplies the links' alpha in the allreduce cost models (1 by default):
 * below 1 the bandwidth-optimal algorithms win from smaller sizes on, above 1
 * the latency-optimal ones keep larger sizes. Autotune moves the allreduce
 * size thresholds with it. Ignored unless > 0. Same on every rank. */
void dc_select_set_alpha_scale(dc_select_t *sel, double scale);

/* Fills out[0 .. ret-1] (ret <= max) with coll's algorithms in preference order
 * for a message of `bytes` (allreduce/broadcast: the buffer; allgather: the
 * gathered total; reducescatter: the input of one rank; alltoall: what one rank
 * sends; barrier: 0) over nranks ranks on nhosts hosts whose slowest link is of
 * class cls: the algorithm of the first DCOMM_TUNE rule that matches (coll and
 * lo <= bytes < hi) comes first, then the others by predicted cost (cheapest
 * first; ties in table order). Algorithms the model deems inapplicable here
 * (shmdirect off a single shm host) are left out unless forced. The caller
 * runs the first whose supported() accepts. At DCOMM_LOG_LEVEL=debug the
 * ranking with predicted times is logged. Allocates nothing. */
int dc_select_candidates(const dc_select_t *sel, int coll, size_t bytes, int nranks, int nhosts,
                         dc_link_class_t cls, const dc_coll_algo_t **out, int max);

/* Fills out[0 .. ret-1] (ret <= max) with the control rows of coll
 * (dc_control_table), in order. */
int dc_select_control(int coll, const dc_coll_algo_t **out, int max);

/* Fills out[0 .. ret-1] (ret <= max) with the device rows of coll
 * (dc_device_table), in order. The caller runs the first whose supported()
 * accepts. */
int dc_select_device(int coll, const dc_coll_algo_t **out, int max);

/* Predicted seconds of one row: its algorithm's cost function given the link
 * costs of class cls (INFINITY when inapplicable or the algorithm has no cost
 * function); for the ranking, logs and tests. */
double dc_select_predict(const dc_select_t *sel, const dc_algo_row_t *row, size_t bytes, int nranks,
                         int nhosts, dc_link_class_t cls);

/* Writes "allreduce 4194304 B, 4 ranks, 1 host, shm: ring (1.2 ms), rd (3.4 ms)"
 * into buf (truncated to len); returns buf. */
const char *dc_select_explain(const dc_select_t *sel, int coll, size_t bytes, int nranks,
                              int nhosts, dc_link_class_t cls, char *buf, size_t len);

/*
 * Collective over all size ranks of net (world ranks). Rank 0 measures, by a
 * short ping-pong (8 B and 1 MiB), alpha and bandwidth of each transport class
 * serving it: with rank 1, and with the first rank of every other class among
 * its peers (e.g. the first rank on another host). It also times a 1 MiB
 * memcpy and float sum for the compute rates. Then it sends the results to
 * every rank, and every rank stores them with dc_select_set_link and
 * dc_select_set_compute, so all ranks select identically. Classes not measured
 * keep their previous values. Takes a few ms (well under 20 ms per class on
 * loopback TCP). tag: a tag no other traffic uses meanwhile.
 */
dc_status_t dc_select_calibrate(dc_select_t *sel, dc_net_t *net, int rank, int size, uint64_t tag);

#endif
