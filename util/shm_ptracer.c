/* The ptrace exception that lets peers open our shm memfds, held only while a
 * segment is being opened (shm_ptracer.h). prctl fails harmlessly with EINVAL
 * where Yama is absent. The exception is per process, the windows may overlap
 * (the transport's segment, then a shm group's), hence the count. */
#include <pthread.h>
#include <sys/prctl.h>

#include "shm_ptracer.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int windows;

void dc_shm_ptracer_open(void)
{
    pthread_mutex_lock(&lock);
    if (windows++ == 0) {
#ifdef PR_SET_PTRACER
        (void)prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
#endif
    }
    pthread_mutex_unlock(&lock);
}

void dc_shm_ptracer_close(void)
{
    pthread_mutex_lock(&lock);
    if (windows > 0 && --windows == 0) {
#ifdef PR_SET_PTRACER
        (void)prctl(PR_SET_PTRACER, 0, 0, 0, 0);
#endif
    }
    pthread_mutex_unlock(&lock);
}

int dc_shm_ptracer_windows(void)
{
    int n;

    pthread_mutex_lock(&lock);
    n = windows;
    pthread_mutex_unlock(&lock);
    return n;
}
