/* dlaunch's elastic driver (--min-np, --max-np, --host-discovery-script): the
 * job's hosts come and go, workers fail, and the job carries on with whoever
 * is left, in numbered membership rounds.
 *
 * Each worker (an entry of job->ranks, its index the worker id) says at each
 * dcomm_init that it is ready ("elastic/ready/W" = n for its n-th init, in the
 * rendezvous store) and waits for "elastic/assign/W/n" = "<round> <rank>
 * <size>" (core/bootstrap.c). When every live worker is ready and there are at
 * least --min-np of them, a round is formed: workers keep the order of their
 * last round (so the longest-lived keeps rank 0), new ones follow. A worker
 * that fails blacklists its host (for good, or for a cooldown that doubles
 * with each failure within --blacklist-cooldown-range) and stops the other
 * workers there; the round's members hear of it on their event channel, their
 * collectives fail with DCOMM_ERR_PEER_LOST, and they join the next round.
 * Hosts added by discovery get new workers (up to --max-np) and a notice,
 * "elastic/hosts" = "<stamp> <result>", that ranks read at their next commit.
 * The job fails, naming why, when no host is left, when fewer than --min-np
 * workers are left for --elastic-timeout, or past --reset-limit.
 *
 * Workers run on this machine: hosts are names of it (localhost, 127.0.0.1,
 * aliases that resolve to a loopback address). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dc_time.h"
#include "dlaunch.h"

#define EL_MAX_HOSTS       64
#define DISCOVERY_MAX_OUT  (64 * 1024)
#define DISCOVERY_LIMIT_NS (10 * 1000000000ull) /* a script that takes longer is killed */
#define NS_PER_S           1000000000ull

typedef struct el_host {
    int present;         /* in the latest discovery answer (or -H) */
    int failures;        /* workers that failed here */
    int blacklisted;
    uint64_t until;      /* blacklisted until then; 0: for good */
} el_host_t;

typedef struct dl_elastic {
    el_host_t hosts[EL_MAX_HOSTS]; /* beside job->hosts[] */
    int round;           /* the latest round formed (0: none yet) */
    int resets;          /* rounds formed after the first */
    uint64_t next_discovery;
    uint64_t below_since; /* fewer than --min-np live workers since then (0: not) */
    uint64_t notice_stamp;
    int pending_notice;  /* Horovod's HostUpdateResult bits to publish */
    int succeeded;       /* a worker finished with exit code 0 */
    int failed_code;     /* exit code of the latest failed worker */
} dl_elastic_t;

/* ---- Hosts ------------------------------------------------------------------- */

/* Names of this machine; aliases count when they resolve to a loopback address. */
static int host_here(const char *name)
{
    struct addrinfo hints = {.ai_family = AF_INET}, *res, *ai;
    int here = 0;

    if (dl_host_is_local(name)) {
        return 1;
    }
    if (getaddrinfo(name, NULL, &hints, &res) != 0) {
        return 0;
    }
    for (ai = res; ai != NULL && !here; ai = ai->ai_next) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ai->ai_addr;

        here = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    freeaddrinfo(res);
    return here;
}

static int host_index(const dl_job_t *job, const char *name)
{
    for (int h = 0; h < job->nhosts; h++) {
        if (strcmp(job->hosts[h].name, name) == 0) {
            return h;
        }
    }
    return -1;
}

/* Live: running and not being stopped by dlaunch. */
static int live(const dl_rank_t *r)
{
    return r->running && !r->leaving;
}

static int live_on(const dl_job_t *job, int h)
{
    int n = 0;

    for (int i = 0; i < job->nranks; i++) {
        n += live(&job->ranks[i]) && job->ranks[i].host == h;
    }
    return n;
}

static int live_count(const dl_job_t *job)
{
    int n = 0;

    for (int i = 0; i < job->nranks; i++) {
        n += live(&job->ranks[i]);
    }
    return n;
}

/* Stops the live workers on host h (removed or blacklisted): not failures. */
static void stop_host(dl_job_t *job, int h)
{
    for (int i = 0; i < job->nranks; i++) {
        dl_rank_t *r = &job->ranks[i];

        if (live(r) && r->host == h) {
            DL_VLOG("stopping worker %d (rank %d) on host %s\n", i, r->round_rank,
                    job->hosts[h].name);
            r->leaving = 1;
            kill(-r->pid, SIGTERM);
        }
    }
}

/* Takes a host list ("a:2,b" from -H, or the discovery script's lines joined):
 * adds new hosts, updates slots, marks the absent ones and stops their workers.
 * Returns the HostUpdateResult bits (1 removed, 2 added), or -1 after saying why. */
static int hosts_update(dl_job_t *job, const char *list)
{
    dl_elastic_t *el = job->el;
    dl_host_t *seen = NULL;
    char why[512] = "";
    int nseen = 0, result = 0;

    if (list[0] != '\0' && dl_hosts_parse_list(list, &seen, &nseen, why, sizeof(why)) != 0) {
        fprintf(stderr, "dlaunch: host discovery: %s\n", why);
        return -1;
    }
    for (int h = 0; h < job->nhosts; h++) {
        int s = -1;

        for (int k = 0; k < nseen && s < 0; k++) {
            s = strcmp(seen[k].name, job->hosts[h].name) == 0 ? k : -1;
        }
        if (s < 0 && el->hosts[h].present) {
            DL_VLOG("host %s removed\n", job->hosts[h].name);
            el->hosts[h].present = 0;
            result |= 1;
            stop_host(job, h);
        } else if (s >= 0) {
            result |= !el->hosts[h].present || seen[s].slots > job->hosts[h].slots ? 2 : 0;
            result |= seen[s].slots < job->hosts[h].slots ? 1 : 0;
            el->hosts[h].present = 1;
            job->hosts[h].slots = seen[s].slots;
        }
    }
    for (int k = 0; k < nseen; k++) {
        if (host_index(job, seen[k].name) >= 0) {
            continue;
        }
        if (!host_here(seen[k].name)) {
            fprintf(stderr, "dlaunch: host %s is not this machine: elastic jobs run their "
                            "workers here (give names of this machine: localhost, 127.0.0.1, "
                            "aliases of a loopback address)\n", seen[k].name);
            free(seen);
            return -1;
        }
        if (job->nhosts == EL_MAX_HOSTS) {
            fprintf(stderr, "dlaunch: host discovery: more than %d hosts\n", EL_MAX_HOSTS);
            free(seen);
            return -1;
        }
        job->hosts[job->nhosts] = (dl_host_t){.slots = seen[k].slots, .local = 1};
        snprintf(job->hosts[job->nhosts].name, DL_HOST_MAX, "%s", seen[k].name);
        el->hosts[job->nhosts++] = (el_host_t){.present = 1};
        DL_VLOG("host %s added (%d slots)\n", seen[k].name, seen[k].slots);
        result |= 2;
    }
    free(seen);
    return result;
}

/* Runs the discovery script (at most DISCOVERY_LIMIT_NS, with dlaunch's signal
 * mask undone) and joins its lines with commas into list; 0, or -1 after
 * saying why. */
static int discovery_run(const dl_job_t *job, char *list, size_t cap)
{
    const char *script = job->opt.discovery;
    char *raw = malloc(cap);
    int fds[2], n = 0, wstatus;
    uint64_t deadline = dc_now_ns() + DISCOVERY_LIMIT_NS;
    size_t len = 0, out = 0;
    pid_t pid;

    if (raw == NULL || pipe2(fds, O_CLOEXEC) != 0) {
        fprintf(stderr, "dlaunch: host discovery: %s\n", strerror(errno));
        free(raw);
        return -1;
    }
    pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        sigprocmask(SIG_SETMASK, &job->oldmask, NULL);
        dup2(fds[1], 1);
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    for (; pid > 0;) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        uint64_t now = dc_now_ns();

        if (now >= deadline || poll(&pfd, 1, (int)((deadline - now) / 1000000 + 1)) <= 0) {
            n = -2;
            break;
        }
        n = (int)read(fds[0], raw + len, cap - 1 - len);
        if (n <= 0 || (len += (size_t)n) >= cap - 1) {
            break;
        }
    }
    close(fds[0]);
    if (pid > 0 && (n == -2 || len >= cap - 1)) {
        kill(-pid, SIGKILL);
    }
    if (pid < 0 || waitpid(pid, &wstatus, 0) != pid || n == -2 || len >= cap - 1 ||
        !WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
        fprintf(stderr, "dlaunch: host discovery script %s %s\n", script,
                n == -2 ? "took longer than 10 s" : len >= cap - 1 ? "printed over 64 KiB"
                                                                   : "failed");
        free(raw);
        return -1;
    }
    raw[len] = '\0';
    /* Lines to a comma list; blank lines and surrounding blanks go. */
    for (char *line = strtok(raw, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        line += strspn(line, " \t\r");
        line[strcspn(line, " \t\r")] = '\0';
        if (*line != '\0') {
            out += (size_t)snprintf(list + out, cap - out, "%s%s", out ? "," : "", line);
        }
    }
    list[out] = '\0';
    free(raw);
    return 0;
}

/* ---- Workers ------------------------------------------------------------------ */

static void fail(dl_job_t *job, const char *text)
{
    dl_fail_job(job, job->el->failed_code != 0 ? job->el->failed_code : 1, text);
}

/* The identity new workers (entries first.. of job->ranks, not yet running)
 * start with: the ranks they will have in the next round, after the live ones. */
static void plan_identities(dl_job_t *job, int first)
{
    int nlive = live_count(job), size = nlive + job->nranks - first;
    int on[EL_MAX_HOSTS], cross[EL_MAX_HOSTS], nhosts = 0;

    for (int h = 0; h < job->nhosts; h++) {
        on[h] = live_on(job, h);
        for (int i = first; i < job->nranks; i++) {
            on[h] += job->ranks[i].host == h;
        }
        cross[h] = nhosts;
        nhosts += on[h] > 0;
    }
    for (int i = first; i < job->nranks; i++) {
        dl_rank_t *r = &job->ranks[i];
        int local = live_on(job, r->host);

        for (int k = first; k < i; k++) {
            local += job->ranks[k].host == r->host;
        }
        r->rank = nlive + i - first;
        memcpy(r->ident, (int[6]){r->rank, size, local, on[r->host], cross[r->host], nhosts},
               sizeof(r->ident));
        r->ident_set = 1;
    }
}

/* New workers on hosts with free slots, up to --max-np. */
static void spawn_workers(dl_job_t *job)
{
    dl_elastic_t *el = job->el;
    int want = job->opt.max_np - live_count(job), first = job->nranks;

    if (el->succeeded) {
        return; /* the job is finishing: no new workers */
    }
    for (int h = 0; h < job->nhosts && want > 0; h++) {
        int free_slots = job->hosts[h].slots - live_on(job, h);

        if (!el->hosts[h].present || el->hosts[h].blacklisted) {
            continue;
        }
        for (; free_slots > 0 && want > 0 && job->nranks < job->ranks_cap; free_slots--) {
            dl_rank_t *r = &job->ranks[job->nranks++];

            *r = (dl_rank_t){.host = h};
            r->out.fd = r->err.fd = -1;
            want--;
        }
    }
    plan_identities(job, first);
    for (int i = first; i < job->nranks; i++) {
        if (dl_rank_spawn(job, &job->ranks[i]) != 0) {
            char text[128];

            snprintf(text, sizeof(text), "cannot start a worker: %s", strerror(errno));
            fail(job, text);
            return;
        }
    }
    if (job->nranks > first && el->round > 0) {
        el->pending_notice |= 2;
    }
}

/* Round order: members of the latest round by their rank there, then the others
 * by worker id (the order they were started in). */
static int round_order(const dl_job_t *job, const dl_rank_t *a, const dl_rank_t *b)
{
    int ka = a->round == job->el->round ? a->round_rank : DL_MAX_RANKS + (int)(a - job->ranks);
    int kb = b->round == job->el->round ? b->round_rank : DL_MAX_RANKS + (int)(b - job->ranks);

    return ka - kb;
}

/* The worker's latest ready count from the store (0 when none). */
static int ready_joins(dl_job_t *job, int w)
{
    char key[48], val[16];
    size_t len;
    int n;

    snprintf(key, sizeof(key), "elastic/ready/%d", w);
    if (dc_rdv_server_get(job->server, key, val, sizeof(val) - 1, &len) != DCOMM_OK ||
        len >= sizeof(val)) {
        return 0;
    }
    val[len] = '\0';
    return sscanf(val, "%d", &n) == 1 && n > 0 ? n : 0;
}

static void form_round(dl_job_t *job, dl_rank_t **members, int n)
{
    dl_elastic_t *el = job->el;

    for (int i = 1; i < n; i++) { /* insertion sort: n is small */
        for (int j = i; j > 0 && round_order(job, members[j - 1], members[j]) > 0; j--) {
            dl_rank_t *t = members[j];

            members[j] = members[j - 1];
            members[j - 1] = t;
        }
    }
    if (el->round > 0) {
        el->resets++;
        if (job->opt.reset_limit >= 0 && el->resets > job->opt.reset_limit) {
            char text[128];

            snprintf(text, sizeof(text), "the job was reset %d times, more than "
                     "--reset-limit %d", el->resets, job->opt.reset_limit);
            fail(job, text);
            return;
        }
    }
    el->round++;
    for (int i = 0; i < n; i++) {
        dl_rank_t *r = members[i];
        char key[48], val[48];
        int len;

        r->joins++;
        r->round = el->round;
        r->round_rank = i;
        snprintf(key, sizeof(key), "elastic/assign/%d/%d", (int)(r - job->ranks), r->joins);
        len = snprintf(val, sizeof(val), "%d %d %d %llu", el->round, i, n,
                       (unsigned long long)el->notice_stamp);
        if (dc_rdv_server_set(job->server, key, val, (size_t)len) != DCOMM_OK) {
            fail(job, "the rendezvous store refused a round's assignment");
            return;
        }
    }
    fprintf(stderr, "dlaunch: round %d: %d workers\n", el->round, n);
}

/* A round when every live worker is ready and there are enough of them. */
static void try_round(dl_job_t *job, uint64_t now)
{
    dl_rank_t *members[DL_MAX_RANKS];
    int n = 0, waiting = 0;

    for (int i = 0; i < job->nranks; i++) {
        dl_rank_t *r = &job->ranks[i];

        if (live(r)) {
            int ready = ready_joins(job, i) > r->joins;

            members[n++] = r;
            waiting += ready;
        }
    }
    if (n < job->opt.min_np) {
        if (job->el->below_since == 0) {
            job->el->below_since = now;
        } else if (now - job->el->below_since >= (uint64_t)job->opt.elastic_timeout_s * NS_PER_S) {
            char text[160];

            snprintf(text, sizeof(text), "only %d workers for %d s (--elastic-timeout), fewer "
                     "than --min-np %d", n, job->opt.elastic_timeout_s, job->opt.min_np);
            fail(job, text);
        }
        return;
    }
    job->el->below_since = 0;
    if (waiting == n && n > 0) {
        form_round(job, members, n);
    }
}

static void publish_notice(dl_job_t *job)
{
    dl_elastic_t *el = job->el;
    char val[48];
    int len;

    if (el->pending_notice == 0) {
        return;
    }
    len = snprintf(val, sizeof(val), "%llu %d", (unsigned long long)++el->notice_stamp,
                   el->pending_notice);
    DL_VLOG("hosts updated: notice %s\n", val);
    (void)dc_rdv_server_set(job->server, "elastic/hosts", val, (size_t)len);
    el->pending_notice = 0;
}

void dl_elastic_tick(dl_job_t *job, uint64_t now)
{
    dl_elastic_t *el = job->el;
    int usable = 0, blacklisted = 0;

    if (job->opt.discovery != NULL && now >= el->next_discovery) {
        char list[DISCOVERY_MAX_OUT];
        int result;

        el->next_discovery = now + (uint64_t)(job->opt.discovery_interval_s * 1e9);
        /* A failed run (said above) keeps the hosts known so far, as Horovod. */
        if (discovery_run(job, list, sizeof(list)) == 0 &&
            (result = hosts_update(job, list)) >= 0) {
            el->pending_notice |= el->round > 0 ? result : 0;
        }
    }
    for (int h = 0; h < job->nhosts; h++) {
        el_host_t *eh = &el->hosts[h];

        if (eh->blacklisted && eh->until != 0 && now >= eh->until) {
            DL_VLOG("host %s: blacklist cooldown over\n", job->hosts[h].name);
            eh->blacklisted = 0;
        }
        usable += eh->present && !eh->blacklisted;
        blacklisted += eh->present && eh->blacklisted;
    }
    spawn_workers(job);
    if (job->stopping) {
        return;
    }
    publish_notice(job);
    if (el->succeeded) {
        return; /* no new round: the members of the last one finish */
    }
    if (live_count(job) == 0 && usable == 0 && blacklisted > 0) {
        fail(job, "no host is left to run workers on: every one failed, is blacklisted or "
                  "was removed");
        return;
    }
    try_round(job, now);
}

int dl_elastic_timeout_ms(const dl_job_t *job, uint64_t now)
{
    const dl_elastic_t *el = job->el;
    uint64_t next = now + 60 * NS_PER_S;

    if (job->opt.discovery != NULL) {
        next = DC_MIN(next, el->next_discovery);
    }
    for (int h = 0; h < job->nhosts; h++) {
        if (el->hosts[h].blacklisted && el->hosts[h].until != 0) {
            next = DC_MIN(next, el->hosts[h].until);
        }
    }
    if (el->below_since != 0) {
        next = DC_MIN(next, el->below_since + (uint64_t)job->opt.elastic_timeout_s * NS_PER_S);
    }
    return next <= now ? 0 : (int)((next - now + 999999) / 1000000);
}

/* How a worker ended, for people: "exited with code 3", "killed by signal 9 (Killed)". */
static void how_ended(const dl_rank_t *r, char *buf, size_t cap)
{
    if (r->end_sig != 0) {
        snprintf(buf, cap, "killed by signal %d (%s)", r->end_sig, strsignal(r->end_sig));
    } else {
        snprintf(buf, cap, "exited with code %d", r->end_code);
    }
}

/* A member of the latest round is gone: the round's ranks learn it on their
 * event channel (their collectives fail with DCOMM_ERR_PEER_LOST naming it) and,
 * while they are still joining, from the round's store keys; then they join
 * the next round. The text numbers ranks as the round does. */
static void lost_member(dl_job_t *job, const dl_rank_t *r, const char *how)
{
    char line[DL_HOST_MAX + 256], prefix[32];

    snprintf(line, sizeof(line), "rank %d %s (worker %d on host %s)", r->round_rank, how,
             (int)(r - job->ranks), job->hosts[r->host].name);
    snprintf(prefix, sizeof(prefix), "round%d/", r->round);
    dc_rdv_server_broadcast(job->server, line);
    dc_rdv_server_fail_keys(job->server, prefix, line);
}

void dl_elastic_ended(dl_job_t *job, dl_rank_t *r)
{
    dl_elastic_t *el = job->el;
    el_host_t *eh = &el->hosts[r->host];
    int member = r->round != 0 && r->round == el->round, w = (int)(r - job->ranks);
    char how[160], cooldown[64];

    how_ended(r, how, sizeof(how));
    if (r->end_code == 0) {
        /* Training is over: the round's members finish; workers waiting to
         * join a round (added meanwhile) have nothing left to do. */
        el->succeeded = 1;
        for (int i = 0; i < job->nranks; i++) {
            dl_rank_t *q = &job->ranks[i];

            if (live(q) && q->round != el->round) {
                DL_VLOG("stopping worker %d: the job is finishing\n", i);
                q->leaving = 1;
                kill(-q->pid, SIGTERM);
            }
        }
        return;
    }
    if (r->leaving || job->stopping) {
        DL_VLOG("worker %d %s (stopped by dlaunch)\n", w, how);
        if (member && !job->stopping) {
            lost_member(job, r, "was stopped: its host left the job");
        }
        return;
    }
    el->failed_code = r->end_code;
    eh->failures++;
    eh->blacklisted = 1;
    eh->until = 0;
    cooldown[0] = '\0';
    if (job->opt.cooldown_hi > 0) {
        double s = job->opt.cooldown_lo * (double)(1u << DC_MIN(eh->failures - 1, 20));

        s = DC_MIN(DC_MAX(s, job->opt.cooldown_lo), job->opt.cooldown_hi);
        eh->until = dc_now_ns() + (uint64_t)(s * 1e9);
        snprintf(cooldown, sizeof(cooldown), " for %g s (failure %d there)", s, eh->failures);
    }
    fprintf(stderr, "dlaunch: worker %d (started as rank %d) on host %s failed: %s; host %s "
                    "blacklisted%s\n", w, r->rank, job->hosts[r->host].name, how,
            job->hosts[r->host].name, cooldown);
    stop_host(job, r->host);
    if (member) {
        lost_member(job, r, how);
    }
}

int dl_elastic_over(const dl_job_t *job)
{
    return job->stopping || job->el->succeeded;
}

int dl_elastic_prepare(dl_job_t *job)
{
    dl_options_t *opt = &job->opt;
    char list[DISCOVERY_MAX_OUT];

    job->el = calloc(1, sizeof(*job->el));
    job->hosts = calloc(EL_MAX_HOSTS, sizeof(*job->hosts));
    job->ranks = calloc(DL_MAX_RANKS, sizeof(*job->ranks));
    if (job->el == NULL || job->hosts == NULL || job->ranks == NULL) {
        return 1;
    }
    job->ranks_cap = DL_MAX_RANKS;
    job->nhosts = 0;
    if (opt->min_np == 0) {
        opt->min_np = opt->np > 0 ? opt->np : 1;
    }
    if (opt->max_np == 0) {
        opt->max_np = DL_MAX_RANKS;
    }
    if (opt->max_np < opt->min_np) {
        fprintf(stderr, "dlaunch: --max-np %d is less than --min-np %d\n", opt->max_np,
                opt->min_np);
        return DL_EXIT_USAGE;
    }
    if (opt->discovery != NULL) {
        if (discovery_run(job, list, sizeof(list)) != 0) {
            return DL_EXIT_USAGE;
        }
    } else {
        snprintf(list, sizeof(list), "%s", opt->hosts_arg);
    }
    if (hosts_update(job, list) < 0) {
        return DL_EXIT_USAGE;
    }
    job->el->next_discovery = dc_now_ns() + (uint64_t)(opt->discovery_interval_s * 1e9);
    job->size = job->cross_size = 0; /* per worker: ident */
    return 0;
}

void dl_elastic_free(dl_job_t *job)
{
    free(job->el);
    job->el = NULL;
}
