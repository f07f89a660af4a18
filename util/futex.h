/* Cross-process futex wait/wake on a 32-bit word in shared memory. */
#ifndef DC_FUTEX_H
#define DC_FUTEX_H

#include <stdatomic.h>
#include <stdint.h>

/* Sleeps while *word == expected, at most timeout_ns (0: no sleep). Returns 0 on
 * wake or value change, -1 on timeout/interrupt (callers re-check anyway). */
int dc_futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns);
/* Wakes every waiter on word. */
void dc_futex_wake(_Atomic uint32_t *word);

/* A doorbell: a process sleeps on it; anybody (another thread or process) that
 * makes work for that process rings it. Lives in shared memory when remote
 * processes ring it. */
typedef struct dc_doorbell {
    _Atomic uint32_t seq;      /* bumped on every ring */
    _Atomic uint32_t sleepers; /* > 0 while somebody sleeps on seq */
} dc_doorbell_t;

static inline void dc_doorbell_ring(dc_doorbell_t *db)
{
    atomic_fetch_add(&db->seq, 1);
    if (atomic_load(&db->sleepers) != 0) {
        dc_futex_wake(&db->seq);
    }
}

#endif
