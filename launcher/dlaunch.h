/* dlaunch's parts, each calling only those listed before it: rank output and
 * the verbose log (dlaunch_output.c), the command line (dlaunch_args.c), the
 * host list (dlaunch_hosts.c), local ranks and stopping the job
 * (dlaunch_ranks.c), the remote side through an rsh agent (dlaunch_remote.c),
 * mpirun (dlaunch_mpi.c), and main with the event loop (dlaunch.c).
 *
 * Remote hosts: dlaunch runs `RSH... HOST DLAUNCH --agent` once per host. The
 * agent reads its job (environment, identity, program) from stdin, starts its
 * ranks, and writes one line per event to stdout:
 *   "1 <rank> <text>" / "2 <rank> <text>"  a line the rank wrote to stdout / stderr
 *   "X <rank> <code> <signal>"              the rank ended (signal 0: it exited)
 *   "F <text>"                              the agent cannot go on (and says why)
 * dlaunch writes "K <signal>" lines to the agent's stdin to signal its ranks;
 * end of file there (dlaunch gone) makes the agent stop its ranks. */
#ifndef DLAUNCH_H
#define DLAUNCH_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "rdv.h"

#define DL_MAX_RANKS   1024
#define DL_MAX_LINE    (64 * 1024) /* a longer line is cut and flushed in pieces */
#define DL_HOST_MAX    256
#define DL_EXIT_USAGE  2
#define DL_EXIT_START_TIMEOUT 124 /* not every rank reached the rendezvous in time */

typedef struct dl_host {
    char name[DL_HOST_MAX];
    int slots;
    int first_rank; /* ranks first_rank .. first_rank + nranks - 1 run here */
    int nranks;
    int local;      /* this machine: ranks are started directly, no agent */
} dl_host_t;

typedef struct dl_stream {
    int fd;      /* read end of the pipe; -1 once closed */
    int out_fd;  /* 1 or 2 */
    char *buf;   /* the unfinished line */
    size_t len;
} dl_stream_t;

typedef struct dl_rank {
    int rank;
    int host;  /* index into job->hosts */
    pid_t pid; /* local ranks: also its process group; 0 for remote ones */
    int running;
    dl_stream_t out;
    dl_stream_t err;
    /* Elastic jobs: rank is the one it started with (HOROVOD_RANK, and its label). */
    int ident[6];   /* rank, size, local rank, local size, cross rank, cross size at start */
    int ident_set;
    int joins;      /* rounds it was placed in */
    int round;      /* the round it is a member of (0: none yet) */
    int round_rank; /* its rank there */
    int leaving;    /* stopped by dlaunch (its host went): its end is no failure */
    int end_code;   /* once ended: its exit code, or 128 + signal */
    int end_sig;
} dl_rank_t;

typedef struct dl_agent {
    int host;       /* index into job->hosts */
    pid_t pid;      /* the rsh process (its own process group) */
    int running;
    int in_fd;      /* its stdin: "K <sig>" lines; -1 once closed */
    dl_stream_t out; /* protocol lines */
    dl_stream_t err; /* the rsh command's own messages, prefixed [host] */
} dl_agent_t;

typedef enum dl_bind { DL_BIND_NONE = 0, DL_BIND_CORE, DL_BIND_NUMA } dl_bind_t;

typedef struct dl_options {
    int np;
    double grace_s;
    int start_timeout_s;
    int start_timeout_given;
    int verbose;
    const char *hosts_arg;  /* -H */
    const char *hostfile;   /* --hostfile */
    const char *rsh;        /* --rsh, default "ssh" */
    int rsh_given;
    const char *ifname;     /* --ifname */
    dl_bind_t bind;
    int dry_run;            /* --dry-run: print the plan, start nothing */
    int agent;              /* --agent: the remote side (internal) */
    int mpi;                /* --mpi: hand the job to mpirun */
    const char *mpirun;     /* --mpirun CMD, default "mpirun" */
    const char *output_dir; /* --output-filename / --output-dir: per-rank files */
    const char *ssh_port;   /* -p / --ssh-port: "-p N" added to an ssh rsh */
    const char *ssh_identity; /* -i / --ssh-identity-file: "-i F" likewise */
    char rsh_buf[512];      /* the rsh command with those added */
    int gloo;               /* --gloo: horovodrun's "no mpirun", dlaunch's default */
    /* Elastic jobs (dlaunch_elastic.c): --min-np, --max-np or a discovery script. */
    int elastic;
    int min_np, max_np;     /* 0: -np / every slot */
    const char *discovery;  /* --host-discovery-script */
    double discovery_interval_s;
    int reset_limit;        /* -1: none */
    double cooldown_lo, cooldown_hi; /* --blacklist-cooldown-range; 0 0: for good */
    int elastic_timeout_s;
    char **argv;
} dl_options_t;

typedef struct dl_job {
    dl_options_t opt;
    dl_host_t *hosts;
    int nhosts;
    dl_rank_t *ranks;     /* [np] (the agent: its own ranks only) */
    int rank_base;        /* rank of ranks[0]: 0, in the agent its first rank */
    int nranks;           /* entries of ranks */
    int ranks_cap;        /* entries allocated (elastic jobs add workers) */
    struct dl_elastic *el; /* elastic jobs' driver state, else NULL */
    dl_agent_t *agents;   /* [nagents] */
    int nagents;
    int nrunning;
    dc_rdv_server_t *server;
    int sigfd;
    sigset_t oldmask;
    char rdv_addr[80];
    char secret_hex[2 * DC_AUTH_SECRET_LEN + 1];
    char job_id[33];
    int exit_code;       /* of the first failure (or 128 + signal received) */
    int stopping;        /* ranks were told to stop */
    int killed;          /* SIGKILL was sent */
    uint64_t kill_at;    /* when to escalate to SIGKILL */
    uint64_t start_by;   /* start-timeout deadline; 0 once checked */
    int stdout_broken;
    int *out_files;      /* --output-filename: [2 * rank + (stderr)] files, else NULL */
    /* Agent only: identity of this host's ranks, and the link to dlaunch. */
    int size, cross_rank, cross_size;
    int ctl_fd;          /* stdin: commands from dlaunch; -1 once closed */
} dl_job_t;

extern int dl_verbose;

#define DL_VLOG(...)                                                                       \
    do {                                                                                   \
        if (dl_verbose) {                                                                  \
            fprintf(stderr, "dlaunch: " __VA_ARGS__);                                      \
        }                                                                                  \
    } while (0)

/* ---- command line (dlaunch_args.c) ---- */

/* Parses dlaunch's arguments into opt; horovodrun's tuning flags go into the
 * environment. Returns 0, or the exit code to leave with (usage errors:
 * DL_EXIT_USAGE, --help: 0 + 256). */
int dl_args_parse(int argc, char **argv, dl_options_t *opt);
const char *dl_bind_name(dl_bind_t bind);

/* ---- hosts (dlaunch_hosts.c) ---- */

/* Builds job->hosts from -H, --hostfile or a Slurm allocation (in that order;
 * none of them: one local host with np slots), assigns ranks to hosts in order
 * (np 0: every slot) and marks the hosts that are this machine. Returns 0, or
 * prints why to stderr and returns DL_EXIT_USAGE. */
int dl_hosts_plan(dl_job_t *job);
/* Parses "a:2,b,c:4" (slots default 1); names repeat = slots add up. */
int dl_hosts_parse_list(const char *text, dl_host_t **hosts_p, int *n_p, char *why,
                        size_t whylen);
/* Expands a Slurm node list "n[01-03,7],gpu1" with its tasks per node
 * "2(x3),1" (NULL: 1 each). */
int dl_hosts_parse_slurm(const char *nodelist, const char *tasks, dl_host_t **hosts_p,
                         int *n_p, char *why, size_t whylen);
/* The host's name for HOROVOD_HOSTNAME: as given in -H / the hostfile / Slurm,
 * or this machine's name when no host list was given. */
const char *dl_host_label(const dl_job_t *job, const dl_host_t *host);
/* 1 when name is this machine: localhost, a loopback address or our host name. */
int dl_host_is_local(const char *name);

/* ---- output (dlaunch_output.c) ---- */

void dl_write_all(dl_job_t *job, int fd, const struct iovec *iov, int iovcnt);
/* One line of a rank: "[rank] text" on out_fd (the agent: a protocol line). */
void dl_emit_line(dl_job_t *job, int rank, int out_fd, const char *line, size_t len);
/* Reads what is there; calls line_fn for every complete line (and cut pieces). */
typedef void (*dl_line_fn_t)(dl_job_t *job, void *owner, dl_stream_t *s, const char *line,
                             size_t len);
void dl_stream_read(dl_job_t *job, void *owner, dl_stream_t *s, dl_line_fn_t line_fn);
void dl_stream_close(dl_job_t *job, void *owner, dl_stream_t *s, dl_line_fn_t line_fn);
int dl_stream_open(dl_stream_t *s, int fd, int out_fd);
/* Reads both streams until they have nothing more (at most rounds polls of
 * wait_ms each): a process's last output before its verdict. */
void dl_streams_drain(dl_job_t *job, void *owner, dl_stream_t *s[2], dl_line_fn_t fn[2],
                      int rounds, int wait_ms);
/* The line function of a local rank's streams (owner: its dl_rank_t). */
void dl_rank_line(dl_job_t *job, void *owner, dl_stream_t *s, const char *line, size_t len);
/* --output-filename: opens every rank's stdout and stderr file; 0, or -1 after
 * saying why on stderr. */
int dl_output_files_open(dl_job_t *job);

/* ---- local ranks and stopping the job (dlaunch_ranks.c) ---- */

/* Starts every rank of the job's local hosts; -1 (the job failed) when one
 * cannot be started. */
int dl_ranks_start_local(dl_job_t *job);
/* Sends sig to every local rank's process group and to every agent. */
void dl_ranks_signal(dl_job_t *job, int sig);
/* Stops the job: sig to every rank now, SIGKILL after the grace period. */
void dl_ranks_stop(dl_job_t *job, int sig);
/* Tells every running agent to send sig to its ranks. */
void dl_agents_signal(dl_job_t *job, int sig);
/* A local rank was reaped: its last output, then the verdict on it. */
void dl_rank_exited(dl_job_t *job, dl_rank_t *r, int wstatus);
/* A rank ended: prints the verdict, fails the job when it failed. */
void dl_rank_ended(dl_job_t *job, dl_rank_t *r, int code, int sig);
void dl_fail_job(dl_job_t *job, int code, const char *text);

/* Starts rank r (job->ranks entry) on this machine; 0 or -1 (errno). */
int dl_rank_spawn(dl_job_t *job, dl_rank_t *r);

/* ---- elastic jobs (dlaunch_elastic.c) ---- */

/* Hosts (-H or the discovery script's first answer), the worker table; 0, or the
 * exit code (usage errors print why). */
int dl_elastic_prepare(dl_job_t *job);
/* Discovery, blacklist cooldowns, new workers, forming rounds, deadlines. */
void dl_elastic_tick(dl_job_t *job, uint64_t now);
/* Milliseconds until dl_elastic_tick has something to do by the clock. */
int dl_elastic_timeout_ms(const dl_job_t *job, uint64_t now);
/* A worker ended (dl_rank_exited has recorded how): the elastic job's verdict,
 * instead of failing the job. */
void dl_elastic_ended(dl_job_t *job, dl_rank_t *r);
/* 1 when no worker runs and none will be started: the job may end. */
int dl_elastic_over(const dl_job_t *job);
void dl_elastic_free(dl_job_t *job);

/* ---- remote hosts (dlaunch_remote.c) ---- */

/* dlaunch side: starts the agent of every remote host. */
int dl_agents_start(dl_job_t *job);
/* The agent's pid was reaped. */
void dl_agent_exited(dl_job_t *job, dl_agent_t *a, int wstatus);
void dl_agent_line(dl_job_t *job, void *owner, dl_stream_t *s, const char *line, size_t len);
void dl_agent_err_line(dl_job_t *job, void *owner, dl_stream_t *s, const char *line,
                       size_t len);
/* Agent side: reads the job from stdin into job; 0 on success. */
int dl_agent_read_job(dl_job_t *job);
/* Agent side: handles the commands on stdin (K <sig>, end of file). */
void dl_agent_control(dl_job_t *job);

/* ---- mpirun (dlaunch_mpi.c) ---- */

/* --mpi: runs the job under mpirun (execs it; returns only on failure, or 0
 * after printing the command with --dry-run). */
int dl_mpi_exec(const dl_options_t *opt);
/* `dlaunch --mpi-rsh HOST CMDLINE...`: Open MPI's rsh agent for an --rsh that
 * runs a program rather than a command line; argv starts at HOST. */
int dl_mpi_rsh(int argc, char **argv);

#endif
