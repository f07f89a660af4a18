/*
 * The network of one process: which transport serves each peer, and the one
 * place where the process waits for requests (spinning briefly, then sleeping
 * on a doorbell futex or poll(), never busy-looping).
 */
#ifndef DC_NET_H
#define DC_NET_H

#include "transport.h"

typedef struct dc_net dc_net_t;

/* Called while waiting, at least every ~100 ms and whenever watch_fd is
 * readable: returns a negative status (after dc_error_set) to abort every wait,
 * e.g. when dlaunch reports that a rank died. */
typedef dc_status_t (*dc_net_watch_fn_t)(void *arg);

/* Returns nonzero to end a wait early (dc_net_wait then returns DCOMM_INPROGRESS). */
typedef int (*dc_net_stop_fn_t)(void *arg);

/* Picks a transport for every peer (self for this rank; shm for same-host peers;
 * tcp otherwise), filtered by spec (DCOMM_TRANSPORTS: "shm,tcp" keeps only those,
 * "^tcp" excludes; NULL or "" keeps all), opens them and connects every peer.
 * Collective over all ranks, which must pass the same spec. boot->peers is
 * ignored (computed here). */
dc_status_t dc_net_open(const dc_bootstrap_t *boot, const char *spec, dc_net_t **net_p);
void dc_net_close(dc_net_t *net);

dc_endpoint_t *dc_net_ep(dc_net_t *net, int rank);
/* Name of the transport serving rank ("self", "shm", "tcp"). */
const char *dc_net_transport_name(dc_net_t *net, int rank);

/* Whether the transport serving rank shares memory with it (its query()'s
 * shared_memory): a host segment group can be built over such peers. */
int dc_net_shares_memory(dc_net_t *net, int rank);
/* The transports in use (self included), each with what its query() said. */
int dc_net_transport_count(dc_net_t *net);
const char *dc_net_transport_at(dc_net_t *net, int i, dc_transport_attr_t *attr_p);

/* DCOMM_TRANSPORTS syntax: "shm,tcp" keeps those, "^tcp,shm" excludes those;
 * "" or NULL keeps all. 1 when spec allows the transport called name. */
int dc_net_spec_allows(const char *spec, const char *name);

/* Drives every transport once; returns the events handled. */
int dc_net_progress(dc_net_t *net);

/* Waits until every request in reqs is complete. Returns DCOMM_OK, the first
 * request error, the watch function's error, DCOMM_ERR_TIMEOUT after
 * timeout_ms without any progress (message naming the awaited peer), or
 * DCOMM_INPROGRESS when stop(arg) returned nonzero. stop may be NULL. */
dc_status_t dc_net_wait(dc_net_t *net, dc_request_t *const *reqs, int nreqs,
                        dc_net_stop_fn_t stop, void *stop_arg);

/* Sleeps until the deadline (dc_now_ns clock) or dc_net_wake; no progress. */
void dc_net_sleep_until(dc_net_t *net, uint64_t deadline_ns);

/* For a thread that does not drive the network while another may: the wake
 * sequence now, then a sleep of at most timeout_ns that ends at once if the
 * sequence moved after seq was read, else at the next ring that wakes
 * sleepers. Rings (a peer's message, dc_net_wake) wake sleepers only while
 * the sleeper count is nonzero: such a thread counts itself in with
 * dc_net_sleepers_add(net, 1) when rings must reach it, and out (-1) after.
 * Calls no transport, so it may run beside the thread that progresses. */
uint32_t dc_net_wake_seq(dc_net_t *net);
void dc_net_sleep_unowned(dc_net_t *net, uint32_t seq, uint64_t timeout_ns);
void dc_net_sleepers_add(dc_net_t *net, int delta);

/* Wakes the thread sleeping in dc_net_wait / dc_net_sleep_until. Any thread. */
void dc_net_wake(dc_net_t *net);

/* Checks the liveness of peers and of the job now (each transport's check, then
 * the watch function): DCOMM_OK or the first error, with its cause set. For
 * waits outside dc_net_wait (a device operation in flight). */
dc_status_t dc_net_check(dc_net_t *net);

/* This process failed (why: the cause, naming this rank) and lives on: every
 * transport that can tells its peers now (their waits end with PEER_LOST and
 * this cause). Call before dc_net_close. */
void dc_net_fail(dc_net_t *net, const char *why);

/* A failed wait may leave requests posted, and a transport completes them
 * (writes their status, or data into their buffers) until it closes: memory
 * holding such requests or buffers is handed here, and freed by
 * dc_net_close after the transports have closed. mem: from malloc. */
void dc_net_free_after_close(dc_net_t *net, void *mem);

/* Another file descriptor to watch while sleeping (-1 for none). */
void dc_net_set_watch(dc_net_t *net, int watch_fd, dc_net_watch_fn_t fn, void *arg);

/* Deadline for waits without progress, in ms (<= 0: none). */
void dc_net_set_timeout(dc_net_t *net, int timeout_ms);

#endif
