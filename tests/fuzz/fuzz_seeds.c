/* Writes the seed corpora's "real-*" inputs with the project's own encoders and
 * from real traffic: rendezvous frames (dc_rdv_msg_encode) and client scripts
 * for the server, negotiation lists (dc_wire_*_encode), a tcp handshake answer
 * and message stream captured from a real transport (a forked rank 0 connects
 * to this process, which plays rank 1), a shm segment copied from a real
 * transport (a forked rank 1's memfd), a checkpoint (ckpt_save) and IDX files
 * cut from the Fashion-MNIST test set.
 *   fuzz_seeds OUTDIR      writes OUTDIR/<target>/real-<name> */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "checkpoint.h"
#include "fuzz_common.h"
#include "rdv.h"
#include "shm/shm.h"
#include "store.h"
#include "tcp/tcp.h"
#include "transport.h"
#include "wire.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

static const char *outdir;

typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes_t;

static void put(bytes_t *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            abort();
        }
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put8(bytes_t *b, uint8_t v)
{
    put(b, &v, 1);
}

static void put16(bytes_t *b, uint16_t v)
{
    put8(b, (uint8_t)(v >> 8));
    put8(b, (uint8_t)v);
}

/* Writes corpus/<target>/<prefix><name>. */
static void write_file(const char *target, const char *prefix, const char *name,
                       const bytes_t *b)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", outdir, target);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/%s/%s%s", outdir, target, prefix, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(b->p, 1, b->len, f) != b->len || fclose(f) != 0) {
        fprintf(stderr, "fuzz_seeds: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static void write_seed(const char *target, const char *name, const bytes_t *b)
{
    write_file(target, "real-", name, b);
}

/* A regression seed: the input of a defect found and fixed (findings/README.txt
 * of the fuzz branch), in today's formats. */
static void write_regress(const char *target, const char *name, const bytes_t *b)
{
    write_file(target, "regress-", name, b);
}

/* ---- rendezvous ------------------------------------------------------------------ */

static void put_frame(bytes_t *b, const dc_rdv_msg_t *m)
{
    uint8_t buf[4096];
    size_t n = dc_rdv_msg_encode(m, buf, sizeof(buf));

    if (n == 0) {
        abort();
    }
    put(b, buf, n);
}

static void seeds_rdv(void)
{
    static const char *const names[] = {"hello", "auth", "auth_ok", "set", "get", "add",
                                        "reply", "event"};
    dc_rdv_msg_t m[8] = {
        {.type = DC_RDV_MSG_HELLO, .version = DC_RDV_VERSION},
        {.type = DC_RDV_MSG_AUTH, .rank = 3, .role = DC_RDV_ROLE_STORE},
        {.type = DC_RDV_MSG_AUTH_OK},
        {.type = DC_RDV_MSG_SET, .id = 1, .key = "tcp/0", .key_len = 5,
         .val = "127.0.0.1:40123", .val_len = 15},
        {.type = DC_RDV_MSG_GET, .id = 2, .wait = 1, .key = "shm/1", .key_len = 5},
        {.type = DC_RDV_MSG_ADD, .id = 3, .num = 1, .key = "barrier/init", .key_len = 12},
        {.type = DC_RDV_MSG_REPLY, .id = 2, .status = 0, .val = "127.0.0.1:40124", .val_len = 15},
        {.type = DC_RDV_MSG_EVENT, .val = "rank 2 killed by signal 9 (Killed)", .val_len = 34},
    };
    bytes_t all = {0};

    fuzz_rng_buf(m[0].nonce, sizeof(m[0].nonce));
    fuzz_rng_buf(m[1].nonce, sizeof(m[1].nonce));
    dc_rdv_client_mac(fuzz_rdv_secret, m[0].nonce, m[1].nonce, 3, 0, m[1].mac);
    dc_rdv_server_mac(fuzz_rdv_secret, m[1].nonce, m[0].nonce, m[2].mac);
    put8(&all, 0);
    for (int i = 0; i < 8; i++) {
        bytes_t b = {0};

        put8(&b, i < 3 ? 1 : 0); /* the handshake's frame limit, or the store's */
        put_frame(&b, &m[i]);
        write_seed("rdv_codec", names[i], &b);
        put_frame(&all, &m[i]);
        free(b.p);
    }
    write_seed("rdv_codec", "stream", &all);
    free(all.p);
}

/* A request in fuzz_rdv_server's script form (op 3). */
static void script_req(bytes_t *b, int k, int type, int id, int wait, const char *key,
                       const void *val, size_t vlen)
{
    put8(b, 3);
    put8(b, (uint8_t)k);
    put8(b, (uint8_t)(type - DC_RDV_MSG_SET));
    put8(b, (uint8_t)id);
    put8(b, (uint8_t)wait);
    put8(b, (uint8_t)strlen(key));
    put(b, key, strlen(key));
    put16(b, (uint16_t)vlen);
    put(b, val, vlen);
}

static void script_op(bytes_t *b, int op, int k)
{
    put8(b, (uint8_t)op);
    put8(b, (uint8_t)k);
}

static void seeds_rdv_server(void)
{
    bytes_t b = {0};
    int64_t one = 1;
    dc_rdv_msg_t set = {.type = DC_RDV_MSG_SET, .id = 9, .key = "tcp/2", .key_len = 5,
                        .val = "10.0.0.2:5000", .val_len = 13};

    /* Two ranks publish addresses, one waits for the other's, both count in. */
    script_op(&b, 0, 0);
    script_op(&b, 1, 0), put8(&b, 0);
    script_req(&b, 0, DC_RDV_MSG_SET, 1, 0, "tcp/0", "127.0.0.1:40000", 15);
    script_req(&b, 0, DC_RDV_MSG_GET, 2, 1, "tcp/1", "", 0);
    script_op(&b, 0, 1);
    script_op(&b, 1, 1), put8(&b, 1);
    script_req(&b, 1, DC_RDV_MSG_SET, 1, 0, "tcp/1", "127.0.0.1:40001", 15);
    script_req(&b, 0, DC_RDV_MSG_ADD, 3, 0, "barrier/init", &one, sizeof(one));
    script_req(&b, 1, DC_RDV_MSG_ADD, 2, 0, "barrier/init", &one, sizeof(one));
    script_req(&b, 1, DC_RDV_MSG_GET, 3, 0, "barrier/init", "", 0);
    script_op(&b, 6, 0);
    script_op(&b, 6, 1);
    write_seed("rdv_server", "two_ranks", &b);
    b.len = 0;

    /* An event subscriber hears a broadcast; a store client sends a raw frame. */
    script_op(&b, 0, 2);
    script_op(&b, 1, 2), put8(&b, 0x80 | 2);
    script_op(&b, 0, 0);
    script_op(&b, 1, 0), put8(&b, 0);
    {
        bytes_t f = {0};

        put_frame(&f, &set);
        script_op(&b, 2, 0);
        put16(&b, (uint16_t)f.len);
        put(&b, f.p, f.len);
        free(f.p);
    }
    script_op(&b, 7, 0);
    put8(&b, 34);
    put(&b, "rank 2 killed by signal 9 (Killed)", 34);
    script_op(&b, 6, 2);
    script_op(&b, 6, 0);
    script_op(&b, 4, 2);
    write_seed("rdv_server", "events", &b);
    free(b.p);
}

/* ---- negotiation lists ------------------------------------------------------------- */

static void seeds_wire(void)
{
    dc_wire_req_t r[5] = {
        {.name = "grad/conv1.weight", .coll = DC_COLL_ALLREDUCE, .dtype = DCOMM_FLOAT32,
         .op = DCOMM_SUM, .count = 800, .has_shape = 1, .ndims = 4, .dims = {8, 1, 10, 10}},
        {.name = "gather/ids", .coll = DC_COLL_ALLGATHER, .dtype = DCOMM_INT64, .count = 5,
         .has_shape = 1, .ndims = 10, .dims = {5, 1, 1, 1, 1, 1, 1, 1}},
        {.name = "params/fc.bias", .coll = DC_COLL_BROADCAST, .dtype = DCOMM_FLOAT32,
         .root = 0, .count = 10},
        {.name = "barrier", .coll = DC_COLL_BARRIER},
        {.name = "join", .coll = DC_COLL_JOIN, .device = DC_WIRE_NOBUF, .root = 1},
    };
    const dc_wire_req_t *list[5] = {&r[0], &r[1], &r[2], &r[3], &r[4]};
    uint64_t counts[2] = {5, 7};
    dc_wire_resp_t resp = {0};
    dc_wire_buf_t buf = {0};
    bytes_t b = {0};

    if (dc_wire_reqs_encode(&buf, DC_WIRE_FLAG_PENDING, list, 5) != DCOMM_OK) {
        abort();
    }
    put8(&b, 0);
    put8(&b, 1); /* a comm of 2 ranks */
    put(&b, buf.data, buf.len);
    write_seed("wire", "requests", &b);

    /* A rank blocked in a wait: the list, then its wait section. */
    const uint8_t waited[3] = {1, 0, 1};
    dc_wire_buf_reset(&buf);
    b.len = 0;
    if (dc_wire_reqs_encode(&buf, DC_WIRE_FLAG_PENDING | DC_WIRE_FLAG_WAITING, list, 2) !=
            DCOMM_OK ||
        dc_wire_waits_encode(&buf, 1500, list + 1, waited, 3) != DCOMM_OK) {
        abort();
    }
    put8(&b, 0);
    put8(&b, 2); /* a comm of 3 ranks */
    put(&b, buf.data, buf.len);
    write_seed("wire", "requests_waiting", &b);

    dc_wire_buf_reset(&buf);
    b.len = 0;
    dc_wire_resps_begin_encode(&buf, DC_WIRE_FLAG_RANK(1));
    resp.req = r[0];
    dc_wire_resp_append(&buf, &resp);
    resp.req = r[1];
    resp.ncounts = 2;
    resp.counts = counts;
    dc_wire_resp_append(&buf, &resp);
    resp.req = r[2];
    resp.ncounts = 0;
    resp.error = DCOMM_ERR_MISMATCH;
    snprintf(resp.text, sizeof(resp.text),
             "broadcast 'params/fc.bias': rank 1 sent 12 elements, rank 0 sent 10");
    dc_wire_resp_append(&buf, &resp);
    put8(&b, 1);
    put8(&b, 1);
    put(&b, buf.data, buf.len);
    write_seed("wire", "responses", &b);

    /* Allgather counts whose sum (or sum times the element size) wraps: once
     * sized a result smaller than the blocks written into it. */
    static const uint64_t wrap[2][2] = {{UINT64_MAX, 2}, {1ull << 61, 1ull << 61}};
    static const char *const wrap_name[2] = {"result-size-overflow", "result-bytes-overflow"};
    for (int i = 0; i < 2; i++) {
        uint64_t c[2] = {wrap[i][0], wrap[i][1]};

        dc_wire_buf_reset(&buf);
        b.len = 0;
        dc_wire_resps_begin_encode(&buf, 0);
        resp = (dc_wire_resp_t){.req = r[1], .ncounts = 2, .counts = c};
        dc_wire_resp_append(&buf, &resp);
        put8(&b, 1);
        put8(&b, 1);
        put(&b, buf.data, buf.len);
        write_regress("wire", wrap_name[i], &b);
    }
    dc_wire_buf_free(&buf);
    free(b.p);
}

static void remove_dir(const char *dir)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "fuzz_seeds: cannot remove %s\n", dir);
    }
}

/* ---- tcp: a real rank 0 connects to us -------------------------------------------- */

static int read_all(int fd, bytes_t *b, size_t want)
{
    uint8_t buf[4096];

    while (want == 0 || b->len < want) {
        size_t n = want ? DC_MIN(sizeof(buf), want - b->len) : sizeof(buf);
        ssize_t got = recv(fd, buf, n, 0);

        if (got <= 0) {
            return got == 0 && want == 0 ? 0 : -1;
        }
        put(b, buf, (size_t)got);
    }
    return 0;
}

static void tcp_rank0(const char *dir)
{
    dc_store_t *store;
    int host_of[2] = {0, 0}, local_rank_of[2] = {0, 1}, peers[1] = {1};
    dc_topo_t topo = {.rank = 0, .size = 2, .nhosts = 1, .host_of = host_of,
                      .local_rank_of = local_rank_of, .local_size = 2, .ncores = 2};
    dc_bootstrap_t boot = {.topo = &topo, .secret = fuzz_tcp_secret, .local_addr = "127.0.0.1",
                           .timeout_ms = 10000, .peers = peers, .npeers = 1};
    const dc_transport_ops_t *ops = &dc_transport_tcp_ops;
    static float grad[16];
    static uint8_t text[300];
    dc_request_t req[3];
    dc_transport_t *tp;
    dc_endpoint_t *ep;

    for (int i = 0; i < 16; i++) {
        grad[i] = 0.25f * (float)i - 1.0f;
    }
    memset(text, 'x', sizeof(text));
    if (dc_filestore_open(dir, &store) != DCOMM_OK) {
        _exit(2);
    }
    boot.store = store;
    if (ops->open(&boot, &tp) != DCOMM_OK || ops->connect(tp, 1, &ep) != DCOMM_OK ||
        ops->isend(ep, grad, sizeof(grad), 7, &req[0]) != DCOMM_OK ||
        ops->isend(ep, NULL, 0, 8, &req[1]) != DCOMM_OK ||
        ops->isend(ep, text, sizeof(text), 9, &req[2]) != DCOMM_OK) {
        fprintf(stderr, "fuzz_seeds: tcp rank 0: %s\n", dc_error_get());
        _exit(3);
    }
    while (req[0].status == DCOMM_INPROGRESS || req[1].status == DCOMM_INPROGRESS ||
           req[2].status == DCOMM_INPROGRESS) {
        ops->progress(tp);
    }
    ops->close(tp);
    _exit(0);
}

static void seeds_tcp(void)
{
    char dir[] = "/tmp/dcomm-fuzz-seeds-XXXXXX";
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof(sa);
    uint8_t hello[DC_TCP_HELLO_LEN], proof[DC_TCP_PROOF_LEN];
    bytes_t answer = {0}, stream = {0}, b = {0};
    dc_store_t *store;
    char addr[64];
    int lfd, fd, status;
    pid_t pid;

    if (mkdtemp(dir) == NULL || dc_filestore_open(dir, &store) != DCOMM_OK) {
        abort();
    }
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 4) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &salen) != 0) {
        abort();
    }
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    dc_store_set(store, "tcp/1", addr, strlen(addr));
    pid = fork();
    if (pid == 0) {
        tcp_rank0(dir);
    }
    fd = accept(lfd, NULL, NULL);
    /* Our hello carries the nonce the harness's transport will send first. */
    fuzz_rng_reset();
    dc_tcp_put_u32(hello, DC_TCP_MAGIC);
    dc_tcp_put_u32(hello + 4, DC_TCP_VERSION);
    dc_tcp_put_u32(hello + 8, 1);
    dc_tcp_put_u32(hello + 12, 0);
    fuzz_rng_buf(hello + 16, DC_AUTH_NONCE_LEN);
    if (fd < 0 || send(fd, hello, sizeof(hello), 0) != (ssize_t)sizeof(hello) ||
        read_all(fd, &answer, DC_TCP_ANSWER_LEN) != 0) {
        abort();
    }
    dc_auth_mac(fuzz_tcp_secret, DC_TCP_LABEL_SERVER, answer.p + 16, DC_AUTH_NONCE_LEN, hello,
                sizeof(hello), proof);
    if (send(fd, proof, sizeof(proof), 0) != (ssize_t)sizeof(proof) ||
        read_all(fd, &stream, 0) != 0) {
        abort();
    }
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fuzz_seeds: the tcp rank failed\n");
        exit(1);
    }
    close(fd);
    close(lfd);
    store->ops->close(store);

    /* Raw mode: the captured answer itself, receives posted as rank 1 would. */
    put8(&b, 0);
    put(&b, answer.p, answer.len);
    put8(&b, 3);
    put8(&b, 7), put16(&b, 64);
    put8(&b, 8), put16(&b, 0);
    put8(&b, 9), put16(&b, 300);
    put(&b, stream.p, stream.len);
    write_seed("tcp", "capture_raw", &b);
    /* Harness-built answer; a receive too short for the last message. */
    b.len = 0;
    put8(&b, 1);
    put8(&b, 0);
    put8(&b, 3);
    put8(&b, 7), put16(&b, 64);
    put8(&b, 8), put16(&b, 0);
    put8(&b, 9), put16(&b, 100);
    put(&b, stream.p, stream.len);
    write_seed("tcp", "capture_short_recv", &b);
    /* The other direction: the transport connects (mode 2); the peer's hello
     * and proof as raw bytes, the proof made for the client nonce the
     * transport will draw first. */
    {
        uint8_t client_nonce[DC_AUTH_NONCE_LEN];

        dc_tcp_put_u32(hello + 8, 1);
        memset(hello + 16, 0xa5, DC_AUTH_NONCE_LEN);
        fuzz_rng_reset();
        fuzz_rng_buf(client_nonce, sizeof(client_nonce));
        dc_auth_mac(fuzz_tcp_secret, DC_TCP_LABEL_SERVER, client_nonce, DC_AUTH_NONCE_LEN, hello,
                    sizeof(hello), proof);
        b.len = 0;
        put8(&b, 2);
        put(&b, hello, sizeof(hello));
        put(&b, proof, sizeof(proof));
        put8(&b, 3);
        put8(&b, 7), put16(&b, 64);
        put8(&b, 8), put16(&b, 0);
        put8(&b, 9), put16(&b, 300);
        put(&b, stream.p, stream.len);
        write_seed("tcp", "client_raw", &b);
        b.len = 0;
        put8(&b, 3);
        put8(&b, 0);
        put8(&b, 2);
        put8(&b, 7), put16(&b, 64);
        put8(&b, 8), put16(&b, 0);
        put(&b, stream.p, stream.len);
        write_seed("tcp", "client_valid", &b);
    }
    free(b.p);
    free(answer.p);
    free(stream.p);
    remove_dir(dir);
}

/* ---- shm: the segment of a real rank 1 --------------------------------------------- */

static void shm_rank1(const char *dir)
{
    dc_store_t *store;
    int host_of[2] = {0, 0}, local_rank_of[2] = {0, 1}, peers[1] = {0};
    dc_topo_t topo = {.rank = 1, .size = 2, .nhosts = 1, .host_of = host_of,
                      .local_rank_of = local_rank_of, .local_size = 2, .ncores = 2};
    dc_bootstrap_t boot = {.topo = &topo, .secret = fuzz_tcp_secret, .timeout_ms = 20000,
                           .peers = peers, .npeers = 1, .shm_ring_size = 4096};
    dc_transport_t *tp;

    if (dc_filestore_open(dir, &store) != DCOMM_OK) {
        _exit(2);
    }
    boot.store = store;
    /* Waits for rank 0's record, which never comes: the parent copies our
     * segment meanwhile and ends us. */
    (void)dc_transport_shm_ops.open(&boot, &tp);
    _exit(0);
}

static void seeds_shm(void)
{
    char dir[] = "/tmp/dcomm-fuzz-seeds-XXXXXX", path[64];
    dc_shm_addr_t addr;
    dc_store_t *store;
    bytes_t b = {0};
    size_t len = 0;
    int fd, status;
    pid_t pid;

    if (mkdtemp(dir) == NULL || dc_filestore_open(dir, &store) != DCOMM_OK) {
        abort();
    }
    pid = fork();
    if (pid == 0) {
        shm_rank1(dir);
    }
    if (dc_store_get(store, "shm/1", &addr, sizeof(addr), &len, 20000) != DCOMM_OK ||
        len != sizeof(addr)) {
        fprintf(stderr, "fuzz_seeds: no shm record from rank 1: %s\n", dc_error_get());
        exit(1);
    }
    snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)addr.pid, (int)addr.fd);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "fuzz_seeds: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    for (int i = 0; i < 4; i++) {
        put8(&b, (uint8_t)((uint32_t)addr.pid >> (8 * i)));
    }
    put8(&b, 1); /* the segment is rank 1's */
    put8(&b, 0); /* we are rank 0 */
    {
        uint8_t buf[4096];
        ssize_t n;

        while ((n = read(fd, buf, sizeof(buf))) > 0) {
            put(&b, buf, (size_t)n);
        }
    }
    close(fd);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    store->ops->close(store);
    if (b.len - 6 != addr.size) {
        fprintf(stderr, "fuzz_seeds: copied %zu of %llu segment bytes\n", b.len - 6,
                (unsigned long long)addr.size);
        exit(1);
    }
    write_seed("shm_seg", "segment", &b);
    /* The ring rank 1 keeps for us with its data partly outside the segment
     * (data offset near the end; ring size past the end): once accepted. */
    {
        const uint8_t *seg = b.p + 6; /* read with memcpy: unaligned */
        uint32_t nrings;
        uint64_t off, ring_size, size = addr.size;

        memcpy(&nrings, seg + offsetof(dc_shm_seg_t, nrings), sizeof(nrings));
        memcpy(&ring_size, seg + offsetof(dc_shm_seg_t, ring_size),
               sizeof(ring_size));
        for (uint32_t i = 0; i < nrings; i++) {
            size_t at = offsetof(dc_shm_seg_t, rings) + i * sizeof(dc_shm_ring_t);
            int32_t sender;

            memcpy(&sender, seg + at + offsetof(dc_shm_ring_t, sender),
                   sizeof(sender));
            if (sender != 0) {
                continue;
            }
            bytes_t c = {0};

            put(&c, b.p, b.len);
            off = size - ring_size / 2;
            memcpy(c.p + 6 + at + offsetof(dc_shm_ring_t, data_offset), &off, sizeof(off));
            write_regress("shm_seg", "ring-data-outside-segment", &c);
            memcpy(c.p, b.p, b.len);
            ring_size = 1u << 20;
            memcpy(c.p + 6 + offsetof(dc_shm_seg_t, ring_size), &ring_size, sizeof(ring_size));
            write_regress("shm_seg", "ring-size-beyond-segment", &c);
            free(c.p);
            break;
        }
    }
    free(b.p);
    remove_dir(dir);
}

/* ---- trainer files -------------------------------------------------------------------- */

static void seeds_ckpt(void)
{
    char path[] = "/tmp/dcomm-fuzz-ckpt-XXXXXX", err[256];
    ckpt_header_t h = {.seed = 42, .ranks = 2, .batch = 64, .epochs_done = 1, .epochs = 5,
                       .step = 469, .limit = 60000, .nparams = 24};
    float params[24], momentum[24];
    bytes_t b = {0};
    uint8_t buf[4096];
    ssize_t n;
    int fd = mkstemp(path);

    for (int i = 0; i < 24; i++) {
        params[i] = 0.01f * (float)(i - 12);
        momentum[i] = -0.001f * (float)i;
    }
    if (fd < 0 || ckpt_save(path, &h, params, momentum, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_seeds: checkpoint: %s\n", err);
        exit(1);
    }
    close(fd);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    put16(&b, 24);
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        put(&b, buf, (size_t)n);
    }
    close(fd);
    unlink(path);
    write_seed("ckpt", "checkpoint", &b);
    free(b.p);
}

/* The first n items of a Fashion-MNIST file, as a plain and a gzip IDX file. */
static void seed_idx(const char *file, int dims, int n, const char *name)
{
    char src[256], tmp[] = "/tmp/dcomm-fuzz-idx-XXXXXX", gzname[64];
    uint8_t hdr[16], item[784], buf[4096];
    size_t hlen = 4 + 4 * (size_t)dims, ilen = dims == 3 ? 784 : 1;
    bytes_t b = {0};
    gzFile in, out;
    ssize_t got;
    int fd;

    snprintf(src, sizeof(src), "%s/%s", FMNIST, file);
    in = gzopen(src, "rb");
    if (in == NULL || gzread(in, hdr, (unsigned)hlen) != (int)hlen) {
        fprintf(stderr, "fuzz_seeds: %s missing (package dataset-fashion-mnist): no IDX seed\n",
                src);
        if (in != NULL) {
            gzclose(in);
        }
        return;
    }
    hdr[4] = hdr[5] = hdr[6] = 0;
    hdr[7] = (uint8_t)n;
    put8(&b, dims == 3 ? 1 : 0);
    put(&b, hdr, hlen);
    for (int i = 0; i < n; i++) {
        if (gzread(in, item, (unsigned)ilen) != (int)ilen) {
            abort();
        }
        put(&b, item, ilen);
    }
    gzclose(in);
    write_seed("idx", name, &b);

    /* The same file gzip-compressed, as the data set ships. */
    fd = mkstemp(tmp);
    out = gzdopen(fd, "wb9");
    if (out == NULL || gzwrite(out, b.p + 1, (unsigned)(b.len - 1)) != (int)(b.len - 1) ||
        gzclose(out) != Z_OK) {
        abort();
    }
    b.len = 1;
    fd = open(tmp, O_RDONLY | O_CLOEXEC);
    while ((got = read(fd, buf, sizeof(buf))) > 0) {
        put(&b, buf, (size_t)got);
    }
    close(fd);
    unlink(tmp);
    snprintf(gzname, sizeof(gzname), "%s.gz", name);
    write_seed("idx", gzname, &b);
    free(b.p);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    outdir = argv[1];
    fuzz_setup();
    seeds_rdv();
    seeds_rdv_server();
    seeds_wire();
    seeds_tcp();
    seeds_shm();
    seeds_ckpt();
    seed_idx("t10k-images-idx3-ubyte.gz", 3, 2, "images");
    seed_idx("t10k-labels-idx1-ubyte.gz", 1, 5, "labels");
    return 0;
}
