/* Peers map a rank's shm segment by opening its memfd through /proc/<pid>/fd,
 * which needs ptrace-read permission over that rank. Under Yama's
 * ptrace_scope=1 (Ubuntu's default) sibling ranks lack it, so the creator lets
 * any same-user process trace it (PR_SET_PTRACER_ANY) -- but only while its
 * peers are opening the segment: each opening window takes a reference, and
 * when the last one closes the exception is withdrawn (PR_SET_PTRACER 0). */
#ifndef DC_SHM_PTRACER_H
#define DC_SHM_PTRACER_H

/* Opens a window (sets PR_SET_PTRACER_ANY when it is the first). */
void dc_shm_ptracer_open(void);
/* Closes one; the last withdraws the exception. Calls must pair with opens. */
void dc_shm_ptracer_close(void);
/* Windows open now (for tests). */
int dc_shm_ptracer_windows(void);

#endif
