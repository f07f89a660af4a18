/*
 * Collectives on CUDA device buffers (cudaMalloc), one rank of a dlaunch job:
 * allreduce (SUM/AVG/MAX, in and out of place, a fused batch mixed with host
 * tensors, under join, on a process set), broadcast, allgather with uneven
 * counts (and a rank with nothing to send), reducescatter (even and uneven),
 * alltoall with uneven counts, each checked against the values every rank can
 * compute; then the refusals:
 * a device sendbuf with a host recvbuf, and a tensor that is device memory on
 * one rank and host memory on another. Whether NCCL or staging serves them is
 * up to DCOMM_TRANSPORTS; gpu_colls_test.sh checks the log for which.
 *
 *   gpu_colls probe   exit 0 and print the GPU count, or 77 (no GPU: skip)
 *   gpu_colls         the checks (exit 0 when all pass)
 *
 * Built twice: against the CUDA runtime (cudaMalloc), and with DC_FAKE_DEVICE
 * against tests/gpu/fake_cuda_module.c, whose "device memory" faults on any
 * host access, so that CI without a GPU runs the same checks on the staging
 * path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcomm.h"

#define SKIP 77

static int failures;
static int rank, size;

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "FAIL rank %d line %d: ", rank, __LINE__);                        \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fprintf(stderr, "\n");                                                            \
            failures++;                                                                       \
        }                                                                                     \
    } while (0)

#define DC(call)                                                                              \
    do {                                                                                      \
        dcomm_status_t st_ = (call);                                                          \
        if (st_ != DCOMM_OK) {                                                                \
            fprintf(stderr, "FAIL rank %d line %d: %s: %s (%s)\n", rank, __LINE__, #call,     \
                    dcomm_status_string(st_), dcomm_last_error());                            \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static void die(const char *what, const char *why)
{
    fprintf(stderr, "FAIL rank %d: %s: %s\n", rank, what, why);
    exit(1);
}

#ifdef DC_FAKE_DEVICE
#include <dlfcn.h>

#include "module.h"

/* The fake module's services, found once dcomm_init has loaded it. */
static const dc_cuda_ops_t *fake;

static int gpu_count(const char **why_p)
{
    *why_p = NULL;
    return 1;
}

static void gpu_select(int local_rank)
{
    (void)local_rank;
}

static void gpu_attach(void)
{
    const dc_module_t *m = dlsym(RTLD_DEFAULT, "dcomm_module_v1_cuda");

    if (m == NULL || m->cuda == NULL) {
        die("fake cuda module", "not loaded (DCOMM_MODULE_PATH?)");
    }
    fake = m->cuda;
}

static void *dev_alloc(size_t bytes)
{
    void *p = NULL;

    if (fake->device_alloc(bytes, &p) < 0) {
        die("device_alloc", dcomm_last_error());
    }
    return p;
}

static void dev_free(void *p)
{
    if (p != NULL) {
        fake->device_free(p);
    }
}

static void copy(void *dst, const void *src, size_t bytes)
{
    if (fake->memcpy(dst, src, bytes) < 0) {
        die("memcpy", dcomm_last_error());
    }
}

static int is_device(const void *p)
{
    return fake->device_of(p) >= 0;
}
#else
#include <cuda_runtime_api.h>

static int gpu_count(const char **why_p)
{
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);

    *why_p = err != cudaSuccess ? cudaGetErrorString(err) : n == 0 ? "0 devices" : NULL;
    return err == cudaSuccess ? n : 0;
}

static void gpu_select(int local_rank)
{
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);

    if (err == cudaSuccess) {
        err = cudaSetDevice(local_rank % (n > 0 ? n : 1));
    }
    if (err != cudaSuccess) {
        die("cudaSetDevice", cudaGetErrorString(err));
    }
}

static void gpu_attach(void)
{
}

static void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes ? bytes : 1);

    if (err != cudaSuccess) {
        die("cudaMalloc", cudaGetErrorString(err));
    }
    return p;
}

static void dev_free(void *p)
{
    cudaFree(p);
}

static void copy(void *dst, const void *src, size_t bytes)
{
    cudaError_t err = bytes ? cudaMemcpy(dst, src, bytes, cudaMemcpyDefault) : cudaSuccess;

    if (err != cudaSuccess) {
        die("cudaMemcpy", cudaGetErrorString(err));
    }
}

static int is_device(const void *p)
{
    struct cudaPointerAttributes attr;

    if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
        cudaGetLastError(); /* older runtimes report plain host memory as an error */
        return 0;
    }
    return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}
#endif

/* The value rank r contributes at index i: small integers, exact in float. */
static float val(int r, size_t i)
{
    return (float)(r * 100 + (int)(i % 50));
}

static void *dev_from(const void *host, size_t bytes)
{
    void *d = dev_alloc(bytes);

    copy(d, host, bytes);
    return d;
}

static float *dev_floats(size_t n, int r)
{
    float *h = malloc((n ? n : 1) * sizeof(float));
    void *d;

    for (size_t i = 0; i < n; i++) {
        h[i] = val(r, i);
    }
    d = dev_from(h, n * sizeof(float));
    free(h);
    return d;
}

static void to_host(void *host, const void *dev, size_t bytes)
{
    copy(host, dev, bytes);
}

static float sum_at(size_t i)
{
    float s = 0;

    for (int r = 0; r < size; r++) {
        s += val(r, i);
    }
    return s;
}

static void check_allreduce(void)
{
    size_t n = 4099;
    float *send = dev_floats(n, rank), *recv = dev_floats(n, 0), *h = malloc(n * sizeof(float));
    int32_t hi[3] = {rank, -rank, 7}, got[3];
    void *di = dev_from(hi, sizeof(hi));

    DC(dcomm_allreduce(DCOMM_COMM_WORLD, "ar.sum", send, recv, n, DCOMM_FLOAT32, DCOMM_SUM));
    to_host(h, recv, n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        CHECK(h[i] == sum_at(i), "allreduce SUM [%zu] = %g, want %g", i, h[i], sum_at(i));
        if (h[i] != sum_at(i)) {
            break;
        }
    }
    DC(dcomm_allreduce(DCOMM_COMM_WORLD, "ar.avg", send, send, n, DCOMM_FLOAT32, DCOMM_AVG));
    to_host(h, send, n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        float want = sum_at(i) / (float)size;

        CHECK(h[i] > want - 1e-3f && h[i] < want + 1e-3f, "in-place AVG [%zu] = %g, want %g", i,
              h[i], want);
        if (!(h[i] > want - 1e-3f && h[i] < want + 1e-3f)) {
            break;
        }
    }
    DC(dcomm_allreduce(DCOMM_COMM_WORLD, "ar.max", di, di, 3, DCOMM_INT32, DCOMM_MAX));
    to_host(got, di, sizeof(got));
    CHECK(got[0] == size - 1 && got[1] == 0 && got[2] == 7, "allreduce MAX: %d %d %d", got[0],
          got[1], got[2]);
    dev_free(send);
    dev_free(recv);
    dev_free(di);
    free(h);
}

/* Small tensors submitted together fuse (device ones apart from host ones). */
static void check_fused(void)
{
    enum { N = 8, COUNT = 300 };
    float *dev[N], host[COUNT], h[COUNT];
    dcomm_handle_t hd[N], hh;
    char name[32];

    for (int k = 0; k < N; k++) {
        dev[k] = dev_floats(COUNT, rank + k);
        snprintf(name, sizeof(name), "fused.%d", k);
        DC(dcomm_allreduce_async(DCOMM_COMM_WORLD, name, dev[k], dev[k], COUNT, DCOMM_FLOAT32,
                                 k % 2 ? DCOMM_AVG : DCOMM_SUM, &hd[k]));
    }
    for (int i = 0; i < COUNT; i++) {
        host[i] = val(rank, (size_t)i);
    }
    DC(dcomm_allreduce_async(DCOMM_COMM_WORLD, "fused.host", host, host, COUNT, DCOMM_FLOAT32,
                             DCOMM_SUM, &hh));
    for (int k = 0; k < N; k++) {
        DC(dcomm_wait(hd[k]));
        DC(dcomm_release(hd[k]));
        to_host(h, dev[k], sizeof(h));
        for (int i = 0; i < COUNT; i++) {
            float want = 0;

            for (int r = 0; r < size; r++) {
                want += val(r + k, (size_t)i);
            }
            want = k % 2 ? want / (float)size : want;
            CHECK(h[i] > want - 1e-3f && h[i] < want + 1e-3f, "fused %d [%d] = %g, want %g", k,
                  i, h[i], want);
            if (!(h[i] > want - 1e-3f && h[i] < want + 1e-3f)) {
                break;
            }
        }
        dev_free(dev[k]);
    }
    DC(dcomm_wait(hh));
    DC(dcomm_release(hh));
    for (int i = 0; i < COUNT; i++) {
        CHECK(host[i] == sum_at((size_t)i), "fused host [%d] = %g", i, host[i]);
        if (host[i] != sum_at((size_t)i)) {
            break;
        }
    }
}

static void check_broadcast(void)
{
    size_t n = 1000;
    int root = 1 % size;
    float *d = dev_floats(n, rank), h[1000];

    DC(dcomm_broadcast(DCOMM_COMM_WORLD, "bcast", d, n, DCOMM_FLOAT32, root));
    to_host(h, d, sizeof(h));
    for (size_t i = 0; i < n; i++) {
        CHECK(h[i] == val(root, i), "broadcast [%zu] = %g, want %g", i, h[i], val(root, i));
        if (h[i] != val(root, i)) {
            break;
        }
    }
    dev_free(d);
}

/* Results of allgather, reducescatter and alltoall are host memory. */
static const float *result(dcomm_handle_t h, size_t *count_p, const size_t **counts_p)
{
    const void *data = NULL;

    DC(dcomm_wait(h));
    DC(dcomm_result(h, &data, count_p, counts_p));
    CHECK(!is_device(data), "dcomm_result gave device memory; it is documented as host memory");
    return data;
}

static void check_allgather(void)
{
    size_t mine = (size_t)rank * 3 + 1, count = 0, off = 0;
    float *d = dev_floats(mine, rank);
    const size_t *counts = NULL;
    const float *out;
    dcomm_handle_t h;

    DC(dcomm_allgather_async(DCOMM_COMM_WORLD, "ag", d, mine, DCOMM_FLOAT32, &h));
    out = result(h, &count, &counts);
    for (int r = 0; r < size; r++) {
        CHECK(counts[r] == (size_t)r * 3 + 1, "allgather counts[%d] = %zu", r, counts[r]);
        for (size_t i = 0; i < counts[r] && off + i < count; i++) {
            CHECK(out[off + i] == val(r, i), "allgather rank %d [%zu] = %g", r, i, out[off + i]);
        }
        off += counts[r];
    }
    CHECK(count == off, "allgather count %zu, want %zu", count, off);
    DC(dcomm_release(h));
    dev_free(d);

    /* Rank 0 sends nothing (NULL): it agrees with the others' device buffers. */
    mine = rank == 0 ? 0 : 5;
    d = mine ? dev_floats(mine, rank) : NULL;
    DC(dcomm_allgather_async(DCOMM_COMM_WORLD, "ag.empty", d, mine, DCOMM_FLOAT32, &h));
    out = result(h, &count, &counts);
    CHECK(count == (size_t)(size - 1) * 5, "allgather with an empty rank: %zu elements", count);
    for (size_t i = 0; i < count; i++) {
        CHECK(out[i] == val(1 + (int)(i / 5), i % 5), "allgather.empty [%zu] = %g", i, out[i]);
    }
    DC(dcomm_release(h));
    dev_free(d);
}

static void check_reducescatter(size_t n, const char *name)
{
    float *d = dev_floats(n, rank);
    size_t count = 0, base = n / (size_t)size, extra = n % (size_t)size, off;
    const size_t *counts = NULL;
    const float *out;
    dcomm_handle_t h;

    off = (size_t)rank * base + ((size_t)rank < extra ? (size_t)rank : extra);
    DC(dcomm_reducescatter_async(DCOMM_COMM_WORLD, name, d, n, DCOMM_FLOAT32, DCOMM_SUM, &h));
    out = result(h, &count, &counts);
    CHECK(count == base + ((size_t)rank < extra), "%s: %zu elements", name, count);
    for (size_t i = 0; i < count; i++) {
        CHECK(out[i] == sum_at(off + i), "%s [%zu] = %g, want %g", name, i, out[i],
              sum_at(off + i));
    }
    DC(dcomm_release(h));
    dev_free(d);
}

/* Rank r sends r + p + 1 elements to rank p, values val(r, p * 10 + i). */
static void check_alltoall(void)
{
    size_t *sendcounts = malloc((size_t)size * sizeof(size_t)), total = 0, count = 0, off = 0;
    float *h, *d;
    const size_t *counts = NULL;
    const float *out;
    dcomm_handle_t hd;

    for (int p = 0; p < size; p++) {
        sendcounts[p] = (size_t)(rank + p + 1);
        total += sendcounts[p];
    }
    h = malloc(total * sizeof(float));
    for (int p = 0; p < size; p++) {
        for (size_t i = 0; i < sendcounts[p]; i++) {
            h[off++] = val(rank, (size_t)p * 10 + i);
        }
    }
    d = dev_from(h, total * sizeof(float));
    DC(dcomm_alltoall_async(DCOMM_COMM_WORLD, "a2a", d, sendcounts, DCOMM_FLOAT32, &hd));
    out = result(hd, &count, &counts);
    off = 0;
    for (int r = 0; r < size; r++) {
        CHECK(counts[r] == (size_t)(r + rank + 1), "alltoall counts[%d] = %zu", r, counts[r]);
        for (size_t i = 0; i < counts[r] && off + i < count; i++) {
            CHECK(out[off + i] == val(r, (size_t)rank * 10 + i), "alltoall from %d [%zu] = %g",
                  r, i, out[off + i]);
        }
        off += counts[r];
    }
    DC(dcomm_release(hd));
    dev_free(d);
    free(h);
    free(sendcounts);
}

/* Uneven steps with join: the last rank joins after one step, the others run
 * three; a joined rank contributes zeros to the device allreduces it did not
 * submit (two per step, so they fuse). */
static int join_steps(int r)
{
    return r == size - 1 ? 1 : 3;
}

static void check_join(void)
{
    enum { N = 500 };
    float *a = dev_alloc(N * sizeof(float)), *b = dev_alloc(N * sizeof(float)), fill[N], h[N];
    dcomm_handle_t ha, hb, hj;
    const void *data;
    size_t count;

    for (int s = 0; s < join_steps(rank); s++) {
        float want = 0;

        for (int r = 0; r < size; r++) {
            want += s < join_steps(r) ? (float)(r + 1) : 0;
        }
        for (int i = 0; i < N; i++) {
            fill[i] = (float)(rank + 1);
        }
        copy(a, fill, sizeof(fill));
        copy(b, fill, sizeof(fill));
        DC(dcomm_allreduce_async(DCOMM_COMM_WORLD, "join.a", a, a, N, DCOMM_FLOAT32, DCOMM_SUM,
                                 &ha));
        DC(dcomm_allreduce_async(DCOMM_COMM_WORLD, "join.b", b, b, N, DCOMM_FLOAT32, DCOMM_SUM,
                                 &hb));
        DC(dcomm_wait(ha));
        DC(dcomm_wait(hb));
        DC(dcomm_release(ha));
        DC(dcomm_release(hb));
        to_host(h, a, sizeof(h));
        CHECK(h[0] == want && h[N - 1] == want, "join step %d: a = %g, want %g", s, h[0], want);
        to_host(h, b, sizeof(h));
        CHECK(h[0] == want && h[N - 1] == want, "join step %d: b = %g, want %g", s, h[0], want);
    }
    DC(dcomm_join_async(DCOMM_COMM_WORLD, &hj));
    DC(dcomm_wait(hj));
    DC(dcomm_result(hj, &data, &count, NULL));
    CHECK(count == 1 && join_steps(*(const int32_t *)data) == join_steps(0),
          "join: the last rank to join is %d, which ran fewer steps",
          *(const int32_t *)data);
    DC(dcomm_release(hj));
    dev_free(a);
    dev_free(b);
}

/* A process set (last rank and rank 0, in that order): device tensors get
 * their own mode per comm, and destroying the comm drops it. */
static void check_comm(void)
{
    int ranks[2] = {size - 1, 0}, n = size > 1 ? 2 : 1;
    dcomm_comm_t comm;
    float *d, h[64];

    DC(dcomm_comm_create(ranks, n, &comm));
    if (dcomm_comm_rank(comm) >= 0) {
        d = dev_floats(64, rank);
        DC(dcomm_allreduce(comm, "set.sum", d, d, 64, DCOMM_FLOAT32, DCOMM_SUM));
        to_host(h, d, sizeof(h));
        for (int i = 0; i < 64; i++) {
            float want = val(size - 1, (size_t)i) + (n > 1 ? val(0, (size_t)i) : 0);

            CHECK(h[i] == want, "process set [%d] = %g, want %g", i, h[i], want);
        }
        dev_free(d);
    }
    DC(dcomm_comm_destroy(comm));
}

static void check_refusals(void)
{
    float *d = dev_floats(16, rank), host[16] = {0};
    dcomm_status_t st;

    st = dcomm_allreduce(DCOMM_COMM_WORLD, "mixed", d, host, 16, DCOMM_FLOAT32, DCOMM_SUM);
    CHECK(st == DCOMM_ERR_INVALID_ARG && strstr(dcomm_last_error(), "recvbuf") != NULL,
          "device sendbuf + host recvbuf: %s (%s)", dcomm_status_string(st),
          dcomm_last_error());
    if (size > 1) {
        st = dcomm_allreduce(DCOMM_COMM_WORLD, "kinds", rank == 0 ? (void *)host : (void *)d,
                             rank == 0 ? (void *)host : (void *)d, 16, DCOMM_FLOAT32, DCOMM_SUM);
        CHECK(st == DCOMM_ERR_MISMATCH && strstr(dcomm_last_error(), "device") != NULL,
              "device on some ranks, host on others: %s (%s)", dcomm_status_string(st),
              dcomm_last_error());
    }
    dev_free(d);
}

int main(int argc, char **argv)
{
    const char *why = NULL, *lr = getenv("DCOMM_LOCAL_RANK");
    int ngpus = gpu_count(&why);

    if (ngpus == 0) {
        printf("SKIP: no GPU here (%s)\n", why);
        return SKIP;
    }
    if (argc > 1 && strcmp(argv[1], "probe") == 0) {
        printf("%d\n", ngpus);
        return 0;
    }
    gpu_select(lr ? atoi(lr) : 0);
    DC(dcomm_init());
    gpu_attach();
    rank = dcomm_rank();
    size = dcomm_size();
    check_allreduce();
    check_fused();
    check_broadcast();
    check_allgather();
    check_reducescatter((size_t)size * 4 * 251, "rs.even");
    check_reducescatter((size_t)size * 3 + 1, "rs.uneven");
    check_alltoall();
    check_join();
    check_comm();
    check_refusals();
    DC(dcomm_barrier(DCOMM_COMM_WORLD));
    DC(dcomm_shutdown());
    printf("rank %d: %s (%d failures)\n", rank, failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
