/* Parsers of the dlaunch <-> agent line protocol (dl_proto.h): every read is
 * bounded by the line's length, numbers are range-checked decimals, and no
 * parser relies on a NUL that the line buffer does not have. */
#include <signal.h>

#include "dl_proto.h"

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int dl_unescape(char *s)
{
    char *w = s;

    for (const char *r = s; *r != '\0'; r++) {
        int hi, lo;

        if (*r != '%') {
            *w++ = *r;
            continue;
        }
        /* r[1] is read only when not the end, r[2] only when r[1] was a digit. */
        if ((hi = hex_digit(r[1])) < 0 || (lo = hex_digit(r[2])) < 0) {
            *w = '\0';
            return -1;
        }
        *w++ = (char)(hi * 16 + lo);
        r += 2;
    }
    *w = '\0';
    return 0;
}

/* A decimal in [min, max] at *pos of line[0..len), at most 18 digits; advances *pos. */
static int parse_num(const char *line, size_t len, size_t *pos, long min, long max, long *v_p)
{
    size_t i = *pos;
    long v = 0;
    int neg = 0, digits = 0;

    if (i < len && line[i] == '-') {
        neg = 1;
        i++;
    }
    for (; i < len && line[i] >= '0' && line[i] <= '9'; i++) {
        if (++digits > 18) {
            return -1;
        }
        v = v * 10 + (line[i] - '0');
    }
    if (digits == 0) {
        return -1;
    }
    v = neg ? -v : v;
    if (v < min || v > max) {
        return -1;
    }
    *pos = i;
    *v_p = v;
    return 0;
}

static int expect_char(const char *line, size_t len, size_t *pos, char c)
{
    if (*pos >= len || line[*pos] != c) {
        return -1;
    }
    (*pos)++;
    return 0;
}

int dl_ctl_parse(const char *line, size_t len, int *sig_p)
{
    size_t pos = 0;
    long sig;

    if (expect_char(line, len, &pos, 'K') != 0 || expect_char(line, len, &pos, ' ') != 0 ||
        parse_num(line, len, &pos, 1, NSIG - 1, &sig) != 0 || pos != len) {
        return -1;
    }
    *sig_p = (int)sig;
    return 0;
}

dl_agent_msg_kind_t dl_agent_msg_parse(const char *line, size_t len, dl_agent_msg_t *m)
{
    size_t pos = 0;
    long a, b, c;

    *m = (dl_agent_msg_t){.kind = DL_AGENT_MSG_BAD};
    if (len >= 1 && line[0] == 'F') {
        if (len == 1 || line[1] != ' ') {
            return m->kind; /* a bare "F" says nothing */
        }
        m->kind = DL_AGENT_MSG_FATAL;
        m->text_off = 2;
        m->text_len = len - 2;
        return m->kind;
    }
    if (len >= 1 && line[0] == 'X') {
        pos = 1;
        if (expect_char(line, len, &pos, ' ') != 0 ||
            parse_num(line, len, &pos, 0, 0x7fffffffL, &a) != 0 ||
            expect_char(line, len, &pos, ' ') != 0 || parse_num(line, len, &pos, 0, 255, &b) != 0 ||
            expect_char(line, len, &pos, ' ') != 0 ||
            parse_num(line, len, &pos, 0, NSIG - 1, &c) != 0 || pos != len) {
            return m->kind;
        }
        *m = (dl_agent_msg_t){.kind = DL_AGENT_MSG_EXIT, .rank = a, .code = (int)b, .sig = (int)c};
        return m->kind;
    }
    if (parse_num(line, len, &pos, 1, 2, &a) != 0 || expect_char(line, len, &pos, ' ') != 0 ||
        parse_num(line, len, &pos, 0, 0x7fffffffL, &b) != 0 ||
        expect_char(line, len, &pos, ' ') != 0) {
        return m->kind;
    }
    *m = (dl_agent_msg_t){.kind = DL_AGENT_MSG_OUTPUT, .fd = (int)a, .rank = b, .text_off = pos,
                          .text_len = len - pos};
    return m->kind;
}
