/*
 * Chrome-trace timeline (opens in Perfetto and chrome://tracing), written by
 * rank 0's coordinator: one row per tensor, one span per phase. The file is
 * valid JSON after every event: each write replaces the closing bracket, so a
 * job killed at any moment leaves a file that parses.
 */
#ifndef DC_TIMELINE_H
#define DC_TIMELINE_H

#include <stdint.h>

#include "status.h"

typedef struct dc_timeline dc_timeline_t;

dc_status_t dc_timeline_open(const char *path, dc_timeline_t **tl_p);
void dc_timeline_close(dc_timeline_t *tl);
/* A phase of one tensor, [start_ns, end_ns) on the dc_now_ns clock; args is a
 * JSON object's members ("\"algorithm\":\"ring\"") or NULL. */
void dc_timeline_span(dc_timeline_t *tl, const char *tensor, const char *phase,
                      uint64_t start_ns, uint64_t end_ns, const char *args);
/* A point on a tensor's row, e.g. rank 2 reporting it during negotiation. */
void dc_timeline_tick(dc_timeline_t *tl, const char *tensor, const char *what, uint64_t ts_ns,
                      const char *args);

#endif
