/* dlaunch --mpi: the job is handed to Open MPI's mpirun, and dcomm's mpi module
 * bootstraps the ranks (no rendezvous of dlaunch's own). dlaunch's options map
 * onto mpirun's: -np, -H (--host), --hostfile (the same 'host slots=N' format),
 * --rsh (plm_rsh_agent), --ifname (Open MPI's oob/btl tcp interface and
 * DCOMM_IFNAME), --output-filename (mpirun's own), and every DCOMM_* and
 * HOROVOD_* variable is passed on with -x.
 *
 * Open MPI's rsh launcher hands its agent one shell command line, as ssh
 * expects. An agent that runs its arguments as a program (`ip netns exec`,
 * `docker exec`) cannot take that, so dlaunch becomes the agent itself:
 * `dlaunch --mpi-rsh HOST CMDLINE...` runs `RSH... HOST sh -c CMDLINE`, RSH
 * coming from DLAUNCH_MPI_RSH. ssh and rsh are given to mpirun as they are. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dlaunch.h"

#define MPI_RSH_ENV "DLAUNCH_MPI_RSH"
#define MAX_WORDS   64

/* Splits text (modified) at blanks into words[n..]; returns the new count, or
 * -1 when there are more than fit. */
static int split_words(char *text, char **words, int n, int cap)
{
    char *save = NULL;

    for (char *w = strtok_r(text, " \t", &save); w != NULL; w = strtok_r(NULL, " \t", &save)) {
        if (n >= cap) {
            return -1;
        }
        words[n++] = w;
    }
    return n;
}

/* Does the rsh command take one shell command line (ssh, rsh)? */
static int rsh_takes_cmdline(const char *rsh)
{
    size_t len = strcspn(rsh, " \t");
    const char *base = rsh;

    for (const char *p = rsh; p < rsh + len; p++) {
        base = *p == '/' ? p + 1 : base;
    }
    len -= (size_t)(base - rsh);
    return (len == 3 && (strncmp(base, "ssh", 3) == 0 || strncmp(base, "rsh", 3) == 0));
}

/* The plm_rsh_agent value for --rsh into agent (cap bytes): the command itself,
 * or this dlaunch as the shim (which reads the command from DLAUNCH_MPI_RSH). */
static int rsh_agent(const char *rsh, char *agent, size_t cap)
{
    char self[PATH_MAX];
    ssize_t len;

    if (rsh_takes_cmdline(rsh)) {
        snprintf(agent, cap, "%s", rsh);
        return 0;
    }
    len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len <= 0) {
        fprintf(stderr, "dlaunch: --mpi --rsh: cannot find this program: %s\n",
                strerror(errno));
        return -1;
    }
    self[len] = '\0';
    if (strpbrk(self, " \t") != NULL || (size_t)snprintf(agent, cap, "%s --mpi-rsh", self) >= cap) {
        /* Open MPI splits the agent at blanks. */
        fprintf(stderr, "dlaunch: --mpi --rsh '%s' needs dlaunch at a path without blanks "
                "(it is %s)\n", rsh, self);
        return -1;
    }
    setenv(MPI_RSH_ENV, rsh, 1);
    return 0;
}

/* Prints the command the way a shell would take it back. */
static void print_command(char **av)
{
    for (int i = 0; av[i] != NULL; i++) {
        int plain = av[i][0] != '\0' && strpbrk(av[i], " \t'\"\\$`*?;&|<>()") == NULL;

        printf("%s%s%s%s", i ? " " : "", plain ? "" : "'", av[i], plain ? "" : "'");
    }
    printf("\n");
}

int dl_mpi_exec(const dl_options_t *opt)
{
    extern char **environ;
    static char xopt[] = "-x"; /* marks the names strndup'd below */
    const char *mpirun = opt->mpirun ? opt->mpirun : "mpirun";
    char np[16], agent[PATH_MAX + 32], **av, *words = strdup(mpirun);
    size_t cap = 32 + MAX_WORDS;
    int n = 0, rc = 127;

    if (opt->ifname != NULL) {
        setenv("DCOMM_IFNAME", opt->ifname, 1); /* the ranks' tcp transport too */
    }
    for (char **e = environ; *e != NULL; e++) {
        cap += 2;
    }
    for (char **a = opt->argv; *a != NULL; a++) {
        cap++;
    }
    av = calloc(cap, sizeof(*av));
    if (av == NULL || words == NULL) {
        fprintf(stderr, "dlaunch: out of memory\n");
        rc = 1;
        goto out;
    }
    /* The command is split at blanks, like --rsh: "mpirun --mca btl self,tcp". */
    n = split_words(words, av, 0, MAX_WORDS);
    if (n <= 0) {
        fprintf(stderr, "dlaunch: --mpirun needs a command (of at most %d words)\n",
                MAX_WORDS);
        rc = DL_EXIT_USAGE;
        goto out;
    }
    if (geteuid() == 0) {
        av[n++] = "--allow-run-as-root"; /* Open MPI refuses root otherwise */
    }
    av[n++] = "--oversubscribe";
    if (opt->np > 0) { /* else every slot of the hosts, as without --mpi */
        snprintf(np, sizeof(np), "%d", opt->np);
        av[n++] = "-np";
        av[n++] = np;
    }
    if (opt->hosts_arg != NULL) {
        av[n++] = "--host";
        av[n++] = (char *)opt->hosts_arg;
    } else if (opt->hostfile != NULL) {
        av[n++] = "--hostfile";
        av[n++] = (char *)opt->hostfile;
    }
    if (opt->rsh_given) {
        if (rsh_agent(opt->rsh, agent, sizeof(agent)) != 0) {
            rc = DL_EXIT_USAGE;
            goto out;
        }
        av[n++] = "--mca";
        av[n++] = "plm_rsh_agent";
        av[n++] = agent;
    }
    if (opt->ifname != NULL) {
        /* mpirun's daemons and MPI's tcp traffic on that interface too. */
        av[n++] = "--mca";
        av[n++] = "oob_tcp_if_include";
        av[n++] = (char *)opt->ifname;
        av[n++] = "--mca";
        av[n++] = "btl_tcp_if_include";
        av[n++] = (char *)opt->ifname;
    }
    if (opt->output_dir != NULL) {
        /* As horovodrun --mpi does: Open MPI's own per-rank files there. */
        av[n++] = "--output-filename";
        av[n++] = (char *)opt->output_dir;
    }
    for (char **e = environ; *e != NULL; e++) {
        if (strncmp(*e, "DCOMM_", 6) == 0 || strncmp(*e, "HOROVOD_", 8) == 0) {
            av[n++] = xopt;
            av[n++] = strndup(*e, strcspn(*e, "="));
        }
    }
    for (char **a = opt->argv; *a != NULL; a++) {
        av[n++] = *a;
    }
    av[n] = NULL;
    if (opt->dry_run) {
        if (opt->rsh_given && !rsh_takes_cmdline(opt->rsh)) {
            printf("%s='%s' ", MPI_RSH_ENV, opt->rsh);
        }
        print_command(av);
        rc = 0;
        goto out;
    }
    DL_VLOG("handing the job to %s\n", av[0]);
    execvp(av[0], av);
    fprintf(stderr, "dlaunch: --mpi: cannot run %s: %s\n", av[0], strerror(errno));
out:
    for (int k = 1; k < n; k++) {
        if (av[k - 1] == xopt) {
            free(av[k]);
        }
    }
    free(av);
    free(words);
    return rc;
}

int dl_mpi_rsh(int argc, char **argv)
{
    const char *rsh = getenv(MPI_RSH_ENV);
    char *words = rsh ? strdup(rsh) : NULL, *line, *av[MAX_WORDS + 5];
    size_t len = 1;
    int n;

    if (argc < 2) {
        fprintf(stderr, "dlaunch --mpi-rsh: usage: dlaunch --mpi-rsh HOST COMMAND...\n");
        free(words);
        return DL_EXIT_USAGE;
    }
    if (words == NULL) {
        fprintf(stderr, "dlaunch --mpi-rsh: %s is not set (dlaunch --mpi --rsh sets it)\n",
                MPI_RSH_ENV);
        return DL_EXIT_USAGE;
    }
    n = split_words(words, av, 0, MAX_WORDS);
    if (n <= 0) {
        fprintf(stderr, "dlaunch --mpi-rsh: %s='%s' has %s words\n", MPI_RSH_ENV, rsh,
                n == 0 ? "no" : "too many");
        free(words);
        return DL_EXIT_USAGE;
    }
    /* The command line is the rest, joined with blanks as ssh joins it. */
    for (int i = 1; i < argc; i++) {
        len += strlen(argv[i]) + 1;
    }
    line = calloc(1, len);
    if (line == NULL) {
        fprintf(stderr, "dlaunch --mpi-rsh: out of memory\n");
        free(words);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        strcat(strcat(line, i > 1 ? " " : ""), argv[i]);
    }
    av[n++] = argv[0];
    av[n++] = "sh";
    av[n++] = "-c";
    av[n++] = line;
    av[n] = NULL;
    execvp(av[0], av);
    fprintf(stderr, "dlaunch --mpi-rsh: cannot run %s: %s\n", av[0], strerror(errno));
    free(line);
    free(words);
    return 127;
}
