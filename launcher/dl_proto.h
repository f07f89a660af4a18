/* The line protocol between dlaunch and its remote agents (dlaunch.h describes it),
 * as pure parsers over length-bounded, not NUL-terminated lines: dlaunch's reading
 * of agent lines, the agent's reading of control lines, and %XX unescaping of the
 * job description. Self-contained, for unit tests and fuzz harnesses. */
#ifndef DL_PROTO_H
#define DL_PROTO_H

#include <stddef.h>

/* Decodes "%XX" escapes (two hex digits) of the NUL-terminated s in place.
 * Returns 0, or -1 when a '%' is not followed by two hex digits (s is then
 * unspecified but still NUL-terminated within its original length). */
int dl_unescape(char *s);

/* A control line from dlaunch to an agent: exactly "K <signal>" in line[0..len)
 * with 0 < signal < NSIG. Returns 0 and sets *sig_p, or -1. */
int dl_ctl_parse(const char *line, size_t len, int *sig_p);

typedef enum dl_agent_msg_kind {
    DL_AGENT_MSG_OUTPUT, /* "<fd> <rank> <text>": a line a rank wrote (fd 1 or 2) */
    DL_AGENT_MSG_EXIT,   /* "X <rank> <code> <signal>": a rank ended */
    DL_AGENT_MSG_FATAL,  /* "F <text>": the agent gives up, saying why */
    DL_AGENT_MSG_BAD     /* anything else */
} dl_agent_msg_kind_t;

typedef struct dl_agent_msg {
    dl_agent_msg_kind_t kind;
    int fd;
    long rank;
    int code, sig;
    size_t text_off, text_len; /* OUTPUT and FATAL: the text within the line */
} dl_agent_msg_t;

/* Parses one line an agent wrote (line[0..len), no newline). Numbers must be
 * plain decimals within range (fd 1..2, rank >= 0, code 0..255, signal
 * 0..NSIG-1); text bounds always lie within the line. Returns m->kind. */
dl_agent_msg_kind_t dl_agent_msg_parse(const char *line, size_t len, dl_agent_msg_t *m);

#endif
