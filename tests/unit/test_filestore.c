/* DCOMM_STORE_DIR (util/filestore.c, core/bootstrap.c): the store directory may
 * carry the job secret, so an existing directory must be ours and writable by
 * nobody else, files are created 0600 whatever the umask, and a secret of the
 * wrong length is refused by name rather than used. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "dcomm.h"
#include "log.h"
#include "store.h"

static char dir[64];

static int dir_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/dcomm-test-fs-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int dir_teardown(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void test_dir_checks(void **state)
{
    dc_store_t *store = NULL;

    (void)state;
    dc_log_set_level(DC_LOG_LEVEL_NONE);
    assert_int_equal(chmod(dir, 0770), 0);
    assert_int_equal(dc_filestore_open(dir, &store), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "writable by its group"));
    assert_int_equal(chmod(dir, 0703), 0);
    assert_int_equal(dc_filestore_open(dir, &store), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "writable by everyone"));
    assert_int_equal(chmod(dir, 0755), 0); /* readable is fine: the files are 0600 */
    assert_int_equal(dc_filestore_open(dir, &store), DCOMM_OK);
    store->ops->close(store);
    if (geteuid() == 0) { /* only root can give a directory away */
        assert_int_equal(chown(dir, 65534, 65534), 0);
        assert_int_equal(dc_filestore_open(dir, &store), DCOMM_ERR_INVALID_ARG);
        assert_non_null(strstr(dc_error_get(), "belongs to uid 65534"));
        assert_int_equal(chown(dir, 0, 0), 0);
    }
}

static void test_files_private(void **state)
{
    dc_store_t *store = NULL;
    char path[128], buf[8];
    struct stat st;
    mode_t old = umask(0); /* the old fopen() then made 0666 files */
    size_t len = 0;

    (void)state;
    assert_int_equal(dc_filestore_open(dir, &store), DCOMM_OK);
    assert_int_equal(dc_store_set(store, "secret", "0123456789", 10), DCOMM_OK);
    umask(old);
    snprintf(path, sizeof(path), "%s/k_secret", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* Short buffer: the length says how long the value really is. */
    assert_int_equal(dc_store_get(store, "secret", buf, sizeof(buf), &len, 100), DCOMM_OK);
    assert_int_equal(len, 10);
    assert_memory_equal(buf, "01234567", 8);
    store->ops->close(store);
}

/* Rank 1 of 2 finds a 5-byte secret (rank 0 never comes): dcomm_init must say
 * so at once, not take 5 bytes of key and wait for a peer it cannot authenticate. */
static void test_secret_length(void **state)
{
    dc_store_t *store = NULL;
    int wstatus;
    pid_t pid;

    (void)state;
    assert_int_equal(dc_filestore_open(dir, &store), DCOMM_OK);
    /* The child's first dcomm_init scopes its keys to its first life. */
    assert_int_equal(dc_store_set(store, "life1/secret", "short", 5), DCOMM_OK);
    store->ops->close(store);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dcomm_status_t status;

        setenv("DCOMM_RANK", "1", 1);
        setenv("DCOMM_SIZE", "2", 1);
        setenv("DCOMM_STORE_DIR", dir, 1);
        setenv("DCOMM_TIMEOUT", "3s", 1);
        unsetenv("DCOMM_RENDEZVOUS");
        unsetenv("DCOMM_JOB_SECRET");
        status = dcomm_init();
        if (status == DCOMM_ERR_AUTH && strstr(dcomm_last_error(), "has 5 bytes") != NULL) {
            _exit(0);
        }
        fprintf(stderr, "dcomm_init: %d: %s\n", (int)status, dcomm_last_error());
        _exit(1);
    }
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    assert_true(WIFEXITED(wstatus));
    assert_int_equal(WEXITSTATUS(wstatus), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dir_checks, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_files_private, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_secret_length, dir_setup, dir_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
