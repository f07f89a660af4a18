/*
 * What an algorithm's cost function (dc_coll_algo_t.cost) is given, and the
 * alpha-beta-gamma notation every formula is written in. select.c fills a
 * dc_cost_in_t from the comm and the link costs; each algorithm's file holds
 * its formula next to its row.
 */
#ifndef DC_COLL_COST_H
#define DC_COLL_COST_H

#include <math.h>
#include <stddef.h>

#include "coll.h"

/* Transport classes with their own alpha and bandwidth. */
typedef enum dc_link_class {
    DC_LINK_SELF = 0,
    DC_LINK_SHM,
    DC_LINK_TCP,
    DC_LINK_UCX,
    DC_LINK_MPI,
    DC_LINK_NCCL,
    DC_LINK_COUNT
} dc_link_class_t;

/*
 * Notation: p ranks, n bytes, a = alpha and b = beta (1/bandwidth) of the link
 * class, g = gamma (seconds to reduce one byte), c = seconds to copy one byte
 * in memory, L = ceil(log2 p), q = 2^floor(log2 p) and r = p - q (ranks folded
 * in first by algorithms that need a power of two; f = 1 when r > 0, else 0).
 * Pipelined algorithms (ring, rab, dbtree) reduce one piece while the next is
 * in flight, so a step that receives and reduces s bytes costs s * max(b, g).
 * With several hosts (h > 1), algorithms other than the rings have every rank
 * of a host exchanging across hosts at once, so they see a bandwidth shared by
 * m = ceil(p / h) ranks: b' = m * b; the rings cross each host boundary once
 * per step and keep b (ranks in host order). as, bs: the shm link, for the
 * steps of hierarchical algorithms within a host.
 *
 * A cost function returns predicted seconds, or INFINITY where the algorithm
 * does not apply (the selector then leaves it out unless DCOMM_TUNE forces it).
 * It is called for every rank count, p <= 1 included: there nothing moves, so
 * every algorithm that applies costs 0 (ties keep table order); an algorithm
 * that applies only on some links or hosts says so before that.
 */
typedef struct dc_cost_in {
    size_t bytes;        /* the message, as dc_select_candidates counts it */
    double n;            /* bytes as a double */
    int p;               /* ranks */
    int h;               /* hosts */
    dc_link_class_t cls; /* the slowest link class, as the caller gave it */
    double a;            /* that class's alpha, seconds; times the alpha scale for allreduce rows */
    double b;            /* its beta, seconds per byte */
    double b_shared;     /* b' = ceil(p / h) b when h > 1, else b */
    double g;            /* gamma, seconds per byte reduced */
    double c;            /* seconds per byte copied in memory */
    double shm_a;        /* as: the shm link's alpha (times the alpha scale, as a) */
    double shm_b;        /* bs: the shm link's beta */
} dc_cost_in_t;

/* L = ceil(log2 p); 0 for p <= 1. */
static inline int dc_cost_ceil_log2(int p)
{
    int l = 0;

    while ((1 << l) < p) {
        l++;
    }
    return l;
}

/* floor(log2 p), so q = 1 << dc_cost_floor_log2(p); 0 for p <= 1. */
static inline int dc_cost_floor_log2(int p)
{
    int l = 0;

    while ((2 << l) <= p) {
        l++;
    }
    return l;
}

/* For algorithms that fold the r = p - q extra ranks in first: L' = log2 q,
 * q = 2^floor(log2 p), and f = 1 when r > 0, else 0 (the notation above). */
typedef struct dc_cost_fold {
    double lq, q, f;
} dc_cost_fold_t;

static inline dc_cost_fold_t dc_cost_fold(int p)
{
    int l = dc_cost_floor_log2(p);
    double q = (double)(1 << l);

    return (dc_cost_fold_t){.lq = l, .q = q, .f = (p > q) ? 1.0 : 0.0};
}

/* k = ceil(n / DC_COLL_SCRATCH_MIN), at least 1: the column pieces the
 * reduce-scatters work through the scratch in, each a full schedule. */
static inline double dc_cost_scratch_pieces(double n)
{
    return DC_MAX(1.0, ceil(n / (double)DC_COLL_SCRATCH_MIN));
}

#endif
