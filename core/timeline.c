/* Timeline writer (timeline.h). Events are appended with pwrite at the offset
 * of the closing "\n]", each write carrying the event and a new "\n]". */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dc_time.h"
#include "log.h"
#include "map.h"
#include "timeline.h"

struct dc_timeline {
    int fd;
    off_t tail;        /* offset of the closing "\n]" */
    int nevents;
    uint64_t t0_ns;
    dc_map_t rows;     /* tensor -> row id + 1 */
    int nrows;
    int broken;
};

static void json_escape(char *out, size_t cap, const char *in)
{
    size_t n = 0;

    for (; *in != '\0' && n + 7 < cap; in++) {
        unsigned char ch = (unsigned char)*in;

        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    out[n] = '\0';
}

static void append(dc_timeline_t *tl, const char *event)
{
    char buf[2048];
    int len;
    ssize_t w;

    if (tl->broken) {
        return;
    }
    len = snprintf(buf, sizeof(buf), "%s\n%s\n]", tl->nevents ? "," : "", event);
    if (len < 0 || (size_t)len >= sizeof(buf)) {
        return;
    }
    w = pwrite(tl->fd, buf, (size_t)len, tl->tail);
    if (w != len) {
        DC_WARN("timeline: write failed; no further events are recorded");
        tl->broken = 1;
        return;
    }
    tl->tail += len - 2;
    tl->nevents++;
}

dc_status_t dc_timeline_open(const char *path, dc_timeline_t **tl_p)
{
    dc_timeline_t *tl = calloc(1, sizeof(*tl));

    if (tl == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for the timeline");
    }
    tl->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (tl->fd < 0 || pwrite(tl->fd, "[\n]", 3, 0) != 3) {
        if (tl->fd >= 0) {
            close(tl->fd);
        }
        free(tl);
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "timeline: cannot write '%s'", path);
    }
    tl->tail = 1;
    tl->t0_ns = dc_now_ns();
    *tl_p = tl;
    return DCOMM_OK;
}

void dc_timeline_close(dc_timeline_t *tl)
{
    if (tl == NULL) {
        return;
    }
    close(tl->fd);
    dc_map_free(&tl->rows);
    free(tl);
}

/* The row of a tensor; a new row is named by a metadata event. */
static int row_of(dc_timeline_t *tl, const char *tensor)
{
    void *v = dc_map_get(&tl->rows, tensor);
    char name[600], event[800];
    int row;

    if (v != NULL) {
        return (int)((uintptr_t)v - 1);
    }
    row = ++tl->nrows;
    if (dc_map_put(&tl->rows, tensor, (void *)(uintptr_t)(row + 1)) != 1) {
        return 0;
    }
    json_escape(name, sizeof(name), tensor);
    snprintf(event, sizeof(event),
             "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":%d,"
             "\"args\":{\"name\":\"%s\"}}",
             row, name);
    append(tl, event);
    return row;
}

static double us_since(const dc_timeline_t *tl, uint64_t ns)
{
    return ns > tl->t0_ns ? (double)(ns - tl->t0_ns) / 1e3 : 0.0;
}

void dc_timeline_span(dc_timeline_t *tl, const char *tensor, const char *phase,
                      uint64_t start_ns, uint64_t end_ns, const char *args)
{
    char event[1600];
    int row;

    if (tl == NULL) {
        return;
    }
    row = row_of(tl, tensor);
    snprintf(event, sizeof(event),
             "{\"name\":\"%s\",\"ph\":\"X\",\"pid\":0,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,"
             "\"args\":{%s}}",
             phase, row, us_since(tl, start_ns),
             end_ns > start_ns ? (double)(end_ns - start_ns) / 1e3 : 0.0, args ? args : "");
    append(tl, event);
}

void dc_timeline_tick(dc_timeline_t *tl, const char *tensor, const char *what, uint64_t ts_ns,
                      const char *args)
{
    char event[1600];
    int row;

    if (tl == NULL) {
        return;
    }
    row = row_of(tl, tensor);
    snprintf(event, sizeof(event),
             "{\"name\":\"%s\",\"ph\":\"i\",\"s\":\"t\",\"pid\":0,\"tid\":%d,\"ts\":%.3f,"
             "\"args\":{%s}}",
             what, row, us_since(tl, ts_ns), args ? args : "");
    append(tl, event);
}
