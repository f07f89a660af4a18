/*
 * Picks the algorithm of each collective: DCOMM_TUNE rules first, then an
 * alpha-beta-gamma cost model of the comm's slowest link class.
 *
 * DCOMM_TUNE grammar:
 *   spec  := rule ('#' rule)*          (NULL or "" for no rules)
 *   rule  := coll ':' lo '-' hi ':' algo
 *   coll  := allreduce | allgather | broadcast | reducescatter | alltoall | barrier
 *   lo    := size
 *   hi    := size | 'inf'
 *   size  := digits [K | M | G]        (binary: 1K = 1024; lower case allowed)
 *   algo  := a row name of that collective ("ring", "rd" ...)
 * A rule applies to a collective of `bytes` (see dc_select_candidates) when
 * lo <= bytes < hi; the first matching rule wins. Blanks around fields are
 * ignored. Rejected, with a message quoting the rule: an empty rule, missing
 * or extra fields, an unknown collective, an algorithm the collective does not
 * have (the valid ones are listed), a bad number, lo >= hi.
 * Example: allreduce:0-64K:rd#allreduce:64K-inf:ring
 */
#include "select.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

typedef struct link_param {
    double alpha;  /* seconds per message */
    double beta;   /* seconds per byte */
} link_param_t;

typedef struct tune_rule {
    int coll;
    uint64_t lo, hi;  /* [lo, hi) */
    int hi_inf;
    int row;          /* index into sel->rows */
} tune_rule_t;

struct dc_select {
    const dc_algo_row_t *rows;
    int nrows;
    link_param_t links[DC_LINK_COUNT];
    double gamma;      /* seconds per byte reduced */
    double copy_beta;  /* seconds per byte copied in memory */
    double alpha_scale;/* allreduce rows: alpha multiplied by it (autotune) */
    tune_rule_t *rules;
    int nrules;
};

static const char *const link_names[DC_LINK_COUNT] = {
    [DC_LINK_SELF] = "self", [DC_LINK_SHM] = "shm", [DC_LINK_TCP] = "tcp",
    [DC_LINK_UCX] = "ucx",   [DC_LINK_MPI] = "mpi", [DC_LINK_NCCL] = "nccl",
};

/* Link costs until calibration come from the transports' query() (the
 * built-in ones here; the coordinator sets every transport it uses, modules
 * included: core/coord_run.c). These rows serve only where no transport of
 * the class is at hand: a module not loaded in this process (its query()
 * reports the same), or nccl, which is not a transport. Alpha us, GB/s. */
static const struct {
    double alpha_us, bw_gbs;
} link_fallback[DC_LINK_COUNT] = {
    [DC_LINK_UCX] = {3.0, 10.0}, [DC_LINK_MPI] = {5.0, 5.0}, [DC_LINK_NCCL] = {10.0, 20.0},
};

static const dc_transport_ops_t *const builtin_transports[] = {
    &dc_transport_self_ops, &dc_transport_shm_ops, &dc_transport_tcp_ops,
};

#define DEFAULT_REDUCE_GBS 8.0
#define DEFAULT_COPY_GBS   8.0

const char *dc_select_coll_name(int coll)
{
    return (coll >= 0 && coll < DC_SELECT_NCOLLS) ? dc_coll_name(coll) : NULL;
}

int dc_link_class_from_name(const char *transport_name)
{
    for (int c = 0; transport_name != NULL && c < DC_LINK_COUNT; c++) {
        if (strcmp(transport_name, link_names[c]) == 0) {
            return c;
        }
    }
    return -1;
}

const char *dc_link_class_name(dc_link_class_t cls)
{
    return ((int)cls >= 0 && cls < DC_LINK_COUNT) ? link_names[cls] : "?";
}

/* ---- cost model ----------------------------------------------------------- */

/*
 * Each algorithm prices itself (dc_coll_algo_t.cost, its formula beside its
 * row; notation in coll_cost.h). This fills in what the formulas read: the
 * link costs of the class, the compute rates, and autotune's alpha scale.
 */
double dc_select_predict(const dc_select_t *sel, const dc_algo_row_t *row, size_t bytes, int nranks,
                         int nhosts, dc_link_class_t cls)
{
    int li = ((int)cls >= 0 && cls < DC_LINK_COUNT) ? (int)cls : DC_LINK_TCP;
    dc_cost_in_t in = {
        .bytes = bytes,
        .n = (double)bytes,
        .p = nranks,
        .h = nhosts,
        .cls = cls,
        .a = sel->links[li].alpha,
        .b = sel->links[li].beta,
        .g = sel->gamma,
        .c = sel->copy_beta,
        .shm_a = sel->links[DC_LINK_SHM].alpha,
        .shm_b = sel->links[DC_LINK_SHM].beta,
    };

    if (row->algo == NULL || row->algo->cost == NULL) {
        return INFINITY;
    }
    /* Autotune's scale moves the allreduces' crossovers (select.h), and only theirs. */
    if (row->coll == DC_COLL_ALLREDUCE) {
        in.a *= sel->alpha_scale;
        in.shm_a *= sel->alpha_scale;
    }
    in.b_shared = nhosts > 1 ? in.b * ceil((double)nranks / nhosts) : in.b;
    return row->algo->cost(&in);
}

/* ---- DCOMM_TUNE ---------------------------------------------------------- */

typedef struct rule_text {
    int index;          /* 1-based, for messages */
    const char *text;   /* the rule as written */
    int len;
} rule_text_t;

static dc_status_t rule_error(const rule_text_t *rt, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static dc_status_t rule_error(const rule_text_t *rt, const char *fmt, ...)
{
    char why[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return dc_error_set(DCOMM_ERR_INVALID_ARG, "DCOMM_TUNE rule %d '%.*s': %s", rt->index,
                        rt->len, rt->text, why);
}

/* [*s, end) without blanks at either end. */
static void trim(const char **s, const char **end)
{
    while (*s < *end && isspace((unsigned char)**s)) {
        (*s)++;
    }
    while (*end > *s && isspace((unsigned char)(*end)[-1])) {
        (*end)--;
    }
}

static int field_is(const char *s, const char *end, const char *word)
{
    size_t len = strlen(word);

    return (size_t)(end - s) == len && memcmp(s, word, len) == 0;
}

/* digits [K|M|G]; returns 0 on success. */
static int parse_size(const char *s, const char *end, uint64_t *value_p)
{
    uint64_t v = 0, mult = 1;

    trim(&s, &end);
    if (s < end) {
        switch (end[-1]) {
        case 'K': case 'k': mult = 1ull << 10; end--; break;
        case 'M': case 'm': mult = 1ull << 20; end--; break;
        case 'G': case 'g': mult = 1ull << 30; end--; break;
        default: break;
        }
    }
    if (s == end) {
        return -1;
    }
    for (; s < end; s++) {
        uint64_t d = (uint64_t)(*s - '0');

        if (!isdigit((unsigned char)*s) || v > (UINT64_MAX - d) / 10) {
            return -1;
        }
        v = v * 10 + d;
    }
    if (v > UINT64_MAX / mult) {
        return -1;
    }
    *value_p = v * mult;
    return 0;
}

static dc_status_t parse_algo(const dc_select_t *sel, const rule_text_t *rt, int coll,
                              const char *s, const char *end, int *row_p)
{
    char valid[256] = "";
    size_t used = 0;

    for (int i = 0; i < sel->nrows; i++) {
        if (sel->rows[i].coll != coll) {
            continue;
        }
        if (field_is(s, end, sel->rows[i].algo->name)) {
            *row_p = i;
            return DCOMM_OK;
        }
        if (used < sizeof(valid)) {
            used += (size_t)snprintf(valid + used, sizeof(valid) - used, "%s%s",
                                     used ? ", " : "", sel->rows[i].algo->name);
        }
    }
    return rule_error(rt, "unknown %s algorithm '%.*s' (expected one of: %s)", dc_coll_name(coll),
                      (int)(end - s), s, used ? valid : "none is built in");
}

static dc_status_t parse_rule(const dc_select_t *sel, const rule_text_t *rt, tune_rule_t *rule)
{
    const char *s = rt->text, *end = s + rt->len, *c1, *c2, *dash, *f;
    dc_status_t status;

    trim(&s, &end);
    if (s == end) {
        return rule_error(rt, "empty rule (rules are separated by '#')");
    }
    c1 = memchr(s, ':', (size_t)(end - s));
    c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
    if (c2 == NULL || memchr(c2 + 1, ':', (size_t)(end - c2 - 1)) != NULL) {
        return rule_error(rt, "expected 3 fields collective:lo-hi:algorithm, e.g. "
                              "allreduce:0-64K:rd");
    }
    /* Collective. */
    f = c1;
    trim(&s, &f);
    rule->coll = -1;
    for (int c = 0; c < DC_SELECT_NCOLLS; c++) {
        if (field_is(s, f, dc_coll_name(c))) {
            rule->coll = c;
        }
    }
    if (rule->coll < 0) {
        return rule_error(rt, "unknown collective '%.*s' (expected one of: allreduce, "
                              "allgather, broadcast, reducescatter, alltoall, barrier)",
                          (int)(f - s), s);
    }
    /* Range. */
    dash = memchr(c1 + 1, '-', (size_t)(c2 - c1 - 1));
    if (dash == NULL) {
        return rule_error(rt, "expected a byte range lo-hi between the colons, e.g. 0-64K or "
                              "1M-inf, got '%.*s'", (int)(c2 - c1 - 1), c1 + 1);
    }
    if (parse_size(c1 + 1, dash, &rule->lo) != 0) {
        return rule_error(rt, "bad size '%.*s' (expected digits with an optional K, M or G "
                              "suffix)", (int)(dash - c1 - 1), c1 + 1);
    }
    {
        const char *h = dash + 1, *hend = c2;

        trim(&h, &hend);
        rule->hi_inf = field_is(h, hend, "inf");
        if (!rule->hi_inf && parse_size(h, hend, &rule->hi) != 0) {
            return rule_error(rt, "bad size '%.*s' (expected digits with an optional K, M or G "
                                  "suffix, or inf)", (int)(hend - h), h);
        }
        if (!rule->hi_inf && rule->lo >= rule->hi) {
            return rule_error(rt, "range start %llu is not below its end %llu (the range is "
                                  "[lo, hi))", (unsigned long long)rule->lo,
                              (unsigned long long)rule->hi);
        }
    }
    /* Algorithm. */
    s = c2 + 1;
    f = end;
    trim(&s, &f);
    status = parse_algo(sel, rt, rule->coll, s, f, &rule->row);
    return status;
}

static dc_status_t parse_spec(dc_select_t *sel, const char *spec)
{
    int nrules = 1;
    const char *s = spec;

    if (spec == NULL || *spec == '\0') {
        return DCOMM_OK;
    }
    for (const char *t = spec; *t; t++) {
        nrules += (*t == '#');
    }
    sel->rules = calloc((size_t)nrules, sizeof(*sel->rules));
    if (sel->rules == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "DCOMM_TUNE: out of memory");
    }
    for (int i = 0; i < nrules; i++) {
        const char *hash = strchr(s, '#');
        rule_text_t rt = {.index = i + 1, .text = s,
                          .len = hash ? (int)(hash - s) : (int)strlen(s)};
        dc_status_t status = parse_rule(sel, &rt, &sel->rules[i]);

        if (status < 0) {
            return status;
        }
        s += rt.len + 1;
    }
    sel->nrules = nrules;
    return DCOMM_OK;
}

/* ---- life cycle ----------------------------------------------------------- */

dc_status_t dc_select_create_rows(const char *tune_spec, const dc_algo_row_t *rows, int nrows,
                                  dc_select_t **sel_p)
{
    dc_select_t *sel;
    dc_status_t status;

    if (nrows < 0 || nrows > DC_SELECT_MAX_ROWS) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "select: %d rows (at most %d)", nrows,
                            DC_SELECT_MAX_ROWS);
    }
    sel = calloc(1, sizeof(*sel));
    if (sel == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "select: out of memory");
    }
    sel->rows = rows;
    sel->nrows = nrows;
    for (int c = 0; c < DC_LINK_COUNT; c++) {
        dc_select_set_link(sel, (dc_link_class_t)c, link_fallback[c].alpha_us,
                           link_fallback[c].bw_gbs);
    }
    for (size_t t = 0; t < sizeof(builtin_transports) / sizeof(builtin_transports[0]); t++) {
        dc_transport_attr_t attr = {0};
        dc_topo_t topo = {0};
        int cls = dc_link_class_from_name(builtin_transports[t]->name);

        if (cls >= 0 && builtin_transports[t]->query(&topo, &attr) == DCOMM_OK) {
            dc_select_set_link(sel, (dc_link_class_t)cls, attr.latency_us, attr.bandwidth_gbs);
        }
    }
    dc_select_set_compute(sel, DEFAULT_REDUCE_GBS, DEFAULT_COPY_GBS);
    sel->alpha_scale = 1.0;
    status = parse_spec(sel, tune_spec);
    if (status < 0) {
        dc_select_destroy(sel);
        return status;
    }
    *sel_p = sel;
    return DCOMM_OK;
}

dc_status_t dc_select_create(const char *tune_spec, dc_select_t **sel_p)
{
    return dc_select_create_rows(tune_spec, dc_algo_table, dc_algo_table_len, sel_p);
}

void dc_select_destroy(dc_select_t *sel)
{
    if (sel != NULL) {
        free(sel->rules);
        free(sel);
    }
}

void dc_select_set_link(dc_select_t *sel, dc_link_class_t cls, double alpha_us, double bw_gbs)
{
    if ((int)cls >= 0 && cls < DC_LINK_COUNT && alpha_us > 0.0 && bw_gbs > 0.0 &&
        isfinite(alpha_us) && isfinite(bw_gbs)) {
        sel->links[cls].alpha = alpha_us * 1e-6;
        sel->links[cls].beta = 1.0 / (bw_gbs * 1e9);
    }
}

void dc_select_set_alpha_scale(dc_select_t *sel, double scale)
{
    if (scale > 0.0 && isfinite(scale)) {
        sel->alpha_scale = scale;
    }
}

void dc_select_set_compute(dc_select_t *sel, double reduce_gbs, double copy_gbs)
{
    if (reduce_gbs > 0.0 && isfinite(reduce_gbs)) {
        sel->gamma = 1.0 / (reduce_gbs * 1e9);
    }
    if (copy_gbs > 0.0 && isfinite(copy_gbs)) {
        sel->copy_beta = 1.0 / (copy_gbs * 1e9);
    }
}

/* ---- ranking -------------------------------------------------------------- */

/* Ranks coll's rows into idx[] (forced one first, then by cost); returns the
 * count and sets *forced_p when a rule matched. */
static int rank_rows(const dc_select_t *sel, int coll, size_t bytes, int nranks, int nhosts,
                     dc_link_class_t cls, int *idx, double *cost, int *forced_p)
{
    int forced = -1, n = 0;

    for (int i = 0; i < sel->nrules && forced < 0; i++) {
        const tune_rule_t *r = &sel->rules[i];

        if (r->coll == coll && bytes >= r->lo && (r->hi_inf || bytes < r->hi)) {
            forced = r->row;
        }
    }
    if (forced >= 0) {
        idx[n] = forced;
        cost[n] = dc_select_predict(sel, &sel->rows[forced], bytes, nranks, nhosts, cls);
        n++;
    }
    for (int i = 0; i < sel->nrows; i++) {
        double c;
        int j;

        if (sel->rows[i].coll != coll || i == forced) {
            continue;
        }
        c = dc_select_predict(sel, &sel->rows[i], bytes, nranks, nhosts, cls);
        if (!(c < INFINITY)) {
            continue;
        }
        /* Insertion after every entry with cost <= c keeps ties in table order. */
        for (j = n; j > (forced >= 0) && cost[j - 1] > c; j--) {
            idx[j] = idx[j - 1];
            cost[j] = cost[j - 1];
        }
        idx[j] = i;
        cost[j] = c;
        n++;
    }
    *forced_p = forced >= 0;
    return n;
}

static int format_time(char *buf, size_t len, double s)
{
    if (!(s < INFINITY)) {
        return snprintf(buf, len, "n/a");
    }
    if (s < 1e-3) {
        return snprintf(buf, len, "%.1f us", s * 1e6);
    }
    if (s < 1.0) {
        return snprintf(buf, len, "%.2f ms", s * 1e3);
    }
    return snprintf(buf, len, "%.2f s", s);
}

static void format_ranking(const dc_select_t *sel, int coll, size_t bytes, int nranks,
                           int nhosts, dc_link_class_t cls, const int *idx, const double *cost,
                           int n, int forced, char *buf, size_t len)
{
    size_t used;

    if (len == 0) {
        return;
    }
    used = (size_t)snprintf(buf, len, "%s %zu B, %d rank%s, %d host%s, %s:",
                            dc_select_coll_name(coll) ? dc_select_coll_name(coll) : "?", bytes,
                            nranks, nranks == 1 ? "" : "s", nhosts, nhosts == 1 ? "" : "s",
                            dc_link_class_name(cls));
    for (int i = 0; i < n && used < len; i++) {
        char t[32];

        format_time(t, sizeof(t), cost[i]);
        used += (size_t)snprintf(buf + used, len - used, "%s %s (%s%s)", i ? "," : "",
                                 sel->rows[idx[i]].algo->name,
                                 (i == 0 && forced) ? "forced by DCOMM_TUNE, model " : "", t);
    }
    if (n == 0 && used < len) {
        snprintf(buf + used, len - used, " no algorithm");
    }
}

int dc_select_candidates(const dc_select_t *sel, int coll, size_t bytes, int nranks, int nhosts,
                         dc_link_class_t cls, const dc_coll_algo_t **out, int max)
{
    int idx[DC_SELECT_MAX_ROWS], forced, n;
    double cost[DC_SELECT_MAX_ROWS];

    n = rank_rows(sel, coll, bytes, nranks, nhosts, cls, idx, cost, &forced);
    if (dc_log_level >= DC_LOG_LEVEL_DEBUG) {
        char line[512];

        format_ranking(sel, coll, bytes, nranks, nhosts, cls, idx, cost, n, forced, line,
                       sizeof(line));
        DC_DEBUG("select: %s", line);
    }
    n = DC_MIN(n, max);
    for (int i = 0; i < n; i++) {
        out[i] = sel->rows[idx[i]].algo;
    }
    return DC_MAX(n, 0);
}

const char *dc_select_explain(const dc_select_t *sel, int coll, size_t bytes, int nranks,
                              int nhosts, dc_link_class_t cls, char *buf, size_t len)
{
    int idx[DC_SELECT_MAX_ROWS], forced, n;
    double cost[DC_SELECT_MAX_ROWS];

    n = rank_rows(sel, coll, bytes, nranks, nhosts, cls, idx, cost, &forced);
    format_ranking(sel, coll, bytes, nranks, nhosts, cls, idx, cost, n, forced, buf, len);
    return buf;
}

/* The rows of coll in a table ranked by order alone, in order. */
static int pref_rows(const dc_algo_row_t *rows, int nrows, int coll, const dc_coll_algo_t **out,
                     int max)
{
    int n = 0;

    for (int i = 0; i < nrows && n < max; i++) {
        if (rows[i].coll == coll) {
            out[n++] = rows[i].algo;
        }
    }
    return n;
}

int dc_select_control(int coll, const dc_coll_algo_t **out, int max)
{
    return pref_rows(dc_control_table, dc_control_table_len, coll, out, max);
}

int dc_select_device(int coll, const dc_coll_algo_t **out, int max)
{
    return pref_rows(dc_device_table, dc_device_table_len, coll, out, max);
}
