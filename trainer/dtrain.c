/* dtrain: trains the CNN of model.h on Fashion-MNIST, data parallel over dcomm.
 * Every rank holds the whole model; each step a rank takes its own slice of a
 * shuffled global batch, and each layer's gradients are averaged across ranks
 * with an async allreduce started as soon as backward produces them, so the
 * reduction of the last layers overlaps the backward of the first. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <dcomm.h>

#include "checkpoint.h"
#include "idx.h"
#include "model.h"
#include "report.h"

#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
/* Fashion-MNIST's pixel mean and standard deviation (on [0, 1]) */
#define PIXEL_MEAN 0.2860f
#define PIXEL_STD  0.3530f

typedef struct options {
    const char *device, *data_dir, *out_dir, *plot, *resume;
    int threads, epochs, batch, bench_steps;
    long limit, test_limit;
    double lr, momentum, weight_decay, warmup_epochs, log_every_s;
    uint64_t seed;
    progress_mode_t progress;
    int checkpoint;
    int elastic, commit_every;
} options_t;

static int g_rank = -1; /* until dcomm_init says (dlaunch prefixes lines with it anyway) */
/* --elastic: a collective that fails because a peer is gone is recoverable;
 * the first such failure of a round is kept here (and its account in
 * g_lost_why) until the reset that restores the last commit. */
static int g_elastic;
static dcomm_status_t g_lost = DCOMM_OK;
static char g_lost_why[1024];

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    if (g_rank >= 0) {
        fprintf(stderr, "dtrain: rank %d: ", g_rank);
    } else {
        fprintf(stderr, "dtrain: ");
    }
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

/* A failed collective means a peer is gone or the job is broken: say which
 * operation, and dcomm's own account of the cause (which names the rank).
 * With --elastic the statuses of a lost peer (those the Python elastic run
 * resets on) are kept in g_lost instead, and 0 returned; else 1. */
static int comm_check(dcomm_status_t st, const char *what)
{
    if (st == DCOMM_OK) {
        return 1;
    }
    if (g_elastic && (st == DCOMM_ERR_PEER_LOST || st == DCOMM_ERR_SHUT_DOWN ||
                      st == DCOMM_ERR_TIMEOUT || st == DCOMM_ERR_TRANSPORT)) {
        if (g_lost == DCOMM_OK) {
            g_lost = st;
            snprintf(g_lost_why, sizeof(g_lost_why), "%s failed: %s: %s", what,
                     dcomm_status_string(st), dcomm_last_error());
        }
        return 0;
    }
    die("%s failed: %s: %s", what, dcomm_status_string(st), dcomm_last_error());
}

static double clock_s(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double now_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: dlaunch -np N dtrain [options]\n"
            "Trains a CNN on Fashion-MNIST, data parallel over the ranks.\n"
            "  --device cpu|cuda      where the layers run (default cpu)\n"
            "  --threads N            threads per rank for the layers (default 1)\n"
            "  --epochs N             epochs (default 5)\n"
            "  --batch-size N         images per rank per step (default 64)\n"
            "  --lr X                 learning rate for one rank (default 0.02); scaled by the\n"
            "                         rank count, reached by a linear warm-up, cosine decay after\n"
            "  --warmup-epochs X      warm-up length (default 0.5)\n"
            "  --momentum X           SGD momentum (default 0.9)\n"
            "  --weight-decay X       L2 on weights (default 5e-4)\n"
            "  --seed N               seed of weights, shuffles and dropout (default 42)\n"
            "  --data-dir DIR         IDX .gz files (default " DEFAULT_DATA_DIR ")\n"
            "  --limit N              train on the first N images only (default all)\n"
            "  --test-limit N         evaluate on the first N test images (default all)\n"
            "  --out-dir DIR          checkpoint.dtc, metrics.csv, steps.csv (default dtrain-out)\n"
            "  --resume[=FILE]        continue from FILE (default OUT-DIR/checkpoint.dtc)\n"
            "  --no-checkpoint        write no checkpoints\n"
            "  --plot FILE.png        draw loss and accuracy with gnuplot at the end\n"
            "  --progress auto|bar|lines|off   (default auto: a bar on a terminal)\n"
            "  --log-every SECONDS    interval of progress lines (default 10)\n"
            "  --bench STEPS          time STEPS training steps after 3 warm-up steps, print\n"
            "                         images/s, then stop (no evaluation, no files)\n"
            "  --elastic              under dlaunch's elastic flags: keep the state in memory at\n"
            "                         each commit; when a peer is lost, restore it, join the\n"
            "                         next round and go on at its size\n"
            "  --commit-every N       with --elastic: commit every N steps and at each epoch's\n"
            "                         end (default 10)\n");
}

static long parse_long(const char *opt, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);

    if (errno || end == s || *end || v < lo || v > hi) {
        die("%s: '%s' is not an integer in [%ld, %ld]", opt, s, lo, hi);
    }
    return v;
}

static double parse_double(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);

    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        die("%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    }
    return v;
}

static void parse_options(int argc, char **argv, options_t *o)
{
    enum { O_DEVICE = 256, O_THREADS, O_EPOCHS, O_BATCH, O_LR, O_WARMUP, O_MOMENTUM, O_WD, O_SEED,
           O_DATA, O_LIMIT, O_TLIMIT, O_OUT, O_RESUME, O_NOCKPT, O_PLOT, O_PROGRESS, O_LOGEVERY,
           O_BENCH, O_ELASTIC, O_COMMIT, O_HELP };
    static const struct option longopts[] = {
        {"device", required_argument, 0, O_DEVICE}, {"threads", required_argument, 0, O_THREADS},
        {"epochs", required_argument, 0, O_EPOCHS}, {"batch-size", required_argument, 0, O_BATCH},
        {"lr", required_argument, 0, O_LR}, {"warmup-epochs", required_argument, 0, O_WARMUP},
        {"momentum", required_argument, 0, O_MOMENTUM},
        {"weight-decay", required_argument, 0, O_WD}, {"seed", required_argument, 0, O_SEED},
        {"data-dir", required_argument, 0, O_DATA}, {"limit", required_argument, 0, O_LIMIT},
        {"test-limit", required_argument, 0, O_TLIMIT}, {"out-dir", required_argument, 0, O_OUT},
        {"resume", optional_argument, 0, O_RESUME}, {"no-checkpoint", no_argument, 0, O_NOCKPT},
        {"plot", required_argument, 0, O_PLOT}, {"progress", required_argument, 0, O_PROGRESS},
        {"log-every", required_argument, 0, O_LOGEVERY}, {"bench", required_argument, 0, O_BENCH},
        {"elastic", no_argument, 0, O_ELASTIC},
        {"commit-every", required_argument, 0, O_COMMIT}, {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};

    *o = (options_t){.device = "cpu", .data_dir = DEFAULT_DATA_DIR, .out_dir = "dtrain-out",
                     .threads = 1, .epochs = 5, .batch = 64, .limit = -1, .test_limit = -1,
                     .lr = 0.02, .momentum = 0.9, .weight_decay = 5e-4, .warmup_epochs = 0.5,
                     .log_every_s = 10, .seed = 42, .progress = PROGRESS_AUTO, .checkpoint = 1,
                     .commit_every = 10};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_DEVICE: o->device = optarg; break;
        case O_THREADS: o->threads = (int)parse_long("--threads", optarg, 1, 1024); break;
        case O_EPOCHS: o->epochs = (int)parse_long("--epochs", optarg, 1, 100000); break;
        case O_BATCH: o->batch = (int)parse_long("--batch-size", optarg, 1, 65536); break;
        case O_LR: o->lr = parse_double("--lr", optarg, 0, 100); break;
        case O_WARMUP: o->warmup_epochs = parse_double("--warmup-epochs", optarg, 0, 1e6); break;
        case O_MOMENTUM: o->momentum = parse_double("--momentum", optarg, 0, 0.999999); break;
        case O_WD: o->weight_decay = parse_double("--weight-decay", optarg, 0, 1); break;
        case O_SEED: o->seed = (uint64_t)parse_long("--seed", optarg, 0, 0x7fffffffffffffffL); break;
        case O_DATA: o->data_dir = optarg; break;
        case O_LIMIT: o->limit = parse_long("--limit", optarg, 1, 1L << 30); break;
        case O_TLIMIT: o->test_limit = parse_long("--test-limit", optarg, 1, 1L << 30); break;
        case O_OUT: o->out_dir = optarg; break;
        case O_RESUME: o->resume = optarg != NULL ? optarg : ""; break;
        case O_NOCKPT: o->checkpoint = 0; break;
        case O_PLOT: o->plot = optarg; break;
        case O_PROGRESS:
            if (!strcmp(optarg, "auto")) o->progress = PROGRESS_AUTO;
            else if (!strcmp(optarg, "bar")) o->progress = PROGRESS_BAR;
            else if (!strcmp(optarg, "lines")) o->progress = PROGRESS_LINES;
            else if (!strcmp(optarg, "off")) o->progress = PROGRESS_OFF;
            else die("--progress: '%s' is not auto, bar, lines or off", optarg);
            break;
        case O_LOGEVERY: o->log_every_s = parse_double("--log-every", optarg, 0, 1e6); break;
        case O_BENCH: o->bench_steps = (int)parse_long("--bench", optarg, 1, 1000000); break;
        case O_ELASTIC: o->elastic = 1; break;
        case O_COMMIT: o->commit_every = (int)parse_long("--commit-every", optarg, 1, 1000000); break;
        case O_HELP: case 'h': usage(stdout); exit(0);
        default:
            usage(stderr);
            die("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        die("unexpected argument '%s' (see --help)", argv[optind]);
    }
    if (strcmp(o->device, "cpu") != 0 && strcmp(o->device, "cuda") != 0) {
        die("--device: '%s' is not cpu or cuda", o->device);
    }
    if (o->elastic && (o->resume != NULL || o->bench_steps > 0)) {
        die("--elastic does not combine with %s", o->resume != NULL ? "--resume" : "--bench");
    }
}

/* ---- data ------------------------------------------------------------------------ */

typedef struct dataset {
    int count;
    const uint8_t *pixels; /* count x 784 */
    const uint8_t *labels;
    idx_data_t images_idx, labels_idx;
} dataset_t;

static void load_set(const char *dir, const char *prefix, long limit, dataset_t *d)
{
    char ipath[4096], lpath[4096], err[4400];

    snprintf(ipath, sizeof(ipath), "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(lpath, sizeof(lpath), "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    if (idx_load(ipath, 3, &d->images_idx, err, sizeof(err)) != 0 ||
        idx_load(lpath, 1, &d->labels_idx, err, sizeof(err)) != 0) {
        int missing = access(ipath, F_OK) != 0 || access(lpath, F_OK) != 0;
        die("%s%s", err,
            missing ? " (install the Debian package dataset-fashion-mnist, or pass --data-dir)" : "");
    }
    if (d->images_idx.rows != MODEL_IMAGE || d->images_idx.cols != MODEL_IMAGE) {
        die("%s: images are %dx%d, the model takes %dx%d", ipath, d->images_idx.rows,
            d->images_idx.cols, MODEL_IMAGE, MODEL_IMAGE);
    }
    if (d->images_idx.count != d->labels_idx.count) {
        die("%s has %d images but %s has %d labels", ipath, d->images_idx.count, lpath,
            d->labels_idx.count);
    }
    for (int i = 0; i < d->labels_idx.count; i++) {
        if (d->labels_idx.data[i] >= MODEL_CLASSES) {
            die("%s: label %d of item %d is not a class 0..%d", lpath, d->labels_idx.data[i], i,
                MODEL_CLASSES - 1);
        }
    }
    d->count = limit > 0 && limit < d->images_idx.count ? (int)limit : d->images_idx.count;
    d->pixels = d->images_idx.data;
    d->labels = d->labels_idx.data;
}

/* Gathers items idx[0..n) into normalised floats and labels. */
static void make_batch(const dataset_t *d, const uint32_t *idx, int n, float *x, uint8_t *y)
{
    const int img = MODEL_IMAGE * MODEL_IMAGE;

    for (int i = 0; i < n; i++) {
        const uint8_t *p = d->pixels + (size_t)idx[i] * img;
        float *xi = x + (size_t)i * img;
        for (int j = 0; j < img; j++) {
            xi[j] = ((float)p[j] * (1.0f / 255.0f) - PIXEL_MEAN) * (1.0f / PIXEL_STD);
        }
        y[i] = d->labels[idx[i]];
    }
}

/* The same permutation on every rank: Fisher-Yates driven by (seed, epoch). */
static void shuffle(uint32_t *perm, int n, uint64_t seed, int epoch)
{
    uint64_t stream = nn_rand_u64(seed, 0x5348554646ull + (uint64_t)epoch);

    for (int i = 0; i < n; i++) {
        perm[i] = (uint32_t)i;
    }
    for (int i = n - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(nn_rand_u64(stream, (uint64_t)i) % (uint64_t)(i + 1));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ---- gradient averaging ------------------------------------------------------------ */

typedef struct grad_sync {
    model_t *m;
    float *host;      /* m->grads on the CPU, a host mirror for the GPU */
    int size;
    dcomm_handle_t handle[MODEL_LAYERS];
    int pending[MODEL_LAYERS]; /* handle[l] is to be waited for */
    char name[MODEL_LAYERS][32];
} grad_sync_t;

static int grad_ready(void *ctx, int l)
{
    grad_sync_t *g = ctx;
    const model_layer_t *ly = &g->m->layer[l];
    size_t count = ly->weights + ly->biases;
    float *slice = g->host + ly->offset;

    if (g->size == 1) {
        return 0;
    }
    if (g_lost != DCOMM_OK) {
        return 1; /* a reset is due: no more of this step's backward */
    }
    if (g->host != g->m->grads) {
        g->m->ops->download(slice, g->m->grads + ly->offset, count * sizeof(float));
    }
    g->pending[l] = comm_check(dcomm_allreduce_async(DCOMM_COMM_WORLD, g->name[l], slice, slice,
                                                     count, DCOMM_FLOAT32, DCOMM_AVG,
                                                     &g->handle[l]),
                               g->name[l]);
    return !g->pending[l];
}

/* The averaged gradients in, and the SGD step; the seconds spent waiting and
 * updating go to *wait_s and *update_s. On the CPU each layer is updated as
 * soon as its allreduce completes, in the order backward submitted them: the
 * dense layers' updates (most of the parameters) then run while the last
 * gradients' allreduces wait for the other ranks to finish backward. The
 * layers' updates are independent, so the result is the same in any order.
 * After a lost peer (--elastic) every submitted handle is still waited for
 * and released, and no more layers are updated: the reset restores them. */
static void grad_wait_update(grad_sync_t *g, float lr, float momentum, float weight_decay,
                             double *wait_s, double *update_s)
{
    const int overlap = g->size > 1 && g->host == g->m->grads;

    for (int l = MODEL_LAYERS - 1; l >= 0 && g->size > 1; l--) {
        char what[64];
        double t0 = now_s(), t1;

        if (!g->pending[l]) {
            continue;
        }
        g->pending[l] = 0;
        snprintf(what, sizeof(what), "allreduce of %s", g->name[l]);
        comm_check(dcomm_wait(g->handle[l]), what);
        comm_check(dcomm_release(g->handle[l]), "release");
        t1 = now_s();
        *wait_s += t1 - t0;
        if (overlap && g_lost == DCOMM_OK) {
            model_update_layer(g->m, l, lr, momentum, weight_decay);
            *update_s += now_s() - t1;
        }
    }
    if (!overlap && g_lost == DCOMM_OK) {
        double t0 = now_s();

        if (g->size > 1 && g->host != g->m->grads) { /* the GPU's: one upload */
            g->m->ops->upload(g->m->grads, g->host, g->m->nparams * sizeof(float));
        }
        model_update(g->m, lr, momentum, weight_decay);
        *update_s += now_s() - t0;
    }
}

/* ---- schedule and evaluation -------------------------------------------------------- */

/* Linear warm-up from lr to lr * ranks, then cosine decay to zero at the end. */
static double lr_at(const options_t *o, int ranks, long step, long total, long warmup)
{
    double peak = o->lr * ranks;

    if (step < warmup) {
        return o->lr + (peak - o->lr) * (double)step / (double)warmup;
    }
    double t = total > warmup ? (double)(step - warmup) / (double)(total - warmup) : 1.0;
    return peak * 0.5 * (1.0 + cos(M_PI * (t > 1 ? 1 : t)));
}

/* Loss and accuracy over this rank's contiguous shard of the test set, summed
 * across ranks: out[0] loss sum, out[1] correct, out[2] images. */
static void evaluate(model_t *m, const dataset_t *test, int rank, int size, float *x, uint8_t *y,
                     uint32_t *idx, double out[3])
{
    long lo = (long)test->count * rank / size, hi = (long)test->count * (rank + 1) / size;
    double sums[3] = {0, 0, 0};

    for (long i = lo; i < hi; i += m->batch) {
        int n = (int)(hi - i < m->batch ? hi - i : m->batch);
        for (int k = 0; k < n; k++) {
            idx[k] = (uint32_t)(i + k);
        }
        make_batch(test, idx, n, x, y);
        double loss;
        int correct;
        model_forward(m, n, x, y, 0, 0, 0, &loss, &correct);
        sums[0] += loss * n;
        sums[1] += correct;
        sums[2] += n;
    }
    comm_check(dcomm_allreduce(DCOMM_COMM_WORLD, "eval.sums", sums, out, 3, DCOMM_FLOAT64, DCOMM_SUM),
               "allreduce of the test accuracy");
}

/* ---- checkpoints -------------------------------------------------------------------- */

/* Rank 0 reads the checkpoint; every rank learns the outcome and gets its
 * parameters, momentum and position by broadcast. */
static void resume_from(const options_t *o, const char *path, model_t *m, int rank, int size,
                        long limit, float *host_params, float *host_mom, int *epoch_p, long *step_p)
{
    int64_t info[3] = {0, 0, 0}; /* ok, epochs done, step */
    char err[4400] = "";

    if (rank == 0) {
        ckpt_header_t h = {.nparams = m->nparams};
        if (ckpt_load(path, &h, host_params, host_mom, err, sizeof(err)) != 0) {
            info[0] = -1;
        } else if (h.seed != o->seed || h.ranks != size || h.batch != o->batch ||
                   h.limit != limit || h.epochs != o->epochs) {
            snprintf(err, sizeof(err),
                     "%s was written by a run with seed %llu, %d ranks, batch %d, %lld images, "
                     "%d epochs; this run has seed %llu, %d ranks, batch %d, %ld images, %d "
                     "epochs (a bit-exact resume needs them equal)",
                     path, (unsigned long long)h.seed, h.ranks, h.batch, (long long)h.limit,
                     h.epochs, (unsigned long long)o->seed, size, o->batch, limit, o->epochs);
            info[0] = -1;
        } else {
            info[0] = 1;
            info[1] = h.epochs_done;
            info[2] = h.step;
        }
    }
    comm_check(dcomm_broadcast(DCOMM_COMM_WORLD, "resume.info", info, 3, DCOMM_INT64, 0),
               "broadcast of the checkpoint header");
    if (info[0] != 1) {
        die("--resume: %s", rank == 0 ? err : "rank 0 could not load the checkpoint (see its message)");
    }
    comm_check(dcomm_broadcast(DCOMM_COMM_WORLD, "resume.params", host_params, m->nparams,
                               DCOMM_FLOAT32, 0), "broadcast of the checkpoint parameters");
    comm_check(dcomm_broadcast(DCOMM_COMM_WORLD, "resume.momentum", host_mom, m->nparams,
                               DCOMM_FLOAT32, 0), "broadcast of the checkpoint momentum");
    *epoch_p = (int)info[1];
    *step_p = (long)info[2];
}

/* ---- elastic ------------------------------------------------------------------------ */

/* --elastic: the last commit, in host memory; everything a reset restores.
 * The shuffles and dropout masks are counter-based (seed, epoch, rank, step),
 * so the position in the data is all of the generators' state. */
typedef struct commit {
    float *params, *momentum;
    int epoch;      /* the epoch in progress */
    long pos;       /* images of its permutation consumed */
    double sums[3]; /* this rank's training loss sum, correct and images in it so far */
} commit_t;

static void commit_take(commit_t *c, const model_t *m, int epoch, long pos, const double sums[3])
{
    m->ops->download(c->params, m->params, m->nparams * sizeof(float));
    m->ops->download(c->momentum, m->momentum, m->nparams * sizeof(float));
    c->epoch = epoch;
    c->pos = pos;
    memcpy(c->sums, sums, sizeof(c->sums));
}

/* At a commit, every rank learns whether dlaunch's hosts changed (rank 0's
 * view, broadcast, so that all take the same branch). Returns 1 when the
 * round must be re-formed; a lost peer also sets g_lost. */
static int hosts_changed(void)
{
    uint64_t stamp = 0;
    int how = 0;
    int64_t flag = 0;

    if (g_rank == 0 && dcomm_hosts_updated(&stamp, &how) == DCOMM_OK && stamp != 0) {
        flag = how;
    }
    if (!comm_check(dcomm_broadcast(DCOMM_COMM_WORLD, "elastic.hosts", &flag, 1, DCOMM_INT64, 0),
                    "broadcast of the hosts notice")) {
        return 1;
    }
    return flag != 0;
}

/* The start of each round: rank 0's commit (position, parameters, momentum)
 * goes to every rank, through host_params / host_mom so that a failure in the
 * middle leaves this rank's own commit whole; then into the model. A position
 * past the epoch's images is refused. Returns 0 when a peer was lost meanwhile. */
static int commit_sync(commit_t *c, model_t *m, long images, float *host_params, float *host_mom)
{
    int64_t info[2] = {c->epoch, c->pos};
    const size_t bytes = m->nparams * sizeof(float);

    memcpy(host_params, c->params, bytes);
    memcpy(host_mom, c->momentum, bytes);
    if (!comm_check(dcomm_broadcast(DCOMM_COMM_WORLD, "elastic.info", info, 2, DCOMM_INT64, 0),
                    "broadcast of the committed position") ||
        !comm_check(dcomm_broadcast(DCOMM_COMM_WORLD, "elastic.params", host_params, m->nparams,
                                    DCOMM_FLOAT32, 0), "broadcast of the committed parameters") ||
        !comm_check(dcomm_broadcast(DCOMM_COMM_WORLD, "elastic.momentum", host_mom, m->nparams,
                                    DCOMM_FLOAT32, 0), "broadcast of the committed momentum")) {
        return 0;
    }
    if (info[0] < 0 || info[1] < 0 || info[0] > INT32_MAX || info[1] > images) {
        die("rank 0 committed a position out of range (epoch %lld, image %lld)",
            (long long)info[0], (long long)info[1]);
    }
    if (info[0] != c->epoch || info[1] != c->pos) { /* a new worker, or one a step behind */
        memset(c->sums, 0, sizeof(c->sums));
    }
    c->epoch = (int)info[0];
    c->pos = (long)info[1];
    memcpy(c->params, host_params, bytes);
    memcpy(c->momentum, host_mom, bytes);
    m->ops->upload(m->params, c->params, bytes);
    m->ops->upload(m->momentum, c->momentum, bytes);
    return 1;
}

/* ---- main ------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    options_t o;
    dcomm_status_t st;

    parse_options(argc, argv, &o);
    g_elastic = o.elastic;
    if ((st = dcomm_init()) != DCOMM_OK) {
        die("dcomm_init failed: %s: %s", dcomm_status_string(st), dcomm_last_error());
    }
    int rank = dcomm_rank(), size = dcomm_size();
    g_rank = rank;

    const model_ops_t *ops = &model_cpu_ops;
    if (!strcmp(o.device, "cuda")) {
        const char *why = "";
        ops = model_cuda_ops(&why);
        if (ops == NULL) {
            die("--device cuda: %s", why);
        }
    }
    nn_set_threads(o.threads);

    dataset_t train, test;
    load_set(o.data_dir, "train", o.limit, &train);
    load_set(o.data_dir, "t10k", o.test_limit, &test);
    long global_batch = (long)o.batch * size;
    long steps_per_epoch = train.count / global_batch;
    if (steps_per_epoch == 0) {
        die("%d training images are fewer than one global batch (%d ranks x --batch-size %d)",
            train.count, size, o.batch);
    }

    model_t m;
    if (model_create(&m, ops, o.batch) != 0) {
        die("out of %s memory for the model at batch size %d", ops->name, o.batch);
    }
    float *host_params = malloc(m.nparams * sizeof(float));
    float *host_mom = calloc(m.nparams, sizeof(float));
    float *host_grads = ops == &model_cpu_ops ? m.grads : malloc(m.nparams * sizeof(float));
    float *xb = malloc((size_t)o.batch * MODEL_IMAGE * MODEL_IMAGE * sizeof(float));
    uint8_t *yb = malloc((size_t)o.batch);
    uint32_t *perm = malloc((size_t)train.count * sizeof(uint32_t));
    uint32_t *eval_idx = malloc((size_t)o.batch * sizeof(uint32_t));
    commit_t cm = {0};
    if (o.elastic) {
        cm.params = calloc(m.nparams, sizeof(float));
        cm.momentum = calloc(m.nparams, sizeof(float));
    }
    if (!host_params || !host_mom || !host_grads || !xb || !yb || !perm || !eval_idx ||
        (o.elastic && (!cm.params || !cm.momentum))) {
        die("out of host memory");
    }

    /* The starting point: a checkpoint, or rank 0's initial weights (with
     * --elastic, broadcast as the first commit at the start of the round). */
    char ckpt_path[4096];
    int start_epoch = 0;
    long step = 0;
    snprintf(ckpt_path, sizeof(ckpt_path), "%s/checkpoint.dtc", o.out_dir);
    if (o.resume != NULL) {
        resume_from(&o, o.resume[0] ? o.resume : ckpt_path, &m, rank, size, train.count,
                    host_params, host_mom, &start_epoch, &step);
    } else {
        if (rank == 0) {
            model_init_params(&m, o.seed, o.elastic ? cm.params : host_params);
        }
        if (!o.elastic) {
            comm_check(dcomm_broadcast(DCOMM_COMM_WORLD, "init.params", host_params, m.nparams,
                                       DCOMM_FLOAT32, 0), "broadcast of the initial weights");
        }
    }
    if (!o.elastic) {
        ops->upload(m.params, host_params, m.nparams * sizeof(float));
        ops->upload(m.momentum, host_mom, m.nparams * sizeof(float));
    }

    const int bench = o.bench_steps > 0;
    report_t rep;
    int files = rank == 0 && !bench;
    if (files && mkdir(o.out_dir, 0755) != 0 && errno != EEXIST) {
        die("cannot create --out-dir %s: %s", o.out_dir, strerror(errno));
    }
    if (report_open(&rep, rank == 0 && !bench ? o.progress : PROGRESS_OFF, o.log_every_s,
                    files ? o.out_dir : NULL, o.resume != NULL) != 0) {
        die("cannot write the metrics files");
    }
    if (rank == 0) {
        printf("dtrain: %d rank%s, device %s, %d thread%s per rank, batch %d per rank (%ld "
               "global), %d train / %d test images, %ld steps per epoch, lr %g x %d, seed %llu%s\n",
               size, size > 1 ? "s" : "", ops->name, o.threads, o.threads > 1 ? "s" : "", o.batch,
               global_batch, train.count, test.count, steps_per_epoch, o.lr, size,
               (unsigned long long)o.seed, o.elastic ? ", elastic" : "");
        if (ops == &model_cpu_ops) {
            printf("dtrain: kernels: %s\n", nn_kernels_config());
        }
        printf("dtrain: BLAS: %s\n", nn_blas_config());
        if (o.resume != NULL) {
            printf("dtrain: resumed after epoch %d (step %ld)\n", start_epoch, step);
        }
        fflush(stdout);
    }

    grad_sync_t gs = {.m = &m, .host = host_grads, .size = size};
    for (int l = 0; l < MODEL_LAYERS; l++) {
        snprintf(gs.name[l], sizeof(gs.name[l]), "grad.%s", m.layer[l].name);
    }
    double final_acc = -1.0, bench_t0 = 0.0, bench_cpu0 = 0.0;
    double phase[5] = {0}; /* seconds in: batch, forward, backward, gradient wait, update */
    int bench_done = 0;
    int epoch = start_epoch;
    long pos = 0;               /* images of this epoch's permutation consumed */
    double sums[3] = {0, 0, 0}; /* this epoch's loss sum, correct and images on this rank */
    double lost_at = 0.0; /* when this rank saw a lost peer, until its next step (--elastic) */
    double epoch_t0 = 0.0; /* when this epoch began (before any reset in it) */

    /* One pass per membership round: without --elastic, only the first. */
    for (int round = 1;; round++) {
        if (o.elastic && !commit_sync(&cm, &m, train.count, host_params, host_mom)) {
            goto reset;
        }
        if (o.elastic) {
            epoch = cm.epoch;
            pos = cm.pos;
            memcpy(sums, cm.sums, sizeof(sums));
            global_batch = (long)o.batch * size;
            steps_per_epoch = train.count / global_batch;
            if (steps_per_epoch == 0) {
                die("%d training images are fewer than one global batch (%d ranks x "
                    "--batch-size %d)", train.count, size, o.batch);
            }
            /* the schedule's step for this size: the same fraction of the run */
            step = epoch * steps_per_epoch + pos / global_batch;
            if (rank == 0) {
                printf("dtrain: elastic: round %d: %d rank%s from epoch %d image %ld\n", round,
                       size, size > 1 ? "s" : "", epoch + 1, pos);
                fflush(stdout);
            }
        }
        gs.size = size;
        const long total_steps = steps_per_epoch * o.epochs;
        const long warmup = (long)(o.warmup_epochs * steps_per_epoch);
        const uint64_t dropout_seed = nn_rand_u64(o.seed, 0xd20900ull + (uint64_t)rank);

        for (; epoch < o.epochs && !bench_done; epoch++) {
            shuffle(perm, train.count, o.seed, epoch);
            double t0 = now_s(), lr = lr_at(&o, size, step, total_steps, warmup);
            const long pos0 = pos;
            if (pos == 0 || epoch_t0 == 0.0) {
                epoch_t0 = t0;
            }
            for (; pos + global_batch <= train.count; step++) {
                if (bench && (step == 3 ||
                              (o.bench_steps + 3 > steps_per_epoch * o.epochs && step == 0))) {
                    bench_t0 = now_s();
                    bench_cpu0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
                    memset(phase, 0, sizeof(phase));
                }
                double tp[4];
                tp[0] = now_s();
                make_batch(&train, perm + pos + (long)rank * o.batch, o.batch, xb, yb);
                double loss;
                int ok;
                lr = lr_at(&o, size, step, total_steps, warmup);
                tp[1] = now_s();
                model_forward(&m, o.batch, xb, yb, 1, dropout_seed, (uint64_t)step * o.batch * 1024,
                              &loss, &ok);
                tp[2] = now_s();
                model_backward(&m, o.batch, grad_ready, &gs);
                tp[3] = now_s();
                grad_wait_update(&gs, (float)lr, (float)o.momentum, (float)o.weight_decay,
                                 &phase[3], &phase[4]);
                if (g_lost != DCOMM_OK) {
                    goto reset;
                }
                for (int k = 0; k < 3; k++) {
                    phase[k] += tp[k + 1] - tp[k];
                }
                pos += global_batch;
                const long s = pos / global_batch; /* steps done in this epoch */
                sums[0] += loss * o.batch;
                sums[1] += ok;
                sums[2] += o.batch;
                double t = now_s();
                double ips = (double)(pos - pos0) / (t - t0);
                if (lost_at > 0) {
                    struct timespec wall;
                    clock_gettime(CLOCK_REALTIME, &wall);
                    printf("dtrain: elastic: rank %d of %d: first step of round %d done %.3f s "
                           "after the lost peer was seen (wall clock %lld.%03ld)\n", rank, size,
                           round, t - lost_at, (long long)wall.tv_sec, wall.tv_nsec / 1000000);
                    fflush(stdout);
                    lost_at = 0.0;
                }
                const int last = pos + global_batch > train.count;
                report_progress(&rep, t, epoch + 1, o.epochs, s, steps_per_epoch, ips,
                                sums[0] / sums[2], sums[1] / sums[2], lr, last);
                if (rep.steps_csv != NULL && s % 20 == 0) {
                    report_step_row(&rep, epoch + (double)s / steps_per_epoch, step + 1,
                                    sums[0] / sums[2], sums[1] / sums[2], lr, ips);
                }
                if (o.elastic && (s % o.commit_every == 0 || last)) {
                    commit_take(&cm, &m, epoch, pos, sums);
                    if (rank == 0) {
                        printf("dtrain: elastic: commit at epoch %d image %ld\n", epoch + 1, pos);
                        fflush(stdout);
                    }
                    if (hosts_changed()) {
                        goto reset;
                    }
                }
                if (bench && step + 1 >= o.bench_steps + 3) {
                    double dt = now_s() - bench_t0;
                    double cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - bench_cpu0;
                    long timed = step + 1 - (step >= 3 ? 3 : 0);
                    if (rank == 0) {
                        /* CPU time as well: on a shared machine it is what the
                         * work cost, whatever else ran */
                        printf("dtrain: bench: %ld steps x %ld images in %.3f s: %.1f images/s "
                               "(%d rank%s, %d thread%s each, batch %d per rank); rank 0: %.1f "
                               "images per CPU second\n",
                               timed, global_batch, dt, timed * global_batch / dt, size,
                               size > 1 ? "s" : "", o.threads, o.threads > 1 ? "s" : "", o.batch,
                               timed * o.batch / cpu);
                    }
                    /* every rank's: a rank that waits for the others shows it */
                    printf("dtrain: bench: rank %d per step: batch %.2f ms, forward %.2f, backward "
                           "%.2f, gradient wait %.2f, update %.2f\n", rank, 1e3 * phase[0] / timed,
                           1e3 * phase[1] / timed, 1e3 * phase[2] / timed, 1e3 * phase[3] / timed,
                           1e3 * phase[4] / timed);
                    bench_done = 1;
                    break;
                }
            }
            if (bench_done) {
                break;
            }
            double epoch_s = now_s() - epoch_t0;
            /* train statistics of all ranks, then the test set */
            double tr[3], te[3];
            comm_check(dcomm_allreduce(DCOMM_COMM_WORLD, "train.sums", sums, tr, 3, DCOMM_FLOAT64,
                                       DCOMM_SUM), "allreduce of the training loss");
            if (g_lost == DCOMM_OK) {
                evaluate(&m, &test, rank, size, xb, yb, eval_idx, te);
            }
            if (g_lost != DCOMM_OK) {
                goto reset;
            }
            final_acc = te[1] / te[2];
            if (rank == 0) {
                report_epoch(&rep, epoch + 1, o.epochs, tr[0] / tr[2], tr[1] / tr[2],
                             te[0] / te[2], final_acc, (double)pos / epoch_s, epoch_s, lr);
                if (o.checkpoint) {
                    char err[4400];
                    ckpt_header_t h = {.seed = o.seed, .ranks = size, .batch = o.batch,
                                       .epochs_done = epoch + 1, .epochs = o.epochs, .step = step,
                                       .limit = train.count, .nparams = m.nparams};
                    ops->download(host_params, m.params, m.nparams * sizeof(float));
                    ops->download(host_mom, m.momentum, m.nparams * sizeof(float));
                    if (ckpt_save(ckpt_path, &h, host_params, host_mom, err, sizeof(err)) != 0) {
                        die("checkpoint: %s", err);
                    }
                }
            }
            pos = 0;
            memset(sums, 0, sizeof(sums));
            if (o.elastic) {
                commit_take(&cm, &m, epoch + 1, 0, sums);
                if (hosts_changed()) {
                    goto reset;
                }
            }
        }
        break;

    reset:
        /* --elastic: a lost peer (g_lost), or hosts added or removed; back to
         * the last commit, and into dlaunch's next round */
        if (g_lost != DCOMM_OK) {
            lost_at = now_s();
            printf("dtrain: elastic: rank %d of %d: %s; back to the commit at epoch %d image "
                   "%ld\n", rank, size, g_lost_why, cm.epoch + 1, cm.pos);
        } else {
            printf("dtrain: elastic: rank %d of %d: hosts changed; re-forming at the commit at "
                   "epoch %d image %ld\n", rank, size, cm.epoch + 1, cm.pos);
        }
        fflush(stdout);
        g_lost = DCOMM_OK;
        comm_check(dcomm_shutdown(), "dcomm_shutdown");
        if ((st = dcomm_init()) != DCOMM_OK) {
            die("dcomm_init of the next round failed: %s: %s", dcomm_status_string(st),
                dcomm_last_error());
        }
        rank = dcomm_rank();
        size = dcomm_size();
        g_rank = rank;
        if (rank == 0 && !files) { /* rank 0 now: the files and the progress are this rank's */
            report_close(&rep);
            files = 1;
            if (mkdir(o.out_dir, 0755) != 0 && errno != EEXIST) {
                die("cannot create --out-dir %s: %s", o.out_dir, strerror(errno));
            }
            if (report_open(&rep, o.progress, o.log_every_s, o.out_dir, 1) != 0) {
                die("cannot write the metrics files");
            }
        }
    }
    if (bench && !bench_done) {
        die("--bench %d: the run has only %ld steps (--epochs x steps per epoch)", o.bench_steps,
            steps_per_epoch * o.epochs);
    }

    int rc = 0;
    if (rank == 0 && final_acc >= 0) {
        printf("dtrain: final test accuracy %.4f (%d rank%s, %d epochs, seed %llu)\n", final_acc,
               size, size > 1 ? "s" : "", o.epochs, (unsigned long long)o.seed);
        fflush(stdout);
    } else if (rank == 0 && !bench) {
        printf("dtrain: nothing to do: the checkpoint already has all %d epochs\n", o.epochs);
    }
    if (rank == 0 && o.plot != NULL && !bench) {
        if (report_plot(&rep, o.plot) != 0) {
            rc = 1;
        } else {
            printf("dtrain: wrote %s\n", o.plot);
        }
    }
    report_close(&rep);
    model_destroy(&m);
    free(host_params), free(host_mom), free(xb), free(yb), free(perm), free(eval_idx);
    free(cm.params), free(cm.momentum);
    if (host_grads != NULL && ops != &model_cpu_ops) {
        free(host_grads);
    }
    idx_free(&train.images_idx), idx_free(&train.labels_idx);
    idx_free(&test.images_idx), idx_free(&test.labels_idx);
    comm_check(dcomm_shutdown(), "dcomm_shutdown");
    return rc;
}
