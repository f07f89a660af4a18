/* The dlaunch <-> agent line protocol (launcher/dl_proto.c) on the inputs a code
 * review found mishandled: a control line read from a reused, not NUL-terminated
 * buffer ("K 15" then "K 9"), a bare "F", a trailing "%a", and numbers out of range. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dl_proto.h"

/* dlaunch's line reader reuses one buffer: the second, shorter line leaves the
 * tail of the first behind it, and no NUL. */
static void test_ctl_reused_buffer(void **state)
{
    char buf[8];
    int sig = 0;

    (void)state;
    memcpy(buf, "K 15", 4);
    assert_int_equal(dl_ctl_parse(buf, 4, &sig), 0);
    assert_int_equal(sig, SIGTERM);
    memcpy(buf, "K 9", 3); /* buf now holds "K 95" */
    assert_int_equal(dl_ctl_parse(buf, 3, &sig), 0);
    assert_int_equal(sig, SIGKILL);
}

static void test_ctl_malformed(void **state)
{
    const char *bad[] = {"", "K", "K ", "K 0", "K -9", "K 9x", "K  9", "k 9", "K 65536",
                         "K 99999999999999999999", "X 9"};
    int sig = 77;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(dl_ctl_parse(bad[i], strlen(bad[i]), &sig), -1);
    }
    assert_int_equal(sig, 77);
    assert_int_equal(dl_ctl_parse("K 64", 4, &sig), NSIG > 64 ? 0 : -1);
}

static void test_agent_lines(void **state)
{
    dl_agent_msg_t m;
    char buf[16];

    (void)state;
    /* A bare "F" (and "F" then the stale tail of a longer line). */
    assert_int_equal(dl_agent_msg_parse("F", 1, &m), DL_AGENT_MSG_BAD);
    memcpy(buf, "Fxyz", 4);
    assert_int_equal(dl_agent_msg_parse(buf, 1, &m), DL_AGENT_MSG_BAD);
    assert_int_equal(dl_agent_msg_parse("F ", 2, &m), DL_AGENT_MSG_FATAL);
    assert_int_equal(m.text_len, 0);
    assert_int_equal(dl_agent_msg_parse("F no job", 8, &m), DL_AGENT_MSG_FATAL);
    assert_int_equal(m.text_off, 2);
    assert_int_equal(m.text_len, 6);
    /* Rank output keeps its leading blanks; an empty line is a line. */
    assert_int_equal(dl_agent_msg_parse("2 13   indented", 15, &m), DL_AGENT_MSG_OUTPUT);
    assert_int_equal(m.fd, 2);
    assert_int_equal(m.rank, 13);
    assert_int_equal(m.text_off, 5);
    assert_int_equal(m.text_len, 10);
    assert_int_equal(dl_agent_msg_parse("1 0 ", 4, &m), DL_AGENT_MSG_OUTPUT);
    assert_int_equal(m.text_len, 0);
    assert_int_equal(dl_agent_msg_parse("1 0", 3, &m), DL_AGENT_MSG_BAD);
    assert_int_equal(dl_agent_msg_parse("3 0 x", 5, &m), DL_AGENT_MSG_BAD);
    assert_int_equal(dl_agent_msg_parse("1 -1 x", 6, &m), DL_AGENT_MSG_BAD);
    /* Exits; the length bounds the parse, not a NUL. */
    memcpy(buf, "X 3 0 95", 8);
    assert_int_equal(dl_agent_msg_parse(buf, 7, &m), DL_AGENT_MSG_EXIT);
    assert_int_equal(m.rank, 3);
    assert_int_equal(m.code, 0);
    assert_int_equal(m.sig, 9);
    assert_int_equal(dl_agent_msg_parse("X 3 256 0", 9, &m), DL_AGENT_MSG_BAD);
    assert_int_equal(dl_agent_msg_parse("X 3 1", 5, &m), DL_AGENT_MSG_BAD);
    assert_int_equal(dl_agent_msg_parse("X 3 1 2 4", 9, &m), DL_AGENT_MSG_BAD);
    assert_int_equal(dl_agent_msg_parse("", 0, &m), DL_AGENT_MSG_BAD);
}

/* Each string sits at the very end of its own allocation, so a read past its
 * NUL is an ASan error (and garbage otherwise). */
static int unescape_copy(const char *in, char *out, size_t cap)
{
    size_t n = strlen(in) + 1;
    char *s = malloc(n);
    int rc;

    memcpy(s, in, n);
    rc = dl_unescape(s);
    assert_true(strlen(s) < n);
    strncpy(out, s, cap - 1);
    out[cap - 1] = '\0';
    free(s);
    return rc;
}

static void test_unescape(void **state)
{
    char out[64];

    (void)state;
    assert_int_equal(unescape_copy("a%25b%0Ac%7e", out, sizeof(out)), 0);
    assert_string_equal(out, "a%b\nc~");
    assert_int_equal(unescape_copy("plain", out, sizeof(out)), 0);
    assert_string_equal(out, "plain");
    assert_int_equal(unescape_copy("x%a", out, sizeof(out)), -1);
    assert_int_equal(unescape_copy("%", out, sizeof(out)), -1);
    assert_int_equal(unescape_copy("x%", out, sizeof(out)), -1);
    assert_int_equal(unescape_copy("%zz", out, sizeof(out)), -1);
    assert_int_equal(unescape_copy("%4", out, sizeof(out)), -1);
    assert_int_equal(unescape_copy("%41%42", out, sizeof(out)), 0);
    assert_string_equal(out, "AB");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctl_reused_buffer),
        cmocka_unit_test(test_ctl_malformed),
        cmocka_unit_test(test_agent_lines),
        cmocka_unit_test(test_unescape),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
