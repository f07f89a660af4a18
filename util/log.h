/* Logging for every layer: levels checked before formatting, lines prefixed with
 * host, pid and rank, written to stderr only (the library never writes stdout). */
#ifndef DC_LOG_H
#define DC_LOG_H

#include <stdarg.h>

typedef enum dc_log_level {
    DC_LOG_LEVEL_NONE = 0,
    DC_LOG_LEVEL_ERROR = 1,
    DC_LOG_LEVEL_WARN = 2,
    DC_LOG_LEVEL_INFO = 3,
    DC_LOG_LEVEL_DEBUG = 4,
    DC_LOG_LEVEL_TRACE = 5
} dc_log_level_t;

/* Loadable modules get this function pointer instead of linking util. */
typedef void (*dc_log_fn_t)(dc_log_level_t level, const char *file, int line, const char *fmt,
                            va_list ap);

extern dc_log_level_t dc_log_level;

void dc_log_set_level(dc_log_level_t level);
void dc_log_set_rank(int rank);
/* Parses "error|warn|info|debug|trace|none"; -1 when unknown. */
int dc_log_level_parse(const char *text);
void dc_log_emit(dc_log_level_t level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void dc_log_vemit(dc_log_level_t level, const char *file, int line, const char *fmt, va_list ap);

#define DC_LOG(level, ...)                                                                 \
    do {                                                                                   \
        if ((level) <= dc_log_level) {                                                     \
            dc_log_emit((level), __FILE__, __LINE__, __VA_ARGS__);                         \
        }                                                                                  \
    } while (0)

#define DC_ERROR(...) DC_LOG(DC_LOG_LEVEL_ERROR, __VA_ARGS__)
#define DC_WARN(...)  DC_LOG(DC_LOG_LEVEL_WARN, __VA_ARGS__)
#define DC_INFO(...)  DC_LOG(DC_LOG_LEVEL_INFO, __VA_ARGS__)
#define DC_DEBUG(...) DC_LOG(DC_LOG_LEVEL_DEBUG, __VA_ARGS__)
#define DC_TRACE(...) DC_LOG(DC_LOG_LEVEL_TRACE, __VA_ARGS__)

#endif
