#!/usr/bin/env python3
"""dcomm.elastic for NumPy users, through dlaunch's elastic driver.

Driver (no arguments but DLAUNCH): runs this file as the workers of
`dlaunch -H 127.0.0.1:1,localhost:2 --min-np 2`. The worker that starts as
rank 0 (alone on 127.0.0.1) is killed at step 5 of its first round; the two
others must restore the last commit, re-init as ranks 0 and 1 of 2 (the one
started as rank 1 now rank 0), have their reset callback called, and finish
all steps with the same state: each committed step adds the allreduce
average of ones (1.0) to the weights, so they end at STEPS exactly.
Checks dlaunch's exit code, each survivor's last line, and that nothing is
left behind; the whole run is under a deadline.

usage: elastic_numpy.py DLAUNCH            (driver)
       elastic_numpy.py --worker STEPS     (under dlaunch)
"""
import os
import signal
import subprocess
import sys
import time

STEPS = 12
KILL_STEP = 5
DEADLINE_S = 90


def worker(steps):
    import numpy as np
    import dcomm
    import dcomm.elastic as elastic

    start_rank = int(os.environ["HOROVOD_RANK"])
    dcomm.init()
    state = elastic.ObjectState(step=0, weights=np.zeros(7))
    resets = []
    state.register_reset_callbacks([lambda: resets.append(dcomm.size())])
    first_life = [True]

    @elastic.run
    def train(state):
        while state.step < steps:
            if start_rank == 0 and first_life[0] and state.step == KILL_STEP:
                os.kill(os.getpid(), signal.SIGKILL)
            grad = dcomm.allreduce(np.ones(7), op=dcomm.Average, name="grad")
            state.weights = state.weights + grad
            state.step += 1
            state.commit()
        return state.weights

    weights = train(state)
    print("start_rank %d: rank %d of %d, step %d, weights %s, resets %s"
          % (start_rank, dcomm.rank(), dcomm.size(), state.step,
             ",".join("%g" % w for w in sorted(set(weights))), resets), flush=True)


def driver(dlaunch):
    marker = "ELASTIC_NUMPY_ID=%d.%d" % (os.getpid(), time.monotonic_ns())
    env = dict(os.environ)
    env[marker.split("=")[0]] = marker.split("=")[1]
    cmd = [dlaunch, "-H", "127.0.0.1:1,localhost:2", "--min-np", "2", sys.executable,
           os.path.abspath(__file__), "--worker", str(STEPS)]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        print("FAIL: the job hung (deadline %d s)" % DEADLINE_S)
        return 1
    sys.stdout.write(p.stdout)
    sys.stdout.write(p.stderr[-3000:])
    failures = []
    if p.returncode != 0:
        failures.append("dlaunch exited %d" % p.returncode)
    for start, rank in ((1, 0), (2, 1)):
        want = ("[%d] start_rank %d: rank %d of 2, step %d, weights %d, resets [2]"
                % (start, start, rank, STEPS, STEPS))
        if want not in p.stdout:
            failures.append("missing: %s" % want)
    if "round 2: 2 workers" not in p.stderr:
        failures.append("no second round of 2 workers")
    time.sleep(0.3)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if marker.encode() in f.read() and int(pid) != os.getpid():
                    failures.append("process %s left behind" % pid)
        except OSError:
            pass
    print("\n".join("FAIL: " + f for f in failures) or "elastic numpy passed")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]))
    elif len(sys.argv) == 2:
        sys.exit(driver(sys.argv[1]))
    else:
        print(__doc__)
        sys.exit(2)
