/*
 * One job of the fault campaign (campaign.py): a loop of collectives of
 * several kinds and sizes, and a fault that one rank inflicts on itself at a
 * chosen point, or none (the driver then kills a rank, dlaunch or the network
 * from outside).
 *
 * Settings (environment or FAULT_X=V arguments, all optional but FAULT_DIR):
 *   FAULT_DIR     directory for this rank's record file rank<R>.txt (required)
 *   FAULT_PHASE   init | slow | fast | large | shutdown | none (default none)
 *                 slow: a fresh tensor name per op (negotiated every time);
 *                 fast: a few names repeated (response cache); large: one big
 *                 allreduce per op (killed mid-transfer; shmdirect and hier are
 *                 this phase with DCOMM_TUNE forcing the algorithm)
 *   FAULT_RANK    rank that faults (-1: none)
 *   FAULT_OP      op number at which it faults (slow, fast, large; -1: none)
 *   FAULT_SIGNAL  KILL or STOP
 *   FAULT_DELAY_US  init, large, shutdown: delay from the start of dcomm_init,
 *                 from submitting op FAULT_OP, from calling dcomm_shutdown
 *   FAULT_OPS     ops in the loop (0: until an error)
 *   FAULT_LARGE   elements (float32) of the large allreduce (default 4M)
 *
 * Record lines (CLOCK_MONOTONIC seconds, the clock of Python's time.monotonic):
 *   PID <pid>                   at start
 *   READY <t>                   after the first 3 ops (all ranks in the loop)
 *   FAULT <t> <signal>          just before raising the signal on itself
 *   ERR <t> <op> <STATUS> <msg> the first failing call (then shutdown, exit 3);
 *                               STATUS: the enum name without DCOMM_
 *   SHUTDOWN <t> <STATUS> <msg> result of dcomm_shutdown
 *   DONE <t>                    clean end (exit 0)
 * SIGTERM is ignored so that the library's own error path ends the survivors
 * (dlaunch's SIGKILL after its grace period still ends a hung one), and
 * SIGPIPE too, so that a rank whose dlaunch is gone still writes its record.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dcomm.h>

#define NAME_MAX_LEN 64
#define MAX_LARGE    (64u << 20) /* elements */

static int rec_fd = -1;
static int my_rank = -1;
static const char *phase = "none";
static int fault_rank = -1, fault_op = -1, fault_sig = SIGKILL;
static long fault_delay_us;

/* The status as its enum name, one word for the record. */
static const char *status_name(dcomm_status_t s)
{
    switch (s) {
#define FAULT_NAME_(name, value, text)                                                      \
    case DCOMM_##name:                                                                       \
        return #name;
        DCOMM_STATUS_MAP(FAULT_NAME_)
#undef FAULT_NAME_
    }
    return "UNKNOWN";
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One line into the record file (O_APPEND, one write: whole lines) and stdout. */
static void record(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n > sizeof(line) - 2) {
        n = (int)sizeof(line) - 2;
    }
    for (int i = 0; i < n; i++) {
        if (line[i] == '\n') {
            line[i] = ' ';
        }
    }
    line[n++] = '\n';
    if (rec_fd >= 0 && write(rec_fd, line, (size_t)n) != n) {
        /* nothing to do: the driver counts a missing line as a failure */
    }
    (void)!write(STDOUT_FILENO, line, (size_t)n);
}

static long env_long(const char *name, long def, long lo, long hi)
{
    const char *v = getenv(name);
    char *end;
    long x;

    if (v == NULL || *v == '\0') {
        return def;
    }
    errno = 0;
    x = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "fault_worker: %s=%s is not a number in %ld..%ld\n", name, v, lo, hi);
        exit(2);
    }
    return x;
}

static void inflict(void)
{
    record("FAULT %.6f %s", now_s(), fault_sig == SIGKILL ? "KILL" : "STOP");
    raise(fault_sig);
    /* STOP: continued (or killed) by the driver or dlaunch later; stay quiet. */
    for (;;) {
        pause();
    }
}

/* init and shutdown: the fault lands FAULT_DELAY_US after the call starts. */
static void *delayed_fault(void *arg)
{
    (void)arg;
    usleep((useconds_t)fault_delay_us);
    inflict();
    return NULL;
}

static void start_delayed_fault(void)
{
    pthread_t t;

    if (pthread_create(&t, NULL, delayed_fault, NULL) != 0) {
        fprintf(stderr, "fault_worker: pthread_create failed\n");
        exit(2);
    }
    pthread_detach(t);
}

static int fails_here(int op)
{
    return my_rank == fault_rank && op == fault_op;
}

/* The first failing call: its record, then shutdown and exit 3. msg: the
 * call's error text (NULL: this thread's last error). */
static void fail_exit(int op, dcomm_status_t s, const char *msg)
{
    dcomm_status_t s2;

    record("ERR %.6f %d %s %s", now_s(), op, status_name(s),
           msg != NULL ? msg : dcomm_last_error());
    s2 = dcomm_shutdown();
    record("SHUTDOWN %.6f %s %s", now_s(), status_name(s2),
           s2 == DCOMM_OK ? "" : dcomm_last_error());
    exit(3);
}

/* Waits for op's handle and releases it; exits on an error. */
static void finish(int op, dcomm_handle_t h)
{
    dcomm_status_t s = dcomm_wait(h);
    char msg[1024];

    snprintf(msg, sizeof(msg), "%s", dcomm_last_error()); /* release may reset it */
    dcomm_release(h);
    if (s != DCOMM_OK) {
        fail_exit(op, s, msg);
    }
}

/* One op of the loop: its kind and size follow from the phase and number. */
static void run_op(int op, int size, float *small, float *big, size_t nbig)
{
    static size_t counts[8];
    char name[NAME_MAX_LEN];
    dcomm_handle_t h = 0;
    dcomm_status_t s;
    int kind;
    size_t n;

    if (strcmp(phase, "large") == 0) {
        kind = 0;
        n = nbig;
        snprintf(name, sizeof(name), "large");
    } else if (strcmp(phase, "slow") == 0) {
        kind = op % 6;
        n = (size_t)(1 + (op * 7919) % 60000);
        snprintf(name, sizeof(name), "slow.%d", op); /* never seen before: negotiated */
    } else {
        kind = op % 3 == 2 ? 1 : 0; /* fast, init, shutdown, none: cached names */
        n = (size_t)(op % 3 == 0 ? 1024 : op % 3 == 1 ? 65536 : 4096);
        snprintf(name, sizeof(name), "fast.%d", op % 3);
    }
    if (fails_here(op) && strcmp(phase, "large") != 0) {
        inflict(); /* before submitting: the others wait for this rank's request */
    }
    for (size_t i = 0; i < n && i < 65536; i++) {
        small[i] = (float)(my_rank + 1);
    }
    switch (kind) {
    case 0:
        s = dcomm_allreduce_async(DCOMM_COMM_WORLD, name, n == nbig ? big : small,
                                  n == nbig ? big : small, n, DCOMM_FLOAT32, DCOMM_SUM, &h);
        break;
    case 1:
        s = dcomm_allgather_async(DCOMM_COMM_WORLD, name, small, n > 4096 ? 4096 : n,
                                  DCOMM_FLOAT32, &h);
        break;
    case 2:
        s = dcomm_broadcast_async(DCOMM_COMM_WORLD, name, small, n, DCOMM_FLOAT32, op % size, &h);
        break;
    case 3:
        for (int r = 0; r < size && r < 8; r++) {
            counts[r] = (size_t)(1 + (op + r) % 1000);
        }
        s = dcomm_alltoall_async(DCOMM_COMM_WORLD, name, small, counts, DCOMM_FLOAT32, &h);
        break;
    case 4:
        s = dcomm_reducescatter_async(DCOMM_COMM_WORLD, name, small, n, DCOMM_FLOAT32, DCOMM_SUM,
                                      &h);
        break;
    default:
        s = dcomm_barrier_async(DCOMM_COMM_WORLD, &h);
        break;
    }
    if (s != DCOMM_OK) {
        fail_exit(op, s, NULL);
    }
    if (fails_here(op)) {
        /* large: the transfer is under way in the coordinator thread */
        usleep((useconds_t)fault_delay_us);
        inflict();
    }
    finish(op, h);
    if (kind == 0 && n != nbig) {
        float want = (float)size * (float)(size + 1) / 2.0f;

        if (small[0] != want || small[n - 1] != want) {
            record("ERR %.6f %d WRONG allreduce '%s' gave %g, expected %g", now_s(), op, name,
                   (double)small[0], (double)want);
            exit(4);
        }
    }
}

int main(int argc, char **argv)
{
    const char *dir, *sig;
    char path[4096];
    long ops, nlarge;
    float *small, *big = NULL;
    dcomm_status_t s;
    int size;

    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    /* Arguments FAULT_X=V are settings too: dlaunch carries only DCOMM_* and
     * HOROVOD_* variables to other hosts, but every argument. Others (the
     * driver's marker) are ignored. */
    for (int i = 1; i < argc; i++) {
        char *eq = strchr(argv[i], '=');

        if (strncmp(argv[i], "FAULT_", 6) == 0 && eq != NULL) {
            *eq = '\0';
            setenv(argv[i], eq + 1, 1);
            *eq = '=';
        }
    }
    dir = getenv("FAULT_DIR");
    sig = getenv("FAULT_SIGNAL");
    if (dir == NULL || getenv("DCOMM_RANK") == NULL) {
        fprintf(stderr, "fault_worker: run by campaign.py through dlaunch (FAULT_DIR unset)\n");
        return 2;
    }
    my_rank = (int)env_long("DCOMM_RANK", -1, 0, 1 << 20);
    if (getenv("FAULT_PHASE") != NULL) {
        phase = getenv("FAULT_PHASE");
    }
    if (strcmp(phase, "init") != 0 && strcmp(phase, "slow") != 0 && strcmp(phase, "fast") != 0 &&
        strcmp(phase, "large") != 0 && strcmp(phase, "shutdown") != 0 &&
        strcmp(phase, "none") != 0) {
        fprintf(stderr, "fault_worker: unknown FAULT_PHASE '%s'\n", phase);
        return 2;
    }
    fault_rank = (int)env_long("FAULT_RANK", -1, -1, 1 << 20);
    fault_op = (int)env_long("FAULT_OP", -1, -1, 1 << 30);
    fault_delay_us = env_long("FAULT_DELAY_US", 0, 0, 60000000);
    ops = env_long("FAULT_OPS", 20, 0, 1 << 30);
    nlarge = env_long("FAULT_LARGE", 4 << 20, 1, MAX_LARGE);
    if (sig != NULL && strcmp(sig, "STOP") == 0) {
        fault_sig = SIGSTOP;
    } else if (sig != NULL && strcmp(sig, "KILL") != 0) {
        fprintf(stderr, "fault_worker: FAULT_SIGNAL must be KILL or STOP\n");
        return 2;
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/rank%d.txt", dir, my_rank) >= sizeof(path)) {
        fprintf(stderr, "fault_worker: FAULT_DIR too long\n");
        return 2;
    }
    rec_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (rec_fd < 0) {
        fprintf(stderr, "fault_worker: %s: %s\n", path, strerror(errno));
        return 2;
    }
    record("PID %d", (int)getpid());
    small = calloc(65536, sizeof(float));
    if (strcmp(phase, "large") == 0 || strcmp(phase, "none") == 0) {
        big = calloc((size_t)nlarge, sizeof(float));
    }
    if (small == NULL || ((strcmp(phase, "large") == 0 || strcmp(phase, "none") == 0) &&
                          big == NULL)) {
        fprintf(stderr, "fault_worker: out of memory\n");
        return 2;
    }
    if (strcmp(phase, "init") == 0 && my_rank == fault_rank) {
        start_delayed_fault();
    }
    s = dcomm_init();
    if (s != DCOMM_OK) {
        record("ERR %.6f %d %s %s", now_s(), -1, status_name(s), dcomm_last_error());
        return 3;
    }
    size = dcomm_size();
    if (strcmp(phase, "none") == 0) {
        phase = "large"; /* external faults: big allreduces, so they land mid-transfer */
    }
    for (long op = 0; ops == 0 || op < ops; op++) {
        run_op((int)op, size, small, big, (size_t)nlarge);
        if (op == 2) {
            record("READY %.6f", now_s());
        }
    }
    if (strcmp(getenv("FAULT_PHASE") ? getenv("FAULT_PHASE") : "", "shutdown") == 0 &&
        my_rank == fault_rank) {
        start_delayed_fault();
    }
    s = dcomm_shutdown();
    record("SHUTDOWN %.6f %s %s", now_s(), status_name(s),
           s == DCOMM_OK ? "" : dcomm_last_error());
    if (strcmp(getenv("FAULT_PHASE") ? getenv("FAULT_PHASE") : "", "shutdown") == 0 &&
        my_rank == fault_rank) {
        for (;;) {
            pause(); /* the fault always lands, also after a clean shutdown */
        }
    }
    record("DONE %.6f", now_s());
    free(small);
    free(big);
    return s == DCOMM_OK ? 0 : 3;
}
