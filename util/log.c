/* Log output: one formatted line per call, prefixed with host, pid and rank. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <unistd.h>

dc_log_level_t dc_log_level = DC_LOG_LEVEL_WARN;
static int log_rank = -1;
static char log_host[64];

static const char *level_names[] = {"NONE", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"};

void dc_log_set_level(dc_log_level_t level)
{
    dc_log_level = level;
}

void dc_log_set_rank(int rank)
{
    log_rank = rank;
}

int dc_log_level_parse(const char *text)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++) {
        if (strcasecmp(text, level_names[i]) == 0) {
            return i;
        }
    }
    if (strcasecmp(text, "warning") == 0) {
        return DC_LOG_LEVEL_WARN;
    }
    return -1;
}

void dc_log_vemit(dc_log_level_t level, const char *file, int line, const char *fmt, va_list ap)
{
    char msg[1024];
    const char *base = strrchr(file, '/');

    if (log_host[0] == '\0') {
        gethostname(log_host, sizeof(log_host) - 1);
    }
    vsnprintf(msg, sizeof(msg), fmt, ap);
    /* One fprintf per line so lines of concurrent threads do not interleave. */
    fprintf(stderr, "[%s:%d:%d] dcomm %s %s:%d %s\n", log_host, (int)getpid(), log_rank,
            level_names[level], base ? base + 1 : file, line, msg);
}

void dc_log_emit(dc_log_level_t level, const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    dc_log_vemit(level, file, line, fmt, ap);
    va_end(ap);
}
