/* The cycle's list of agreed operations (coord_work.h). */
#include <stdlib.h>
#include <string.h>

#include "coord_work.h"
#include "dc_time.h"

dc_status_t dc_work_add(dc_work_t *w, const dc_wire_req_t *req, dc_op_t *op, int32_t error,
                        const char *text, const uint64_t *counts, uint32_t ncounts, int bit)
{
    exec_item_t *it;

    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        exec_item_t *p = realloc(w->items, cap * sizeof(*p));

        if (p == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
        }
        w->items = p;
        w->cap = cap;
    }
    if (w->arena_len + ncounts > w->arena_cap) {
        size_t cap = DC_MAX(w->arena_cap * 2, w->arena_len + ncounts + 64);
        uint64_t *p = realloc(w->arena, cap * sizeof(*p));

        if (p == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
        }
        w->arena = p;
        w->arena_cap = cap;
    }
    it = &w->items[w->n++];
    memset(it, 0, sizeof(*it));
    it->req = *req;
    it->op = op;
    it->error = error;
    it->text = error != 0 && text != NULL ? strdup(text) : NULL;
    it->counts_off = w->arena_len;
    it->ncounts = ncounts;
    if (ncounts > 0) {
        memcpy(w->arena + w->arena_len, counts, ncounts * sizeof(*counts));
        w->arena_len += ncounts;
    }
    it->bit = bit;
    it->ready_ns = dc_now_ns();
    return DCOMM_OK;
}

void dc_work_done(dc_work_t *w, size_t i0, size_t i1)
{
    for (size_t k = i0; k < i1; k++) {
        dc_op_free(w->items[k].op);
        w->items[k].op = NULL;
        free(w->items[k].text);
        w->items[k].text = NULL;
    }
}

void dc_work_fail(dc_work_t *w, dc_state_t *st, dc_status_t status, const char *msg)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->items[i].op != NULL) {
            dc_op_fail(st, w->items[i].op, status, msg);
            w->items[i].op = NULL;
        }
        free(w->items[i].text);
        w->items[i].text = NULL;
    }
    w->n = 0;
}

void dc_work_clear(dc_work_t *w)
{
    w->n = 0;
    w->arena_len = 0;
}

void dc_work_free(dc_work_t *w)
{
    free(w->items);
    free(w->arena);
    memset(w, 0, sizeof(*w));
}
