/* Deadlines of device (NCCL) operations, as pure arithmetic for tests.
 *
 * DCOMM_TIMEOUT means "no progress for this long" (config.c), and 0 means never.
 * An NCCL operation is opaque while it runs: the host sees only its completion,
 * so its length alone says nothing about progress, and a fixed deadline would
 * fail every operation that is merely large (or on a slow link). Peer loss is
 * therefore caught while waiting by the liveness checks (dlaunch's events, the
 * host transports' checks, NCCL's asynchronous error); the deadline only bounds
 * a hang of live peers: DCOMM_TIMEOUT after the time the operation's bytes could
 * take at DC_DEV_FLOOR_BYTES_PER_S, a rate below any link NCCL runs on. */
#ifndef DC_DEV_DEADLINE_H
#define DC_DEV_DEADLINE_H

#include <stddef.h>
#include <stdint.h>

#define DC_DEV_FLOOR_BYTES_PER_S (10ull << 20) /* 10 MiB/s */
#define DC_DEV_NO_DEADLINE       UINT64_MAX

/* The dc_now_ns() time at which an operation of bytes started at start_ns is
 * given up: DC_DEV_NO_DEADLINE when timeout_ms is 0; saturates, never wraps. */
uint64_t dc_dev_op_deadline(uint64_t start_ns, uint64_t timeout_ms, size_t bytes);

/* A timeout in ms for calls that take an int and read <= 0 as "do not wait"
 * (a rendezvous get): DCOMM_TIMEOUT=0 ("never") becomes INT_MAX. */
int dc_dev_wait_ms(uint64_t timeout_ms);

#endif
