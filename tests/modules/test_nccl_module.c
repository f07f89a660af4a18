/*
 * The nccl module on a GPU with one rank: communicator from a unique id passed
 * through a (file) store, allreduce SUM/AVG/MAX, broadcast, allgather,
 * reducescatter and alltoall on device buffers, each polled to completion with
 * test() (which never blocks) under a deadline; then an allreduce time for the
 * note. With one rank every result equals the input. Exits 77 without a GPU.
 */
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "gpu_util.h"
#include "store.h"

static int failures;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Polls until done; fails after 30 s. Counts the polls that said "not yet". */
static int wait_ticket(const dc_nccl_ops_t *nc, dc_nccl_comm_t *c, uint64_t t, const char *what)
{
    double deadline = now_s() + 30;
    dc_status_t s;

    while ((s = nc->test(c, t)) == DCOMM_INPROGRESS && now_s() < deadline) {
    }
    if (s != DCOMM_OK) {
        fprintf(stderr, "FAIL: %s: %s\n", what, s == DCOMM_INPROGRESS ? "not done in 30 s"
                                                                      : dc_error_get());
        failures++;
        return -1;
    }
    return 0;
}

static void expect_equal(const dc_cuda_ops_t *cu, const void *dev, const float *want, size_t n,
                         const char *what)
{
    float *got = malloc(n * sizeof(float));

    if (cu->memcpy(got, dev, n * sizeof(float)) < 0 || memcmp(got, want, n * sizeof(float)) != 0) {
        fprintf(stderr, "FAIL: %s: result differs from the input\n", what);
        failures++;
    }
    free(got);
}

int main(void)
{
    const dc_nccl_ops_t *nc = gpu_module_or_skip("nccl")->nccl;
    const dc_cuda_ops_t *cu = gpu_module_or_skip("cuda")->cuda;
    size_t n = 1u << 20;
    float *host = malloc(n * sizeof(float));
    void *src = NULL, *dst = NULL;
    char dir[] = "/tmp/dcomm-nccl-XXXXXX";
    dc_store_t *store = NULL;
    dc_nccl_comm_t *c = NULL;
    uint64_t t;
    double t0;

    for (size_t i = 0; i < n; i++) {
        host[i] = (float)(i % 1000);
    }
    if (mkdtemp(dir) == NULL || dc_filestore_open(dir, &store) < 0 ||
        nc->comm_open(store, "nccl/world", 0, 1, 0, 30000, &c) < 0) {
        fprintf(stderr, "FAIL: communicator: %s\n", dc_error_get());
        return 1;
    }
    if (cu->device_alloc(n * 4, &src) < 0 || cu->device_alloc(n * 4, &dst) < 0 ||
        cu->memcpy(src, host, n * 4) < 0) {
        fprintf(stderr, "FAIL: device buffers: %s\n", dc_error_get());
        return 1;
    }
    static const int ops[] = {DCOMM_SUM, DCOMM_AVG, DCOMM_MAX};
    for (size_t k = 0; k < DC_ARRAY_SIZE(ops); k++) {
        if (nc->allreduce(c, src, dst, n, DCOMM_FLOAT32, ops[k], &t) == DCOMM_OK &&
            wait_ticket(nc, c, t, "allreduce") == 0) {
            expect_equal(cu, dst, host, n, "allreduce");
        }
    }
    if (nc->broadcast(c, src, n, DCOMM_FLOAT32, 0, &t) == DCOMM_OK &&
        wait_ticket(nc, c, t, "broadcast") == 0) {
        expect_equal(cu, src, host, n, "broadcast");
    }
    if (nc->allgather(c, src, dst, n, DCOMM_FLOAT32, &t) == DCOMM_OK &&
        wait_ticket(nc, c, t, "allgather") == 0) {
        expect_equal(cu, dst, host, n, "allgather");
    }
    if (nc->reducescatter(c, src, dst, n, DCOMM_FLOAT32, DCOMM_SUM, &t) == DCOMM_OK &&
        wait_ticket(nc, c, t, "reducescatter") == 0) {
        expect_equal(cu, dst, host, n, "reducescatter");
    }
    if (nc->alltoall(c, src, dst, n, DCOMM_FLOAT32, &t) == DCOMM_OK &&
        wait_ticket(nc, c, t, "alltoall") == 0) {
        expect_equal(cu, dst, host, n, "alltoall");
    }
    /* 300 queued allreduces: more than the event ring, waited for by the last. */
    t0 = now_s();
    for (int i = 0; i < 300; i++) {
        if (nc->allreduce(c, src, dst, n, DCOMM_FLOAT32, DCOMM_SUM, &t) < 0) {
            fprintf(stderr, "FAIL: allreduce %d: %s\n", i, dc_error_get());
            failures++;
            break;
        }
    }
    wait_ticket(nc, c, t, "300 allreduces");
    printf("nccl allreduce of 4 MiB float32 on 1 rank: %.1f us each (300 queued)\n",
           (now_s() - t0) / 300 * 1e6);
    if (nc->test(c, t + 1) >= 0) {
        fprintf(stderr, "FAIL: test() of a ticket never issued did not fail\n");
        failures++;
    }
    nc->comm_close(c);
    cu->device_free(src);
    cu->device_free(dst);
    store->ops->close(store);
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "warning: could not remove %s\n", dir);
    }
    free(host);
    printf("%s: nccl module, %d failures\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
