#!/usr/bin/env python3
"""Horovod 0.28.1's elastic scenarios (test/integration/elastic_common.py)
through dlaunch's elastic driver, with Horovod's training script
(data/elastic_torch_main.py) unchanged but its import line, which is rewritten
into a temporary directory to `import dcomm.torch as hvd`. Each scenario checks
what elastic_common.py asserts (the epochs' log lines: start_rank, size,
hostname, rendezvous) or, where Horovod expects the job to fail, that dlaunch
fails and names the cause. "Hosts" are localhost and 127.0.0.1, two names of
this machine. Every run has a deadline; no process of a run may outlive it.

usage: horovod_elastic.py DLAUNCH [SCENARIO...]   (exit 77: suite or torch missing)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# As horovod_torch.sh: the suite beside the project, or DCOMM_HOROVOD_COMPAT.
SUITE = os.path.join(os.environ.get("DCOMM_HOROVOD_COMPAT") or os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "shared", "compat", "horovod-0.28.1")),
    "test", "integration")
DEADLINE_S = 120
PY = os.environ.get("PYTHON", sys.executable)

# Instead of `import psutil` where it is not installed: the script uses only
# psutil.Process(pid).kill().
PSUTIL_SHIM = '''import os, signal
class Process:
    def __init__(self, pid):
        self.pid = pid
    def kill(self):
        os.kill(self.pid, signal.SIGKILL)
'''


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def discovery_script(path, logfile, schedule):
    """elastic_common's discovery script: the hosts of the schedule's step for
    the number of epochs logged so far (the last step: every later epoch)."""
    lines = ["#!/bin/sh", "epoch=0",
             '[ -f %s ] && epoch=$(wc -l < %s | tr -d "[:space:]")' % (logfile, logfile),
             'case "$epoch" in']
    for epoch, hosts in schedule:
        lines.append('%s) %s ;;' % ("*" if epoch is None else epoch,
                                    "; ".join("echo %s" % h for h in hosts)))
    lines.append("esac")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o755)


def run_job(dlaunch, work, script, *, discovery_schedule=None, hosts=None, exit_schedule=None,
            exit_mode="exception", num_proc=2, min_num_proc=2, max_num_proc=4, reset_limit=None,
            cooldown_range=None, epoch_wait=None, epochs=None, elastic_timeout=None):
    """One elastic_common._run: returns (dlaunch's exit code, its stderr, the log lines)."""
    logfile = os.path.join(work, "log.%d.txt" % time.monotonic_ns())
    cmd = [dlaunch, "-np", str(num_proc), "--min-np", str(min_num_proc),
           "--discovery-interval", "0.05"]
    if hosts is not None:
        cmd += ["-H", hosts]
    else:
        disc = os.path.join(work, "discover.sh")
        discovery_script(disc, logfile, discovery_schedule)
        cmd += ["--host-discovery-script", disc, "--max-np", str(max_num_proc)]
    if reset_limit is not None:
        cmd += ["--reset-limit", str(reset_limit)]
    if cooldown_range is not None:
        cmd += ["--blacklist-cooldown-range", str(cooldown_range[0]), str(cooldown_range[1])]
    if elastic_timeout is not None:
        cmd += ["--elastic-timeout", str(elastic_timeout)]
    cmd += [PY, script, "--logfile", logfile]
    if discovery_schedule:
        cmd += ["--discovery-schedule", json.dumps(discovery_schedule)]
    if epoch_wait:
        cmd += ["--epoch-wait", json.dumps(epoch_wait)]
    if epochs:
        cmd += ["--epochs", json.dumps(epochs)]
    if exit_schedule:
        cmd += ["--exit-schedule", json.dumps(exit_schedule), "--exit-mode", exit_mode]
    env = dict(os.environ, ELASTIC_SCENARIO_ID="%d.%d" % (os.getpid(), time.monotonic_ns()))
    env.pop("DCOMM_HOROVOD_COMPAT", None)  # ours, not a setting of the ranks
    print("$", " ".join(cmd), flush=True)
    try:
        p = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True,
                           timeout=DEADLINE_S)
    except subprocess.TimeoutExpired as e:
        sys.stdout.write((e.stdout or b"").decode() if isinstance(e.stdout, bytes)
                         else e.stdout or "")
        raise Failed("the job hung (deadline %d s)" % DEADLINE_S)
    sys.stdout.write(p.stdout[-4000:])
    sys.stdout.write(p.stderr[-4000:])
    left = leftovers(env["ELASTIC_SCENARIO_ID"])
    check(not left, "processes left behind: %s" % left)
    results = []
    if os.path.exists(logfile):
        with open(logfile) as f:
            results = [json.loads(line) for line in f if line.strip()]
    print("logfile:", *results, sep="\n  ", flush=True)
    return p.returncode, p.stderr, results


def leftovers(marker):
    time.sleep(0.3)
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if ("ELASTIC_SCENARIO_ID=%s" % marker).encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def expect(results, n, rows):
    check(len(results) == n, "expected %d epochs logged, got %d" % (n, len(results)))
    for i, want in rows:
        for key, value in want.items():
            check(results[i][key] == value, "epoch %d: %s is %r, expected %r"
                  % (i, key, results[i][key], value))


def expect_failure(rc, err, pattern):
    check(rc != 0, "dlaunch exited 0; Horovod's scenario expects the job to fail")
    check(re.search(pattern, err), "dlaunch did not name the cause /%s/" % pattern)


# ---- the scenarios of elastic_common.BaseElasticTests --------------------------------

def hosts_added_and_removed(run):
    for slots, num_proc, min_num_proc, max_num_proc in [(2, 2, 2, 4), (1, 1, 1, 2)]:
        schedule = [(0, ["localhost:%d" % slots]),
                    (1, ["localhost:%d" % slots, "127.0.0.1:%d" % slots]),
                    (None, ["127.0.0.1:%d" % slots])]
        rc, _, res = run(discovery_schedule=schedule, num_proc=num_proc,
                         min_num_proc=min_num_proc, max_num_proc=max_num_proc)
        check(rc == 0, "dlaunch exited %d" % rc)
        expect(res, 3, [(0, dict(start_rank=0, size=slots, hostname="localhost")),
                        (1, dict(start_rank=0, size=slots * 2, hostname="localhost")),
                        (2, dict(start_rank=slots, size=slots, hostname="127.0.0.1",
                                 rendezvous=3))])


def _failure_rows():
    return [(0, dict(start_rank=0, size=4, rendezvous=1)),
            (1, dict(start_rank=2, size=2, rendezvous=2)),
            (2, dict(start_rank=2, size=2, rendezvous=2))]


def single_rank_failure(run):
    for exit_mode in ["exception", "kill"]:
        rc, _, res = run(discovery_schedule=[(None, ["localhost:2", "127.0.0.1:2"])],
                         exit_schedule={str((1, 0)): [0]}, exit_mode=exit_mode)
        check(rc == 0, "dlaunch exited %d" % rc)
        expect(res, 3, _failure_rows())


def fault_tolerance_without_scaling(run):
    for exit_mode in ["exception", "kill"]:
        rc, _, res = run(hosts="localhost:2,127.0.0.1:2", exit_schedule={str((1, 0)): [0]},
                         exit_mode=exit_mode)
        check(rc == 0, "dlaunch exited %d" % rc)
        expect(res, 3, _failure_rows())


def all_ranks_failure(run):
    rc, err, _ = run(discovery_schedule=[(None, ["localhost:2", "127.0.0.1:2"])],
                     exit_schedule={str((1, 0)): [0, 1, 2, 3]})
    expect_failure(rc, err, r"no host is left to run workers on")


def all_hosts_blacklisted(run):
    rc, err, _ = run(discovery_schedule=[(None, ["localhost:2", "127.0.0.1:2"])],
                     exit_schedule={str((1, 0)): [0, 2]})
    expect_failure(rc, err, r"no host is left to run workers on")


def min_hosts_timeout(run):
    rc, err, _ = run(discovery_schedule=[(None, ["localhost:2", "127.0.0.1:2"])],
                     exit_schedule={str((1, 0)): [0]}, num_proc=4, min_num_proc=4,
                     elastic_timeout=1)
    expect_failure(rc, err, r"only 2 workers for 1 s \(--elastic-timeout\), fewer than "
                            r"--min-np 4")


def reset_limit(run):
    schedule = [(0, ["localhost:2"]), (1, ["localhost:2", "127.0.0.1:2"]),
                (None, ["127.0.0.1:2"])]
    rc, err, _ = run(discovery_schedule=schedule, num_proc=2, min_num_proc=2, max_num_proc=4,
                     reset_limit=1, elastic_timeout=1)
    expect_failure(rc, err, r"the job was reset 2 times, more than --reset-limit 1")
    rc, _, res = run(discovery_schedule=schedule, num_proc=2, min_num_proc=2, max_num_proc=4,
                     reset_limit=2, elastic_timeout=1)
    check(rc == 0, "dlaunch exited %d" % rc)
    check(len(res) == 3, "expected 3 epochs logged, got %d" % len(res))


def resurrecting_blacklisted_hosts(run):
    """Horovod asserts sizes 4, 2, 2, ?, 2 and rendezvous 1, 2, 2, ?, 2: the
    host that failed never returns within the 5 short epochs. Here the host
    returns after its cooldown (1 s, the lower bound) when that ends before
    training does; when it is back by epoch 3, its new worker (started as rank
    3 again) fails again there and the host's second cooldown is 2 s (doubled,
    the upper bound). Which epochs see 2 or 4 workers depends on the machine's
    speed, so what holds whatever the timing is checked: five epochs, none
    repeated; the first at 4 workers, rendezvous 1; a round of the 2
    survivors; rank 0 always the worker that started as rank 0; each size 2
    or 4, rendezvous growing with each resize; the cooldowns 1 s then 2 s."""
    rc, err, res = run(discovery_schedule=[(None, ["localhost:2", "127.0.0.1:2"])],
                       exit_schedule={str((1, 0)): [3], str((3, 0)): [3]},
                       exit_mode="exception", epoch_wait=0.25, epochs=5,
                       cooldown_range=[1, 2])
    check(rc == 0, "dlaunch exited %d" % rc)
    expect(res, 5, [(0, dict(start_rank=0, size=4, rendezvous=1))])
    check([r["epoch"] for r in res] == list(range(5)), "epochs logged: %s"
          % [r["epoch"] for r in res])
    sizes, rdv = [r["size"] for r in res], [r["rendezvous"] for r in res]
    check(all(r["start_rank"] == 0 for r in res), "rank 0 changed hands")
    check(set(sizes) <= {2, 4}, "sizes %s" % sizes)
    check(all(b > a if sb != sa else b >= a
              for a, b, sa, sb in zip(rdv, rdv[1:], sizes, sizes[1:])),
          "rendezvous %s do not follow the sizes %s" % (rdv, sizes))
    check("round 2: 2 workers" in err, "no round of the 2 survivors after the failure")
    check("host 127.0.0.1 blacklisted for 1 s (failure 1 there)" in err,
          "no 1 s cooldown after the first failure")
    if "(failure 2 there)" in err:  # the host was back by epoch 3 and failed again
        check("host 127.0.0.1 blacklisted for 2 s (failure 2 there)" in err,
              "the second cooldown is not the doubled 2 s")


SCENARIOS = [hosts_added_and_removed, single_rank_failure, fault_tolerance_without_scaling,
             all_ranks_failure, all_hosts_blacklisted, min_hosts_timeout, reset_limit,
             resurrecting_blacklisted_hosts]


def prepare(work):
    """Horovod's script with its import line rewritten; a psutil stand-in when
    psutil is not installed."""
    src = os.path.join(SUITE, "data", "elastic_torch_main.py")
    with open(src) as f:
        text = f.read()
    new = text.replace("import horovod.torch as hvd", "import dcomm.torch as hvd")
    check(new != text, "the import line of %s was not found" % src)
    script = os.path.join(work, "elastic_torch_main.py")
    with open(script, "w") as f:
        f.write(new)
    try:
        import psutil  # noqa: F401
    except ImportError:
        with open(os.path.join(work, "psutil.py"), "w") as f:
            f.write(PSUTIL_SHIM)
    return script


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    dlaunch, wanted = sys.argv[1], sys.argv[2:]
    if not os.path.exists(os.path.join(SUITE, "data", "elastic_torch_main.py")):
        print("SKIP: Horovod's integration tests are not at %s" % SUITE)
        return 77
    try:
        import torch  # noqa: F401
    except ImportError:
        print("SKIP: torch is not installed")
        return 77
    work = tempfile.mkdtemp(prefix="dcomm-elastic-")
    failed = []
    try:
        script = prepare(work)
        os.environ["PYTHONPATH"] = work + os.pathsep + os.environ.get("PYTHONPATH", "")

        def run(**kw):
            return run_job(dlaunch, work, script, **kw)

        for scenario in SCENARIOS:
            if wanted and scenario.__name__ not in wanted:
                continue
            print("==== %s" % scenario.__name__, flush=True)
            t0 = time.monotonic()
            try:
                scenario(run)
                print("==== %s passed (%.1f s)" % (scenario.__name__, time.monotonic() - t0))
            except Failed as e:
                print("==== %s FAILED: %s" % (scenario.__name__, e))
                failed.append(scenario.__name__)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("%s" % ("FAILED: " + ", ".join(failed) if failed else "all scenarios passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
