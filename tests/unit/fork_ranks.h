/*
 * Helpers of the unit tests that run ranks as forked processes (test_shm,
 * test_coll_shmdirect): reaping them against a deadline, and checking that
 * nothing of dcomm's is left in /dev/shm or in the store directory.
 */
#ifndef FORK_RANKS_H
#define FORK_RANKS_H

#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dc_time.h"

static inline int count_dcomm_shm_files(void)
{
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    int n = 0;

    if (d == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        n += (strstr(e->d_name, "dcomm") != NULL);
    }
    closedir(d);
    return n;
}

static inline int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Waits for the nprocs forked ranks in pids: rank killed_rank (-1: none) must
 * die by SIGKILL, every other must exit 0. At wait_ms all survivors are killed.
 * Returns nonzero on any failure (reported on stderr). */
static inline int reap_ranks(pid_t *pids, int nprocs, int killed_rank, int wait_ms)
{
    uint64_t deadline = dc_deadline_ms(wait_ms);
    int left = nprocs, failed = 0;

    while (left > 0) {
        int wstatus;
        pid_t pid = waitpid(-1, &wstatus, WNOHANG);

        if (pid > 0) {
            int r = 0;
            while (r < nprocs && pids[r] != pid) {
                r++;
            }
            if (r == nprocs) {
                continue;
            }
            pids[r] = -1;
            left--;
            if (r == killed_rank) {
                failed |= !(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL);
            } else if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
                fprintf(stderr, "rank %d ended with status 0x%x\n", r, wstatus);
                failed = 1;
            }
        } else if (dc_now_ns() >= deadline) {
            fprintf(stderr, "scenario timed out after %d ms, killing its ranks\n", wait_ms);
            for (int r = 0; r < nprocs; r++) {
                if (pids[r] > 0) {
                    kill(pids[r], SIGKILL);
                    waitpid(pids[r], NULL, 0);
                }
            }
            failed = 1;
            left = 0;
        } else {
            dc_sleep_ns(2000000);
        }
    }
    return failed;
}

#endif
