/* Where dlaunch's ranks run: the host list from -H, --hostfile or a Slurm
 * allocation, ranks assigned to hosts in order (by slot), and which hosts are
 * this machine (started directly instead of through the rsh agent). */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dlaunch.h"

#define MAX_HOSTS 4096

static int why_set(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int why_set(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Adds slots to host `name` (len bytes), merging repeats. */
static int host_add(dl_host_t **hosts_p, int *n_p, const char *name, size_t len, int slots,
                    char *why, size_t whylen)
{
    dl_host_t *h;

    if (len == 0 || len >= DL_HOST_MAX) {
        return why_set(why, whylen, "bad host name '%.*s'", (int)DC_MIN(len, 64), name);
    }
    if (slots < 1 || slots > DL_MAX_RANKS) {
        return why_set(why, whylen, "host '%.*s': slots must be 1..%d", (int)len, name,
                       DL_MAX_RANKS);
    }
    for (int i = 0; i < *n_p; i++) {
        if (strlen((*hosts_p)[i].name) == len && strncmp((*hosts_p)[i].name, name, len) == 0) {
            (*hosts_p)[i].slots += slots;
            return 0;
        }
    }
    if (*n_p >= MAX_HOSTS) {
        return why_set(why, whylen, "more than %d hosts", MAX_HOSTS);
    }
    h = realloc(*hosts_p, (size_t)(*n_p + 1) * sizeof(*h));
    if (h == NULL) {
        return why_set(why, whylen, "out of memory");
    }
    *hosts_p = h;
    h = &h[(*n_p)++];
    memset(h, 0, sizeof(*h));
    memcpy(h->name, name, len);
    h->slots = slots;
    return 0;
}

/* Decimal in [s, end) into *v_p; 0 on success. */
static int parse_int(const char *s, const char *end, int *v_p)
{
    long v = 0;

    if (s == end) {
        return -1;
    }
    for (; s < end; s++) {
        if (!isdigit((unsigned char)*s) || v > 1000000) {
            return -1;
        }
        v = v * 10 + (*s - '0');
    }
    *v_p = (int)v;
    return 0;
}

int dl_hosts_parse_list(const char *text, dl_host_t **hosts_p, int *n_p, char *why,
                        size_t whylen)
{
    for (const char *p = text; *p != '\0';) {
        const char *end = p + strcspn(p, ","), *colon = memchr(p, ':', (size_t)(end - p));
        int slots = 1;

        if (colon != NULL && parse_int(colon + 1, end, &slots) != 0) {
            return why_set(why, whylen, "'%s': slots after ':' must be a number", text);
        }
        if (host_add(hosts_p, n_p, p, (size_t)((colon ? colon : end) - p), slots, why,
                     whylen) != 0) {
            return -1;
        }
        p = *end ? end + 1 : end;
    }
    if (*n_p == 0) {
        return why_set(why, whylen, "'%s': no hosts", text);
    }
    return 0;
}

/* "host", "host slots=N", "host:N"; '#' starts a comment. */
static int parse_hostfile(const char *path, dl_host_t **hosts_p, int *n_p, char *why,
                          size_t whylen)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int lineno = 0, rc = 0;

    if (f == NULL) {
        return why_set(why, whylen, "cannot open hostfile %s: %s", path, strerror(errno));
    }
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        char *s = line, *name, *rest, *colon;
        int slots = 1;

        lineno++;
        s[strcspn(s, "#\r\n")] = '\0';
        name = strtok_r(s, " \t", &rest);
        if (name == NULL) {
            continue;
        }
        colon = strchr(name, ':');
        if (colon != NULL) {
            *colon = '\0';
            if (parse_int(colon + 1, colon + 1 + strlen(colon + 1), &slots) != 0) {
                rc = why_set(why, whylen, "hostfile %s line %d: bad slots after ':'", path,
                             lineno);
            }
        }
        for (char *w; rc == 0 && (w = strtok_r(NULL, " \t", &rest)) != NULL;) {
            if (strncmp(w, "slots=", 6) != 0 || parse_int(w + 6, w + strlen(w), &slots) != 0) {
                rc = why_set(why, whylen, "hostfile %s line %d: expected 'host slots=N'", path,
                             lineno);
            }
        }
        if (rc == 0) {
            rc = host_add(hosts_p, n_p, name, strlen(name), slots, why, whylen);
        }
    }
    fclose(f);
    if (rc == 0 && *n_p == 0) {
        rc = why_set(why, whylen, "hostfile %s lists no hosts", path);
    }
    return rc;
}

/* Slurm's SLURM_TASKS_PER_NODE: "2(x3),1" -> the count of host i. */
static int slurm_tasks_of(const char *tasks, int i, int *v_p)
{
    for (const char *p = tasks; p != NULL && *p != '\0';) {
        const char *end = p + strcspn(p, ","), *x = memchr(p, '(', (size_t)(end - p));
        int v, rep = 1;

        if (parse_int(p, x ? x : end, &v) != 0 ||
            (x != NULL && (strncmp(x, "(x", 2) != 0 || end[-1] != ')' ||
                           parse_int(x + 2, end - 1, &rep) != 0))) {
            return -1;
        }
        if (i < rep) {
            *v_p = v;
            return 0;
        }
        i -= rep;
        p = *end ? end + 1 : end;
    }
    return -1;
}

/* One "prefix[01-03,7]suffix"-style item (at most one bracket) into hosts. */
static int slurm_item(const char *item, size_t len, const char *tasks, dl_host_t **hosts_p,
                      int *n_p, char *why, size_t whylen)
{
    const char *lb = memchr(item, '[', len), *rb = lb ? memchr(lb, ']', len - (size_t)(lb - item)) : NULL;
    char name[DL_HOST_MAX];
    int slots = 1;

    if (lb == NULL) {
        if (tasks != NULL && slurm_tasks_of(tasks, *n_p, &slots) != 0) {
            return why_set(why, whylen, "SLURM_TASKS_PER_NODE='%s' does not cover host %d",
                           tasks, *n_p);
        }
        return host_add(hosts_p, n_p, item, len, slots, why, whylen);
    }
    if (rb == NULL || (size_t)(lb - item) >= DL_HOST_MAX / 2) {
        return why_set(why, whylen, "SLURM_JOB_NODELIST: bad item '%.*s'", (int)len, item);
    }
    for (const char *p = lb + 1; p < rb;) {
        const char *end = p + strcspn(p, ",]"), *dash = memchr(p, '-', (size_t)(end - p));
        int lo, hi, width = (int)((dash ? dash : end) - p);

        if (parse_int(p, dash ? dash : end, &lo) != 0 ||
            (dash ? parse_int(dash + 1, end, &hi) : parse_int(p, end, &hi)) != 0 || hi < lo ||
            hi - lo > MAX_HOSTS) {
            return why_set(why, whylen, "SLURM_JOB_NODELIST: bad range in '%.*s'", (int)len,
                           item);
        }
        for (int v = lo; v <= hi; v++) {
            int n = snprintf(name, sizeof(name), "%.*s%0*d%.*s", (int)(lb - item), item, width,
                             v, (int)(len - (size_t)(rb + 1 - item)), rb + 1);

            slots = 1;
            if (tasks != NULL && slurm_tasks_of(tasks, *n_p, &slots) != 0) {
                return why_set(why, whylen, "SLURM_TASKS_PER_NODE='%s' does not cover host %d",
                               tasks, *n_p);
            }
            if (host_add(hosts_p, n_p, name, (size_t)n, slots, why, whylen) != 0) {
                return -1;
            }
        }
        p = *end == ',' ? end + 1 : end;
    }
    return 0;
}

int dl_hosts_parse_slurm(const char *nodelist, const char *tasks, dl_host_t **hosts_p,
                         int *n_p, char *why, size_t whylen)
{
    const char *p = nodelist;

    while (*p != '\0') {
        size_t len = 0;
        int depth = 0;

        /* Items are split at commas outside brackets. */
        while (p[len] != '\0' && (depth > 0 || p[len] != ',')) {
            depth += (p[len] == '[') - (p[len] == ']');
            len++;
        }
        if (slurm_item(p, len, tasks, hosts_p, n_p, why, whylen) != 0) {
            return -1;
        }
        p += len + (p[len] == ',');
    }
    if (*n_p == 0) {
        return why_set(why, whylen, "SLURM_JOB_NODELIST='%s' lists no hosts", nodelist);
    }
    return 0;
}

/* This machine: "localhost", loopback addresses, or our host name (short or full). */
int dl_host_is_local(const char *name)
{
    char self[256] = "";
    size_t short_len;

    if (strcmp(name, "localhost") == 0 || strncmp(name, "127.", 4) == 0 ||
        strcmp(name, "::1") == 0) {
        return 1;
    }
    gethostname(self, sizeof(self) - 1);
    short_len = strcspn(self, ".");
    return strcmp(name, self) == 0 ||
           (strlen(name) == short_len && strncmp(name, self, short_len) == 0);
}

int dl_hosts_plan(dl_job_t *job)
{
    const char *nodelist = getenv("SLURM_JOB_NODELIST");
    char why[512] = "";
    int rc, total = 0, left;

    if (job->opt.hosts_arg != NULL) {
        rc = dl_hosts_parse_list(job->opt.hosts_arg, &job->hosts, &job->nhosts, why,
                                 sizeof(why));
    } else if (job->opt.hostfile != NULL) {
        rc = parse_hostfile(job->opt.hostfile, &job->hosts, &job->nhosts, why, sizeof(why));
    } else if (nodelist != NULL && *nodelist != '\0') {
        rc = dl_hosts_parse_slurm(nodelist, getenv("SLURM_TASKS_PER_NODE"), &job->hosts,
                                  &job->nhosts, why, sizeof(why));
        DL_VLOG("Slurm allocation %s: %d hosts\n", nodelist, job->nhosts);
    } else {
        if (job->opt.np == 0) {
            fprintf(stderr, "dlaunch: missing -np N (or -H / --hostfile)\n");
            return DL_EXIT_USAGE;
        }
        rc = host_add(&job->hosts, &job->nhosts, "localhost", 9, job->opt.np, why,
                      sizeof(why));
    }
    if (rc != 0) {
        fprintf(stderr, "dlaunch: %s\n", why);
        return DL_EXIT_USAGE;
    }
    for (int h = 0; h < job->nhosts; h++) {
        total += job->hosts[h].slots;
    }
    if (job->opt.np == 0) {
        job->opt.np = DC_MIN(total, DL_MAX_RANKS);
    }
    if (job->opt.np > total) {
        fprintf(stderr, "dlaunch: -np %d is more than the %d slots of the hosts given\n",
                job->opt.np, total);
        return DL_EXIT_USAGE;
    }
    left = job->opt.np;
    for (int h = 0; h < job->nhosts; h++) {
        dl_host_t *host = &job->hosts[h];

        host->first_rank = job->opt.np - left;
        host->nranks = DC_MIN(host->slots, left);
        host->local = dl_host_is_local(host->name);
        left -= host->nranks;
    }
    while (job->nhosts > 1 && job->hosts[job->nhosts - 1].nranks == 0) {
        job->nhosts--; /* hosts without ranks take no part (nor count in cross_size) */
    }
    return 0;
}

const char *dl_host_label(const dl_job_t *job, const dl_host_t *host)
{
    static char self[256];

    /* No host list given: this machine's name rather than "localhost". */
    if (job->opt.hosts_arg == NULL && job->opt.hostfile == NULL && job->nhosts == 1 &&
        host->local && strcmp(host->name, "localhost") == 0) {
        if (self[0] == '\0' && gethostname(self, sizeof(self) - 1) != 0) {
            snprintf(self, sizeof(self), "localhost");
        }
        return self;
    }
    return host->name;
}
