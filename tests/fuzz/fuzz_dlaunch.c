/* libFuzzer harness: the parsers of dlaunch's agent protocol
 * (launcher/dl_proto.c): agent event lines (what dlaunch reads from an
 * agent), control lines (what an agent reads from dlaunch) and the %XX
 * unescaping of the setup message.
 * Input: a byte choosing the parser (% 3), then the line. Lines come as the
 * stream reader hands them over: len bytes, not NUL-terminated. */
#include <signal.h>
#include <stdio.h>

#include "dl_proto.h"
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    int which = fuzz_u8(&in) % 3;
    size_t len = in.left;
    char *line = fuzz_dup(in.p, len);

    if (which == 0) {
        dl_agent_msg_t m;
        char out[256];

        memset(&m, 0xa5, sizeof(m));
        switch (dl_agent_msg_parse(line, len, &m)) {
        case DL_AGENT_MSG_OUTPUT:
            if ((m.fd != 1 && m.fd != 2) || m.rank < 0) {
                abort();
            }
            break;
        case DL_AGENT_MSG_EXIT:
            if (m.rank < 0 || m.code < 0 || m.code > 255 || m.sig < 0 || m.sig >= NSIG) {
                abort();
            }
            break;
        case DL_AGENT_MSG_FATAL:
        case DL_AGENT_MSG_BAD:
            break;
        default:
            abort();
        }
        /* OUTPUT and FATAL: dlaunch prints the text; it must lie within the line. */
        if (m.kind == DL_AGENT_MSG_OUTPUT || m.kind == DL_AGENT_MSG_FATAL) {
            if (m.text_off > len || m.text_len > len - m.text_off) {
                fprintf(stderr, "dl_agent_msg_parse: text [%zu, +%zu) of a %zu-byte line\n",
                        m.text_off, m.text_len, len);
                abort();
            }
            snprintf(out, sizeof(out), "%.*s", (int)m.text_len, line + m.text_off);
        }
    } else if (which == 1) {
        /* The stream reader's buffer holds whatever came after the line (the
         * rest of a longer earlier line, say): the verdict may depend only on
         * the line's own len bytes. */
        char *tail = malloc(len + 3), *term = malloc(len + 1);
        int sig_tail = 0, sig_term = 0, k_tail, k_term;

        memcpy(tail, line, len);
        memcpy(tail + len, "95", 3);
        memcpy(term, line, len);
        term[len] = '\0';
        k_tail = dl_ctl_parse(tail, len, &sig_tail) == 0;
        k_term = dl_ctl_parse(term, len, &sig_term) == 0;
        if (k_tail != k_term || sig_tail != sig_term) {
            fprintf(stderr, "dl_ctl_parse: '%s' read beyond its %zu bytes: signal %d, not %d\n",
                    term, len, k_tail ? sig_tail : 0, k_term ? sig_term : 0);
            abort();
        }
        if (k_term && (sig_term <= 0 || sig_term >= NSIG)) {
            abort();
        }
        free(tail);
        free(term);
    } else {
        /* The setup reader hands over a NUL-terminated line. */
        char *s = malloc(len + 1);
        size_t before;

        memcpy(s, line, len);
        s[len] = '\0';
        before = strlen(s);
        (void)dl_unescape(s); /* -1 for a malformed escape: s stays a string */
        if (strlen(s) > before) {
            abort(); /* unescaping never lengthens */
        }
        free(s);
    }
    free(line);
    return 0;
}
