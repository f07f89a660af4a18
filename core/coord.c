/*
 * The coordinator thread: the only thread that communicates. Each cycle it
 * takes the queued requests and agrees with the other ranks on what is ready
 * everywhere (negotiation: the fast path over the response cache, else a slow
 * round through rank 0; coord_neg.h), then executes that work in the agreed
 * order (coord_exec.h). With DCOMM_CACHE_CAPACITY=0 every cycle is a slow
 * round.
 *
 * When a cycle runs nothing (the same on every rank) the ranks go idle: each sleeps until its own
 * queue gets work or a peer sends WAKE. A rank leaving idle sends exactly one
 * WAKE to every peer, so every posted WAKE receive is matched before the next
 * idle period, and per-peer FIFO order keeps the cycle messages behind it.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "coord.h"
#include "dc_time.h"
#include "futex.h"
#include "log.h"
#include "shm_group.h"

#define TAG_WAKE (0xffull << 56)

static void fail_all(coord_t *c, dc_status_t status, const char *msg)
{
    dc_neg_fail_all(&c->neg, &c->work, status, msg);
}

/* quiet: the peer waited on in vain (a timeout), -1 when none. Runs on the
 * coordinator thread only: it closes the network, on which a waiting thread
 * may otherwise sleep (dc_coord_drive hands its failures over). */
static void coord_fatal(coord_t *c, dc_status_t status, int quiet, const char *msg)
{
    dc_state_t *st = c->st;
    char text[1024];
    dc_net_t *net;

    dc_error_set_quiet_peer(-1);
    snprintf(text, sizeof(text), "%s", msg); /* msg may live in this thread's error */
    dc_cause_explain(st, status, quiet, text, sizeof(text));
    pthread_mutex_lock(&st->lock);
    if (st->fatal_status == 0) {
        st->fatal_status = status;
        snprintf(st->fatal_msg, sizeof(st->fatal_msg), "%s", text);
    }
    net = st->net;
    st->net = NULL;
    pthread_mutex_unlock(&st->lock);
    DC_ERROR("%s (%s); failing every pending operation", text, dcomm_status_string(status));
    /* Peers on this host learn the cause now, not at their DCOMM_TIMEOUT: this
     * process may live on after its failure (shm.c shm_fail, shm_group.c). */
    dc_shm_group_fail(c->ctx.shm_group, text);
    dc_shm_group_forget_net(c->ctx.shm_group);
    /* Close the network first: no transport may write into user buffers
     * after their handles complete. */
    if (net != NULL) {
        dc_net_fail(net, text);
        dc_net_close(net);
    }
    c->net = NULL;
    c->ctx.net = NULL;
    fail_all(c, status, text);
}

/* ---- idle ------------------------------------------------------------------- */

static dc_status_t wait_reqs(coord_t *c, dc_request_t **reqs, int n)
{
    return dc_net_wait(c->net, reqs, n, NULL, NULL);
}

static int idle_stop(void *arg)
{
    coord_t *c = arg;

    if (atomic_load(&c->st->queue_nonempty) || atomic_load(&c->st->shutdown_requested)) {
        return 1;
    }
    /* Rank 0 looks at waiting tensors now and then (stall inspector); leaving
     * idle wakes the others for one round, then all go idle again. */
    if (c->rank == 0 && dc_neg_table_count(&c->neg) > 0 && dc_now_ns() > c->idle_deadline_ns) {
        return 1;
    }
    /* Deadlock detection: report a wait that stands, or (rank 0) check. */
    if (dc_neg_dl_idle_stop(&c->neg, dc_now_ns())) {
        return 1;
    }
    for (int r = 0; r < c->size; r++) {
        if (r != c->rank && c->wake_rx[r].status != DCOMM_INPROGRESS) {
            return 1;
        }
    }
    return 0;
}

/* Completes the WAKE messages of the previous idle period. */
static dc_status_t idle_drain(coord_t *c)
{
    int k = 0;

    if (!c->wake_posted) {
        return DCOMM_OK;
    }
    for (int r = 0; r < c->size; r++) {
        if (r != c->rank) {
            c->wake_preqs[k++] = &c->wake_rx[r];
            c->wake_preqs[k++] = &c->wake_tx[r];
        }
    }
    c->wake_posted = 0;
    return wait_reqs(c, c->wake_preqs, k);
}

/* Begins an idle period (the cycle ran nothing, on every rank alike): the
 * previous period's WAKEs complete, this one's receives are posted. */
static dc_status_t idle_enter(coord_t *c)
{
    dc_status_t status = idle_drain(c);
    uint64_t now = dc_now_ns();

    if (status < 0) {
        return status;
    }
    c->idle = 1;
    c->idle_periods++;
    c->idle_deadline_ns = now + 100000000ull;
    dc_neg_dl_idle_begin(&c->neg, now);
    if (c->size == 1) { /* nobody to wake us: our own queue ends it */
        return DCOMM_OK;
    }
    c->epoch++;
    for (int r = 0; r < c->size; r++) {
        if (r == c->rank) {
            continue;
        }
        status = dc_ep_irecv(dc_net_ep(c->net, r), NULL, 0, TAG_WAKE | c->epoch, &c->wake_rx[r]);
        if (status < 0) {
            return status;
        }
    }
    c->wake_posted = 1;
    DC_TRACE("idle (epoch %llu)", (unsigned long long)c->epoch);
    return DCOMM_OK;
}

/* Whether the idle period ends now (*leave): the network moves once, then
 * idle_stop decides. No deadline while idle; liveness checks (each slice) and
 * dlaunch's events still end it when a peer dies, as does a failed WAKE. */
static dc_status_t idle_poll(coord_t *c, int *leave)
{
    *leave = 0;
    if (c->size > 1) {
        (void)dc_net_progress(c->net);
        for (int r = 0; r < c->size; r++) {
            if (r != c->rank && c->wake_rx[r].status < 0) {
                return c->wake_rx[r].status;
            }
        }
    }
    *leave = idle_stop(c);
    if (!*leave && dc_now_ns() - c->idle_checked_ns >= 100000000ull) {
        c->idle_checked_ns = dc_now_ns();
        return c->size > 1 ? dc_net_check(c->net) : DCOMM_OK;
    }
    return DCOMM_OK;
}

/* Ends it: exactly one WAKE to every peer (coord.c's header). */
static dc_status_t idle_leave(coord_t *c)
{
    c->idle = 0;
    for (int r = 0; r < c->size; r++) {
        if (r != c->rank) {
            dc_status_t status = dc_ep_isend(dc_net_ep(c->net, r), NULL, 0,
                                             TAG_WAKE | c->epoch, &c->wake_tx[r]);

            if (status < 0) {
                return status;
            }
        }
    }
    return DCOMM_OK;
}

/* ---- the loop -------------------------------------------------------------- */

static void finish_shutdown(coord_t *c, uint32_t flags)
{
    char msg[256];

    snprintf(msg, sizeof(msg), "rank %d called dcomm_shutdown before every rank submitted it",
             DC_WIRE_FLAG_GET_RANK(flags));
    /* Every rank's coordinator leaves with this round, also where the
     * application has not called dcomm_shutdown: what it submits from now on
     * is refused with this cause (api_submit.c) instead of waiting for a
     * coordinator that is gone. Set before fail_all takes the queue. */
    pthread_mutex_lock(&c->st->lock);
    if (c->st->fatal_status == 0) {
        c->st->fatal_status = DCOMM_ERR_SHUT_DOWN;
        snprintf(c->st->fatal_msg, sizeof(c->st->fatal_msg), "%s", msg);
    }
    pthread_mutex_unlock(&c->st->lock);
    fail_all(c, DCOMM_ERR_SHUT_DOWN, msg);
}

/* dcomm_timeline_start/stop, or DCOMM_TIMELINE at start: rank 0 writes. */
static void timeline_control(coord_t *c)
{
    dc_state_t *st = c->st;
    int cmd = atomic_exchange(&st->timeline_cmd, 0);
    char path[sizeof(st->timeline_path)];

    if (cmd == 0 || c->rank != 0) {
        return;
    }
    pthread_mutex_lock(&st->lock);
    snprintf(path, sizeof(path), "%s", st->timeline_path);
    pthread_mutex_unlock(&st->lock);
    dc_timeline_close(c->tl);
    c->tl = NULL;
    if (cmd == 1 && dc_timeline_open(path, &c->tl) < 0) {
        DC_WARN("%s", dc_error_get());
    }
}

/* Nice levels are per thread on Linux. Without a boost the coordinator shares
 * its core evenly with a computing application thread: a collective that needs
 * every rank's coordinator at once (shm-direct hands chunks back and forth)
 * then advances only while all of them happen to hold their cores, and a 12 MB
 * allreduce that takes 2 ms alone took 10-20 ms inside a training step. Raised
 * above the application, the coordinator preempts it for its short bursts and
 * sleeps otherwise. An unprivileged process may not go below nice 0 (beyond
 * RLIMIT_NICE): then it goes as far as it may. Returns the nice level the
 * thread runs at (20, the lowest priority, when no boost was asked or the
 * level is unknown: a waiting thread then never raises itself to it). */
static int coord_raise_priority(int64_t boost)
{
    const id_t self = (id_t)syscall(SYS_gettid);
    struct rlimit lim;
    int base, target, floor = 20;

    if (boost <= 0) {
        return 20;
    }
    errno = 0;
    base = getpriority(PRIO_PROCESS, self);
    if (errno != 0) {
        DC_DEBUG("coordinator priority: getpriority: %s", strerror(errno));
        return 20;
    }
    target = boost > base + 20 ? -20 : base - (int)boost;
    if (target >= base) {
        return base;
    }
    if (setpriority(PRIO_PROCESS, self, target) == 0) {
        DC_DEBUG("coordinator thread at nice %d (application thread %d)", target, base);
        return target;
    }
    int err = errno;
    /* RLIMIT_NICE's soft limit r allows nice down to 20 - r without privilege */
    if (getrlimit(RLIMIT_NICE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur <= 40) {
        floor = 20 - (int)lim.rlim_cur;
    }
    int got = floor > target && floor < base && setpriority(PRIO_PROCESS, self, floor) == 0 ?
              floor : base;
    DC_INFO("coordinator priority: nice %d not allowed (%s), running at nice %d beside the "
            "application's %d (DCOMM_COORD_PRIORITY)", target, strerror(err), got, base);
    return got;
}

/* The setting autotune chose, agreed on the fast path: every rank applies it. */
static void apply_tune(coord_t *c, int index)
{
    dc_tune_setting_t s;

    if (index != 255 && dc_autotune_setting(index, &s)) {
        dc_plan_set_threshold(&c->exec.plan, s.fusion_threshold);
        c->cycle_ns = s.cycle_ns;
        dc_run_set_alpha_scale(&c->run, s.alpha_scale);
    }
}

/* One cycle's agreement: the fast path when the cache is on, then a slow
 * round when some rank needs one. */
static dc_status_t negotiate(coord_t *c, int *slow_p, int *shutdown_p, uint32_t *flags_p)
{
    dc_status_t status = DCOMM_OK;
    int tune = 255;

    *slow_p = 1;
    *shutdown_p = 0;
    if (dc_neg_cache_on(&c->neg)) {
        status = dc_neg_fast_round(&c->neg, &c->ctx, &c->tag, &c->work,
                                   dc_autotune_current(&c->tune), slow_p, shutdown_p, &tune);
        if (status == DCOMM_OK) {
            apply_tune(c, tune);
        }
    }
    if (status == DCOMM_OK && *slow_p) {
        status = dc_neg_slow_round(&c->neg, c->net, c->tag++, &c->work, c->tl, c->cycles,
                                   flags_p);
    }
    return status;
}

/* Runs the agreed work; the cache learns it; the list empties. */
static dc_status_t execute(coord_t *c, uint64_t start)
{
    dc_status_t status;

    dc_run_cycle_begin(&c->run);
    status = dc_exec_run(&c->exec, &c->run, &c->work, &c->ctx, c->tl, &c->tag);
    if (status == DCOMM_OK) {
        dc_neg_learn(&c->neg, &c->work);
        dc_work_clear(&c->work);
    }
    dc_neg_dl_cycle_end(&c->neg);
    dc_autotune_sample(&c->tune, c->run.cycle_bytes, dc_now_ns() - start);
    return status;
}

/* One cycle: take the queue, agree, execute. It ends on every rank alike:
 * active, idle (idle_enter), or stopped by a shutdown. */
static dc_status_t coord_cycle(coord_t *c, uint64_t *start_p)
{
    uint64_t start = dc_now_ns();
    uint32_t flags = 0;
    int slow = 1, shutdown = 0, ran = 0, idle;
    dc_status_t status;

    *start_p = start;
    c->cycles++;
    timeline_control(c);
    if (c->tl != NULL && dc_config.timeline_mark_cycles) {
        dc_timeline_tick(c->tl, "coordinator", "CYCLE_START", start, NULL);
    }
    status = dc_neg_intake(&c->neg);
    dc_neg_stall_check(&c->neg);
    dc_neg_dl_check(&c->neg);
    if (status == DCOMM_OK) {
        status = negotiate(c, &slow, &shutdown, &flags);
    }
    if (status == DCOMM_OK) {
        ran = c->work.n > 0;
        status = execute(c, start);
    }
    if (status < 0) {
        return status;
    }
    if (flags & DC_WIRE_FLAG_SHUTDOWN) {
        status = idle_drain(c);
        if (status == DCOMM_OK) {
            finish_shutdown(c, flags);
            atomic_store(&c->stopped, 1);
            atomic_store(&c->st->coord_exited, 1);
        }
        return status;
    }
    /* Fast path: a cycle that ran nothing goes idle on every rank (the
     * condition is the same everywhere), also with work pending: the rank
     * whose submission completes it wakes the others at once, so no rank
     * waits out a sleeping peer's cycle time. */
    idle = dc_neg_cache_on(&c->neg) ? !ran && !slow && !shutdown
                                    : (flags & DC_WIRE_FLAG_IDLE) != 0;
    return idle ? idle_enter(c) : DCOMM_OK;
}

static void drive_gone(coord_t *c);

/* The coordinator thread's place among the network's sleepers (rings reach
 * a sleeper only while the count is nonzero, dc_net_sleepers_add): counted
 * while it watches an idle period, not while a waiting thread holds the role,
 * whose every message would otherwise ring it awake for nothing. Either
 * thread moves it; the exchange keeps the count exact. */
static void bg_count(coord_t *c, int on)
{
    if (atomic_exchange(&c->bg_counted, on) != on) {
        dc_net_sleepers_add(c->net, on ? 1 : -1);
    }
}

/* The coordinator thread. It holds the role while it works and lets go of it
 * while it sleeps, so that a thread blocked in dcomm_wait can run the cycles
 * itself (dc_coord_drive). While the role is taken it sleeps uncounted: the
 * waiting thread counts it back in, and rings it when it leaves work behind. */
static void *coord_main(void *arg)
{
    coord_t *c = arg;
    dc_status_t status = DCOMM_OK;
    int quiet = -1;

    dc_log_set_rank(c->rank);
    pthread_setname_np(pthread_self(), "dcomm-coord"); /* for top -H, gdb and tests */
    atomic_store(&c->bg_nice, coord_raise_priority(dc_config.coord_priority));
    /* dc_coord_start returns once the thread exists with its name and
     * priority (a waiting thread may run every cycle before it ever would). */
    atomic_store(&c->started, 1);
    dc_futex_wake(&c->started);
    for (;;) {
        uint32_t seq = dc_net_wake_seq(c->net), word = atomic_load(&c->bg_word);
        uint64_t start = 0;
        int leave = 0;

        if (pthread_mutex_trylock(&c->role) != 0) {
            /* Parked apart from the network's rings, which a waiting thread's
             * messages would otherwise end over and over; it wakes us when it
             * lets go (dc_coord_drive). */
            atomic_store(&c->bg_parked, 1);
            dc_futex_wait(&c->bg_word, word, 100000000ull);
            atomic_store(&c->bg_parked, 0);
            continue;
        }
        if (atomic_load(&c->stopped)) {
            pthread_mutex_unlock(&c->role);
            break;
        }
        if (c->fail_status < 0) { /* a waiting thread's cycle failed */
            status = c->fail_status;
            quiet = c->fail_quiet;
            dc_error_set(status, "%s", c->fail_text);
        } else if (c->idle) {
            bg_count(c, 1); /* before the look: a message after it rings us */
            status = idle_poll(c, &leave);
            if (status == DCOMM_OK && !leave) {
                pthread_mutex_unlock(&c->role);
                dc_net_sleep_unowned(c->net, seq, 100000000ull);
                bg_count(c, 0);
                continue;
            }
            bg_count(c, 0);
            if (status == DCOMM_OK) {
                status = idle_leave(c);
            }
        }
        if (status == DCOMM_OK) {
            status = coord_cycle(c, &start);
        }
        if (status < 0) {
            char text[1024];

            if (c->fail_status >= 0) {
                quiet = status == DCOMM_ERR_TIMEOUT ? dc_error_quiet_peer() : -1;
            }
            snprintf(text, sizeof(text), "%s", dc_error_get());
            atomic_store(&c->stopped, 1);
            drive_gone(c);
            coord_fatal(c, status, quiet, text);
            pthread_mutex_unlock(&c->role);
            break;
        }
        int active = !c->idle && !atomic_load(&c->stopped);
        pthread_mutex_unlock(&c->role);
        if (active && !atomic_load(&c->st->queue_nonempty) && c->cycle_ns > 0) {
            dc_net_sleep_until(c->net, start + c->cycle_ns);
        }
    }
    atomic_store(&c->st->coord_exited, 1);
    return NULL;
}

static void drive_end(dc_state_t *st, coord_t *c, dcomm_handle_t handle)
{
    pthread_mutex_lock(&st->lock);
    dc_handle_wait_end(st, handle);
    pthread_mutex_unlock(&st->lock);
    atomic_fetch_sub(&c->drivers, 1);
}

/* Until no waiting thread is inside dc_coord_drive (they leave at once once
 * the coordinator stopped or failed): before the network closes or c is
 * freed. */
static void drive_gone(coord_t *c)
{
    while (atomic_load(&c->drivers) > 0) {
        struct timespec ts = {0, 100000};

        nanosleep(&ts, NULL);
    }
}

/* Whether handle is complete (or gone). */
static int handle_done(dc_state_t *st, dcomm_handle_t handle)
{
    dc_handle_slot_t *slot;
    int done;

    pthread_mutex_lock(&st->lock);
    slot = dc_handle_lookup(st, handle);
    done = slot == NULL || atomic_load(&slot->done);
    pthread_mutex_unlock(&st->lock);
    return done;
}

/* Cycles after the awaited handle completed, at most: the next one usually
 * finds nothing and enters the idle period, which the thread may then keep
 * asleep without waking; past this, the thread takes over. */
#define DRIVE_AFTER_DONE 4
/* How long a waiting thread looks for the peers' submissions in an idle
 * period before it sleeps. */
#define DRIVE_IDLE_SPIN_NS 50000ull

/* A thread blocked on handle runs the coordinator itself while the role is
 * free: no hand-off to the coordinator thread on submission and none back on
 * completion, which on a busy host cost a scheduler wake-up each (tens of
 * microseconds). It keeps the role until its handle is complete and the
 * coordinator is idle again (all ranks agree on idleness, so this costs one
 * more short cycle), sleeping like the thread when idle; anything else it
 * leaves to the thread, which it wakes. A failure is handed to the thread,
 * which alone closes the network. Returns when the handle is complete, or at
 * once when the role is taken (then the caller sleeps on the handle). */
void dc_coord_drive(dc_state_t *st, dcomm_handle_t handle)
{
    coord_t *c;
    int after = 0, ring = 0;
    unsigned spins = 0;
    uint64_t idle_since = 0;
    dc_status_t status = DCOMM_OK;

    pthread_mutex_lock(&st->lock);
    c = st->coord;
    if (c == NULL || !c->may_drive || atomic_load(&c->stopped) ||
        !dc_handle_wait_begin(st, handle)) {
        pthread_mutex_unlock(&st->lock);
        return;
    }
    atomic_fetch_add(&c->drivers, 1);
    pthread_mutex_unlock(&st->lock);
    c->drive_tries++;
    if (pthread_mutex_trylock(&c->role) != 0) {
        /* the thread has it: it must see our submission (not rung when
         * the submitter meant to wait here, dc_coord_notify) */
        c->drive_busy++;
        pthread_mutex_lock(&st->lock);
        dc_coord_wake(st);
        pthread_mutex_unlock(&st->lock);
        drive_end(st, c, handle);
        return;
    }
    bg_count(c, 0);
    /* At the coordinator thread's priority while we run its cycles: on a
     * loaded host a waiting thread at the application's would wait out
     * other processes' time slices in every exchange. */
    const id_t self = (id_t)syscall(SYS_gettid);
    int bg_nice = atomic_load(&c->bg_nice), my_nice;
    errno = 0;
    my_nice = getpriority(PRIO_PROCESS, self);
    int boosted = errno == 0 && bg_nice < my_nice && setpriority(PRIO_PROCESS, self, bg_nice) == 0;
    while (!atomic_load(&c->stopped) && c->fail_status >= 0) {
        int done = handle_done(st, handle), leave = 0;
        uint64_t start;

        if (done && !c->idle && ++after > DRIVE_AFTER_DONE) {
            break;
        }
        if (c->idle) {
            uint32_t seq = dc_net_wake_seq(c->net);

            if (done) {
                bg_count(c, 1); /* handing the watch back: from here rings reach it */
            }
            status = idle_poll(c, &leave);
            if (status == DCOMM_OK && !leave) {
                if (done) {
                    break;
                }
                /* The peers' submissions are usually moments away: look
                 * again for a while (yielding the core now and then) before
                 * sleeping, which costs every sender a ring. */
                if (idle_since == 0) {
                    idle_since = dc_now_ns();
                }
                if (dc_now_ns() - idle_since < DRIVE_IDLE_SPIN_NS) {
                    if ((++spins & 63) == 0) {
                        sched_yield();
                    }
                    continue;
                }
                dc_net_sleepers_add(c->net, 1);
                dc_net_sleep_unowned(c->net, seq, 100000000ull);
                dc_net_sleepers_add(c->net, -1);
                continue;
            }
            bg_count(c, 0);
            idle_since = 0;
            if (status == DCOMM_OK) {
                status = idle_leave(c);
            }
        }
        if (status == DCOMM_OK) {
            status = coord_cycle(c, &start);
            c->driven_cycles++;
        }
        if (status < 0) {
            c->fail_status = status;
            c->fail_quiet = status == DCOMM_ERR_TIMEOUT ? dc_error_quiet_peer() : -1;
            snprintf(c->fail_text, sizeof(c->fail_text), "%s", dc_error_get());
            break;
        }
    }
    if (boosted) {
        (void)setpriority(PRIO_PROCESS, self, my_nice);
    }
    ring = !c->idle || atomic_load(&c->stopped) || c->fail_status < 0;
    if (ring) {
        bg_count(c, 1); /* so that the ring reaches it */
    }
    pthread_mutex_unlock(&c->role);
    if (ring) { /* the network outlives us: the thread closes it only once
                 * no waiting thread is inside (drive_gone) */
        dc_net_wake(c->net);
    }
    /* The thread parked while we held the role (it found the role taken):
     * back to watching the network. Either it sees the word move before it
     * sleeps, or we see it parked. */
    atomic_fetch_add(&c->bg_word, 1);
    if (atomic_load(&c->bg_parked)) {
        dc_futex_wake(&c->bg_word);
    }
    drive_end(st, c, handle);
}

static void print_stats(coord_t *c)
{
    const dc_neg_stats_t *n = &c->neg.stats;
    const dc_exec_stats_t *x = &c->exec.stats;
    const dc_cache_t *cache = dc_neg_cache(&c->neg);

    fprintf(stderr,
            "dcomm stats rank %d: %llu cycles, %llu slow-path negotiations (the last in cycle "
            "%llu) and %llu fast-path, %.3f s negotiating, cache %llu hits / %llu misses, %llu "
            "idle periods, fused %llu tensors in %llu groups (%llu bytes; %llu groups without a "
            "copy)\n",
            c->rank, (unsigned long long)c->cycles, (unsigned long long)n->slow_rounds,
            (unsigned long long)n->last_slow_cycle, (unsigned long long)n->fast_rounds,
            (double)n->negotiate_ns / 1e9, (unsigned long long)cache->hits,
            (unsigned long long)cache->misses, (unsigned long long)c->idle_periods,
            (unsigned long long)x->fused_tensors, (unsigned long long)x->fused_groups,
            (unsigned long long)x->fused_bytes, (unsigned long long)x->zero_copy_groups);
    fprintf(stderr, "dcomm stats rank %d: %llu cycles run by waiting threads (DCOMM_WAIT_PROGRESS); "
            "%llu waits found the coordinator free, %llu busy\n",
            c->rank, (unsigned long long)c->driven_cycles,
            (unsigned long long)(c->drive_tries - c->drive_busy), (unsigned long long)c->drive_busy);
    dc_run_print_stats(&c->run, c->rank);
}

static void coord_free(coord_t *c)
{
    if (c == NULL) {
        return;
    }
    dc_neg_free(&c->neg);
    dc_work_free(&c->work);
    free(c->wake_rx);
    free(c->wake_tx);
    free(c->wake_preqs);
    free(c->world_ranks);
    dc_autotune_free(&c->tune);
    dc_timeline_close(c->tl);
    dc_shm_group_destroy(c->ctx.shm_group);
    dc_exec_free(&c->exec);
    dc_run_free(&c->run);
    if (c->ctx.scratch != NULL) {
        munmap(c->ctx.scratch, c->scratch_size);
    }
    pthread_mutex_destroy(&c->role);
    free(c);
}

/* Settings that must be equal everywhere come from rank 0; the parts that
 * depend on them start here. */
static dc_status_t agree_settings(coord_t *c)
{
    uint64_t v[3] = {dc_config.fusion_threshold, dc_config.cycle_time_us,
                     (uint64_t)(dc_config.cache_capacity > 0 ? dc_config.cache_capacity : 0)};
    uint64_t mine[3] = {v[0], v[1], v[2]};
    dc_coll_args_t args = {.sendbuf = v, .recvbuf = v, .count = 3, .dtype = DCOMM_INT64,
                           .root = 0};
    dc_coll_ctx_t ctx = c->ctx;
    dc_status_t status = DCOMM_OK;

    ctx.tag = c->tag++;
    if (c->size > 1) {
        status = dc_run_control(DC_COLL_BROADCAST, &ctx, &args);
    }
    if (status < 0) {
        return status;
    }
    if (memcmp(v, mine, sizeof(v)) != 0) {
        DC_WARN("DCOMM_FUSION_THRESHOLD, DCOMM_CYCLE_TIME or DCOMM_CACHE_CAPACITY differ from "
                "rank 0's; using rank 0's");
    }
    if (v[2] > 1u << 20) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "DCOMM_CACHE_CAPACITY %llu is too large "
                            "(at most %u)", (unsigned long long)v[2], 1u << 20);
    }
    /* Measured with bench/step_bench (ResNet-50 sizes, 2 ranks over shm):
     * fusing only tensors up to 1 MiB beats fusing everything by 1.3-1.4x. */
    dc_exec_init(&c->exec, c->st, v[0], 1u << 20);
    c->cycle_ns = v[1] * 1000ull;
    return dc_neg_init(&c->neg, c->st, (int)v[2]);
}

dc_status_t dc_coord_start(dc_state_t *st)
{
    coord_t *c = calloc(1, sizeof(*c));
    dc_status_t status;
    size_t n;

    if (c == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for the coordinator");
    }
    pthread_mutex_init(&c->role, NULL);
    c->st = st;
    c->net = st->net;
    c->rank = st->rank;
    c->size = st->size;
    n = (size_t)st->size;
    c->wake_rx = calloc(n, sizeof(*c->wake_rx));
    c->wake_tx = calloc(n, sizeof(*c->wake_tx));
    c->wake_preqs = calloc(2 * n, sizeof(*c->wake_preqs));
    c->world_ranks = calloc(n, sizeof(*c->world_ranks));
    /* Scratch is allocated once and pre-faulted: page faults cost ~12 us here. */
    c->scratch_size = DC_COLL_SCRATCH_MIN;
    c->ctx.scratch = mmap(NULL, c->scratch_size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (c->ctx.scratch == MAP_FAILED) {
        c->ctx.scratch = NULL;
    }
    if (c->wake_rx == NULL || c->wake_tx == NULL || c->wake_preqs == NULL ||
        c->world_ranks == NULL || c->ctx.scratch == NULL) {
        coord_free(c);
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for the coordinator");
    }
    for (int r = 0; r < c->size; r++) {
        c->world_ranks[r] = r;
    }
    c->ctx.net = st->net;
    c->ctx.rank = st->rank;
    c->ctx.size = st->size;
    c->ctx.ranks = c->world_ranks;
    c->ctx.host_of = st->host_of;
    c->ctx.nhosts = st->cross_size;
    c->ctx.scratch_size = c->scratch_size;
    c->ctx.reqs = c->coll_reqs;
    status = dc_run_init(&c->run, dc_config.tune, st->net);
    if (status < 0) {
        coord_free(c);
        return status;
    }
    /* Collective set-up before the thread starts, in the same order on every
     * rank: the settings that must agree, calibration of the cost model, then
     * the host's shared segment for shm-direct allreduce (when every rank is
     * on this host over shm). */
    status = agree_settings(c);
    if (status == DCOMM_OK && dc_config.calibrate && st->size > 1) {
        status = dc_run_calibrate(&c->run, st->net, st->rank, st->size, c->tag++);
    }
    if (status < 0) {
        /* A failed exchange may leave requests posted into c's buffers: the
         * transports let go of them when the network closes, so close it
         * first (init fails anyway). */
        dc_net_close(st->net);
        st->net = NULL;
        coord_free(c);
        return status;
    }
    if (st->size > 1 && st->cross_size == 1 &&
        dc_net_shares_memory(st->net, (st->rank + 1) % st->size) &&
        dc_shm_group_create(st->net, c->world_ranks, st->size, st->rank, 0,
                            (int)dc_config.timeout_ms, c->tag++, &c->ctx.shm_group) < 0) {
        DC_WARN("shm-direct allreduce disabled: %s", dc_error_get());
        c->ctx.shm_group = NULL;
    }
    dc_autotune_init(&c->tune, c->rank, dc_neg_cache_on(&c->neg));
    if (dc_config.timeline[0] != '\0') {
        snprintf(st->timeline_path, sizeof(st->timeline_path), "%s", dc_config.timeline);
        atomic_store(&st->timeline_cmd, 1);
    }
    /* A waiting thread runs cycles only without device work: CUDA streams and
     * NCCL communicators belong to the coordinator thread's device context. */
    c->may_drive = dc_config.wait_progress && st->cuda == NULL;
    if (pthread_create(&st->coord_thread, NULL, coord_main, c) != 0) {
        coord_free(c);
        return dc_error_set(DCOMM_ERR_INTERNAL, "cannot start the coordinator thread");
    }
    while (atomic_load(&c->started) == 0) {
        dc_futex_wait(&c->started, 0, 100000000ull);
    }
    pthread_mutex_lock(&st->lock);
    st->coord = c;
    pthread_mutex_unlock(&st->lock);
    return DCOMM_OK;
}

void dc_coord_stop(dc_state_t *st)
{
    pthread_mutex_lock(&st->lock);
    atomic_store(&st->shutdown_requested, 1);
    dc_coord_wake(st);
    pthread_mutex_unlock(&st->lock);
    pthread_join(st->coord_thread, NULL);
    pthread_mutex_lock(&st->lock);
    coord_t *c = st->coord;
    st->coord = NULL;
    pthread_mutex_unlock(&st->lock);
    /* Requests queued after the coordinator left. */
    if (c != NULL) {
        drive_gone(c);
        fail_all(c, DCOMM_ERR_SHUT_DOWN, "dcomm has shut down");
        if (dc_config.stats) {
            print_stats(c);
        }
        coord_free(c);
    }
}

void dc_coord_enqueue(dc_state_t *st, dc_op_t *op)
{
    op->next = NULL;
    if (st->queue_tail != NULL) {
        st->queue_tail->next = op;
    } else {
        st->queue_head = op;
    }
    st->queue_tail = op;
    atomic_store(&st->queue_nonempty, 1);
}

void dc_coord_notify(dc_state_t *st, int wait_follows)
{
    if (!wait_follows || st->coord == NULL || !st->coord->may_drive) {
        dc_coord_wake(st);
    }
}

/* Lock held: the coordinator clears st->net under it before closing. */
void dc_coord_wake(dc_state_t *st)
{
    if (st->net != NULL) {
        dc_net_wake(st->net);
    }
}
