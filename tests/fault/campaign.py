#!/usr/bin/python3
"""Fault campaign: sequential trials, each a fresh dlaunch job of fault_worker
with one fault, and the checks that the job ends the way dcomm promises.

Kinds:
  kill       a rank dies by SIGKILL: raised by itself at a chosen op of a phase
             (init, slow: negotiated, fast: cached, large: mid-transfer,
             shmdirect, hier: hierarchical over two network namespaces,
             shutdown) or sent by the driver at a random time (external)
  stop       a rank stops itself (SIGSTOP) at a chosen op: the others must fail
             within DCOMM_TIMEOUT + 1 s
  partition  ranks in two network namespaces, the veth link between them
             dropping everything (tc netem loss 100%, or a tc pfifo of length 0
             where the kernel has no netem) mid-allreduce: every rank
             fails within DCOMM_TIMEOUT + 2 s
  launcher   dlaunch is killed (SIGKILL) mid-allreduce: every rank fails
             naming dlaunch and exits

Each trial checks: every surviving rank's failing call returns within its bound
and its error names the cause (the faulted rank; dlaunch for a killed
launcher; a rank for a partition); the job exits; no process of the job is
left (pgrep -f on a marker in the ranks' arguments); no dcomm entry is left in
/dev/shm or /tmp. One JSON line per trial goes to --log; the summary table
gives per kind trials, passes, hangs and the p50/p99 detection latency (fault
to each survivor's error), then 'N passed, N failed'. Exit 0 when all passed.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ALL_KINDS = ["kill", "stop", "partition", "launcher"]
KILL_PHASES = ["init", "slow", "fast", "large", "shmdirect", "hier", "shutdown", "external"]
STOP_PHASES = ["slow", "fast", "large"]
NET_A, NET_B = "10.79.0.1", "10.79.0.2"


def log(msg):
    print(msg, flush=True)


class Netns:
    """Two network namespaces joined by a veth pair (dceth0 on both sides)."""

    def __init__(self):
        tag = "%d" % os.getpid()
        self.ns = ["dcfa1-" + tag, "dcfa2-" + tag]
        self.veth = ("dcfa" + tag, "dcfb" + tag)
        self.ok = False
        self.why = ""
        self.drop = None

    def sh(self, *args):
        return subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=30)

    def setup(self):
        if os.geteuid() != 0:
            self.why = "not root"
            return False
        if shutil.which("ip") is None:
            self.why = "no ip (iproute2)"
            return False
        a, b = self.ns
        va, vb = self.veth
        steps = [["ip", "netns", "add", a], ["ip", "netns", "add", b],
                 ["ip", "link", "add", va, "type", "veth", "peer", "name", vb],
                 ["ip", "link", "set", va, "netns", a], ["ip", "link", "set", vb, "netns", b],
                 ["ip", "-n", a, "link", "set", va, "name", "dceth0"],
                 ["ip", "-n", b, "link", "set", vb, "name", "dceth0"],
                 ["ip", "-n", a, "addr", "add", NET_A + "/24", "dev", "dceth0"],
                 ["ip", "-n", b, "addr", "add", NET_B + "/24", "dev", "dceth0"],
                 ["ip", "-n", a, "link", "set", "dceth0", "up"],
                 ["ip", "-n", b, "link", "set", "dceth0", "up"],
                 ["ip", "-n", a, "link", "set", "lo", "up"],
                 ["ip", "-n", b, "link", "set", "lo", "up"]]
        for st in steps:
            r = self.sh(*st)
            if r.returncode != 0:
                self.why = "%s: %s" % (" ".join(st), r.stdout.strip())
                self.teardown()
                return False
        # Every packet out of either end dropped: netem loss 100% where the
        # kernel has netem, else a FIFO of length 0 (here: no netem, nft or
        # iptables in the kernel of the test machine).
        for drop in (["netem", "loss", "100%"], ["pfifo", "limit", "0"]):
            r = self.sh("ip", "netns", "exec", a, "tc", "qdisc", "add", "dev", "dceth0", "root",
                        *drop)
            if r.returncode == 0:
                self.sh("ip", "netns", "exec", a, "tc", "qdisc", "del", "dev", "dceth0", "root")
                self.drop = drop
                break
        else:
            self.why = "tc can drop nothing on the link: %s" % r.stdout.strip()
            self.teardown()
            return False
        self.ok = True
        return True

    def partition(self, on):
        """Drops (on) or passes again every packet on the link, both sides."""
        for ns in self.ns:
            if on:
                r = self.sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "dceth0",
                            "root", *self.drop)
                if r.returncode != 0:
                    raise RuntimeError("tc %s in %s: %s" % (" ".join(self.drop), ns,
                                                           r.stdout.strip()))
            else:
                self.sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "dceth0", "root")

    def pids(self):
        out = []
        for ns in self.ns:
            r = self.sh("ip", "netns", "pids", ns)
            out += [p for p in r.stdout.split() if p.isdigit()]
        return out

    def teardown(self):
        for ns in self.ns:
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        self.ok = False


def leftovers():
    """dcomm entries in /dev/shm and /tmp. dcomm's shared memory is memfd and
    neither libdcomm nor dlaunch makes temporary files, so none is expected;
    /tmp/dcomm-test-* are unit tests' directories (tests/unit), which may run
    beside the campaign."""
    names = set()
    for d in ("/dev/shm", "/tmp"):
        try:
            names |= {os.path.join(d, n) for n in os.listdir(d)
                      if "dcomm" in n and not n.startswith("dcomm-test-")}
        except OSError:
            pass
    return names


def marker_pids(marker):
    r = subprocess.run(["pgrep", "-f", marker], stdout=subprocess.PIPE, text=True)
    return [int(p) for p in r.stdout.split() if p.isdigit()]


def read_records(d, np_):
    recs = {}
    for r in range(np_):
        lines = []
        try:
            with open(os.path.join(d, "rank%d.txt" % r)) as f:
                lines = f.read().splitlines()
        except OSError:
            pass
        recs[r] = lines
    return recs


def first(lines, tag):
    for ln in lines:
        if ln.startswith(tag + " "):
            return ln.split(" ", 1)[1]
    return None


def pct(vals, q):
    if not vals:
        return None
    s = sorted(vals)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]


class Campaign:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.results = []
        self.net = None
        self.transports = ["shm", "tcp"]
        ucx = os.path.join(os.path.dirname(a.dlaunch), "..", "libdcomm-ucx.so")
        if os.path.exists(ucx) and not a.no_ucx:
            self.transports.append("ucx")
        self.timeout_s = a.timeout_ms / 1000.0

    # ---- one trial ----------------------------------------------------------
    def plan(self, kind):
        rng = self.rng
        t = {"kind": kind, "np": rng.randint(2, 4), "transport": rng.choice(self.transports),
             "phase": "none", "rank": None, "op": None, "delay_us": 0, "hosts": None}
        if kind == "kill":
            phases = [p for p in KILL_PHASES if (p != "hier" or self.net_ok()) and
                      (not self.a.phases or p in self.a.phases.split(","))]
            t["phase"] = rng.choice(phases)
        elif kind == "stop":
            t["phase"] = rng.choice(STOP_PHASES)
        elif kind == "partition":
            t["phase"] = "partition"
        elif kind == "launcher":
            t["phase"] = "launcher"
        if t["phase"] == "shmdirect":
            t["transport"] = "shm"
        if t["phase"] in ("hier", "partition"):
            t["transport"] = rng.choice([x for x in self.transports if x != "shm"])
            a, b = (2, 2) if t["phase"] == "hier" else rng.choice([(1, 1), (1, 2), (2, 1), (2, 2)])
            t["np"], t["hosts"] = a + b, (a, b)
        if t["phase"] not in ("partition", "launcher"):
            t["rank"] = rng.randrange(t["np"])
        if t["phase"] in ("slow", "fast", "large", "shmdirect", "hier"):
            t["op"] = rng.randrange(0 if t["phase"] != "fast" else 3, 12)
        if t["phase"] in ("large", "shmdirect", "hier"):
            t["delay_us"] = rng.randrange(0, 20000)
        elif t["phase"] == "init":
            t["delay_us"] = rng.randrange(0, 60000)
        elif t["phase"] == "shutdown":
            t["delay_us"] = rng.randrange(0, 3000)
        t["ext_delay_s"] = rng.uniform(0.0, 0.3)
        return t

    def net_ok(self):
        if self.net is None:
            self.net = Netns()
            if not self.net.setup():
                log("note: no network namespaces (%s): no hier/partition trials" % self.net.why)
        return self.net.ok

    def run_trial(self, n, t):
        a = self.a
        marker = "faultcampaign-%d-%d" % (os.getpid(), n)
        d = tempfile.mkdtemp(prefix="fault-trial-")
        phase = t["phase"]
        wphase = {"shmdirect": "large", "hier": "large", "external": "none", "partition": "none",
                  "launcher": "none"}.get(phase, phase)
        args = [a.worker, marker, "FAULT_DIR=" + d, "FAULT_PHASE=" + wphase,
                "FAULT_SIGNAL=" + ("STOP" if t["kind"] == "stop" else "KILL"),
                "FAULT_OPS=" + ("0" if wphase == "none" else "14"),
                "FAULT_LARGE=%d" % (1 << 21 if t["transport"] != "shm" else 1 << 22)]
        if t["rank"] is not None and phase != "external":
            args += ["FAULT_RANK=%d" % t["rank"], "FAULT_DELAY_US=%d" % t["delay_us"]]
            if t["op"] is not None:
                args.append("FAULT_OP=%d" % t["op"])
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("DCOMM_") or k.startswith("FAULT_"):
                del env[k]
        tp = t["transport"]
        env["DCOMM_TIMEOUT"] = "%dms" % a.timeout_ms
        env["DCOMM_TRANSPORTS"] = tp if t["hosts"] is None else "shm," + tp
        if phase == "shmdirect":
            env["DCOMM_TUNE"] = "allreduce:0-inf:shmdirect"
        elif phase == "hier":
            env["DCOMM_TUNE"] = "allreduce:0-inf:hier"
        grace = "%.1f" % (self.timeout_s + 3)
        if t["hosts"] is not None:
            ns = self.net.ns
            cmd = ["ip", "netns", "exec", ns[0], a.dlaunch, "-H",
                   "%s:%d,%s:%d" % (ns[0], t["hosts"][0], ns[1], t["hosts"][1]),
                   "--rsh", "ip netns exec", "--ifname", "dceth0", "--grace", grace, "--"] + args
        else:
            cmd = [a.dlaunch, "-np", str(t["np"]), "--grace", grace, "--"] + args
        bound = self.timeout_s + (2.0 if phase == "partition" else 1.0)
        if t["kind"] == "kill" and a.kill_bound_ms > 0:
            bound = a.kill_bound_ms / 1000.0
        hang_after = bound + self.timeout_s + 20.0
        before = leftovers()
        out = open(os.path.join(d, "dlaunch.out"), "w")
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        res = dict(t)
        res.update(n=n, outcome="pass", why=[], notes=[], latencies=[], statuses=[])
        t_fault = None
        hung = False
        try:
            if phase in ("external", "partition", "launcher"):
                # after every rank is in the loop (READY), a random delay
                ready_by = time.monotonic() + 60
                while time.monotonic() < ready_by and p.poll() is None:
                    recs = read_records(d, t["np"])
                    if all(first(recs[r], "READY") for r in recs):
                        break
                    time.sleep(0.02)
                else:
                    res["why"].append("ranks never became ready")
                if p.poll() is None and not res["why"]:
                    time.sleep(t["ext_delay_s"])
                    if phase == "external":
                        pid = int(first(read_records(d, t["np"])[t["rank"]], "PID"))
                        t_fault = time.monotonic()
                        os.kill(pid, signal.SIGKILL)
                    elif phase == "launcher":
                        t_fault = time.monotonic()
                        os.kill(p.pid, signal.SIGKILL)
                    else:
                        t_fault = time.monotonic()
                        self.net.partition(True)
            stopped_killed = False
            while p.poll() is None:
                if time.monotonic() - t0 > hang_after:
                    hung = True
                    break
                if t["kind"] == "stop" and not stopped_killed:
                    # Once every survivor has reported, the stopped rank can go
                    # (else dlaunch's grace period ends it).
                    recs = read_records(d, t["np"])
                    if all(first(recs[r], "ERR") for r in recs if r != t["rank"]):
                        pid = first(recs[t["rank"]], "PID")
                        if pid:
                            try:
                                os.kill(int(pid), signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                        stopped_killed = True
                time.sleep(0.02)
            if phase == "launcher" and not hung:
                # dlaunch is gone: the orphaned ranks must go by themselves
                wait_by = time.monotonic() + bound + 5
                while marker_pids(marker) and time.monotonic() < wait_by:
                    time.sleep(0.05)
        finally:
            if phase == "partition":
                self.net.partition(False)
            if p.poll() is None and not hung:
                # the driver itself failed (an exception, SIGTERM): take the job down
                kill_job(p, marker)
        res["wall_s"] = round(time.monotonic() - t0, 3)
        res["rc"] = p.returncode
        if hung:
            res["outcome"] = "hang"
            res["why"].append("the job did not end within %.0f s" % hang_after)
            kill_job(p, marker)
        out.close()
        recs = read_records(d, t["np"])
        self.check(res, recs, t_fault, bound)
        # nothing of the job may be left
        left = []
        for _ in range(20):
            left = [x for x in marker_pids(marker) if x != os.getpid()]
            if not left:
                break
            time.sleep(0.05)
        if left:
            res["why"].append("processes left: %s" % " ".join(
                "%d(%s)" % (x, cmdline(x)) for x in left))
            for x in left:
                try:
                    os.kill(x, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if t["hosts"] is not None:
            nsp = self.net.pids()
            if nsp:
                res["why"].append("processes left in the namespaces: %s" % " ".join(
                    "%s(%s)" % (x, cmdline(int(x))) for x in nsp))
                for x in nsp:
                    try:
                        os.kill(int(x), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
        new = leftovers() - before
        if new:
            res["why"].append("files left: %s" % " ".join(sorted(new)))
        if res["why"] and res["outcome"] == "pass":
            res["outcome"] = "fail"
        if res["outcome"] == "fail" and self.known(t):  # a hang is never expected
            res["outcome"] = "xfail"
        if res["outcome"] != "pass" and res["outcome"] != "missed" and a.keep_failed:
            res["dir"] = d
            res["cmd"] = " ".join("'%s'" % c if " " in c else c for c in cmd)
            res["env"] = {k: v for k, v in env.items() if k.startswith("DCOMM_")}
        else:
            shutil.rmtree(d, ignore_errors=True)
        return res

    def check(self, res, recs, t_fault, bound):
        t = res
        phase = t["phase"]
        faulted = t["rank"]
        if faulted is not None and phase != "external":
            f = first(recs[faulted], "FAULT")
            if f is None:
                # the job finished before the fault could land (init/shutdown delays)
                if first(recs[faulted], "DONE") or first(recs[faulted], "SHUTDOWN"):
                    res["outcome"] = "missed"
                    return
                res["why"].append("rank %d never faulted: %s" % (faulted, recs[faulted][-3:]))
                return
            t_fault = float(f.split()[0])
        if t_fault is None:
            if not res["why"]:
                res["why"].append("no fault time")
            return
        survivors = [r for r in recs if r != faulted]
        for r in survivors:
            lines = recs[r]
            err = first(lines, "ERR")
            if err is None and phase == "shutdown":
                sd = first(lines, "SHUTDOWN")
                if sd is not None and sd.split()[1] == "OK":
                    continue  # the fault came after this rank's shutdown had agreed
                err = sd
            if not lines:
                # Not even its PID: dlaunch stopped it (SIGTERM on the first
                # failure) before its main ran, so it never was in the job to
                # see the fault; dlaunch itself named the cause.
                res["notes"].append("rank %d: stopped by dlaunch before it started" % r)
                continue
            if err is None:
                res["why"].append("rank %d: no error recorded (%s)" % (
                    r, " | ".join(lines[-2:]) if lines else "no record"))
                continue
            if first(lines, "ERR") is None:  # a failed shutdown: SHUTDOWN t STATUS msg
                parts = err.split(" ", 2)
                t_err, status, msg = float(parts[0]), parts[1], (parts[2:] or [""])[0]
            else:  # ERR t op STATUS msg
                parts = err.split(" ", 3)
                t_err, status, msg = float(parts[0]), parts[2], (parts[3:] or [""])[0]
            lat = t_err - t_fault
            res["latencies"].append(round(lat, 4))
            res["statuses"].append(status)
            res.setdefault("errors", {})[r] = msg[:300]
            if lat > bound:
                res["why"].append("rank %d: error after %.3f s > %.1f s" % (r, lat, bound))
            if status == "WRONG":
                res["why"].append("rank %d: wrong result: %s" % (r, msg))
            if t["kind"] == "launcher":
                # The first cause is dlaunch's death; a rank that failed on a
                # peer that had already quit over it names that peer instead:
                # noted (second cause), not failed.
                if "dlaunch" in msg:
                    pass
                elif re.search(r"\brank \d+\b", msg):
                    res["notes"].append("rank %d: names a peer, not dlaunch: %s" % (r, msg))
                else:
                    res["why"].append("rank %d: error names neither dlaunch nor a rank: %s" % (
                        r, msg))
            elif t["kind"] == "partition":
                if not re.search(r"\brank \d+\b|dlaunch", msg):
                    res["why"].append("rank %d: error names no rank: %s" % (r, msg))
            elif not re.search(r"\brank %d\b" % faulted, msg):
                res["why"].append("rank %d: error does not name rank %d: %s" % (r, faulted, msg))

    def known(self, t):
        """A trial of a known defect (--xfail KIND or KIND/PHASE or KIND/TRANSPORT)."""
        return any(x in (t["kind"], "%s/%s" % (t["kind"], t["phase"]),
                         "%s/%s" % (t["kind"], t["transport"])) for x in self.a.xfail)

    # ---- the campaign ---------------------------------------------------------
    def run(self):
        a = self.a
        kinds = a.kinds.split(",")
        for k in kinds:
            if k not in ALL_KINDS:
                sys.exit("campaign: unknown kind '%s' (kinds: %s)" % (k, ",".join(ALL_KINDS)))
        if "partition" in kinds and not self.net_ok():
            kinds.remove("partition")
        start = time.monotonic()
        todo = [k for i in range(a.trials) for k in kinds]  # interleaved kinds
        logf = open(a.log, "a") if a.log else None
        n = 0
        try:
            for k in todo:
                if time.monotonic() - start > a.time_budget:
                    log("time budget of %.0f s spent after %d trials" % (a.time_budget, n))
                    break
                t = self.plan(k)
                res = self.run_trial(n, t)
                n += 1
                self.results.append(res)
                if logf:
                    logf.write(json.dumps(res) + "\n")
                    logf.flush()
                if res["outcome"] != "pass" or res["notes"] or a.verbose:
                    lat = max(res["latencies"]) if res["latencies"] else None
                    log("trial %d: %s %s np%d %s rank %s op %s delay %dus: %s%s%s%s" % (
                        n, k, t["transport"], t["np"], t["phase"], t["rank"], t["op"],
                        t["delay_us"], res["outcome"],
                        " (max latency %.3f s)" % lat if lat is not None else "",
                        "".join("\n    " + w for w in res["why"]),
                        "".join("\n    note: " + w for w in res["notes"])))
                    if res.get("dir"):
                        log("    kept: %s; command: %s" % (res["dir"], res["cmd"]))
        finally:
            if logf:
                logf.close()
            if self.net is not None:
                self.net.teardown()
        self.summary(time.monotonic() - start)
        return all(r["outcome"] in ("pass", "missed", "xfail") for r in self.results)

    def summary(self, wall):
        rows = []
        keys = []
        for r in self.results:
            for key in (r["kind"], "%s/%s" % (r["kind"], r["transport"]),
                        "%s/%s" % (r["kind"], r["phase"])):
                if key not in keys and key != "%s/%s" % (r["kind"], r["kind"]):
                    keys.append(key)
        keys.sort(key=lambda k: (ALL_KINDS.index(k.split("/")[0]), k.count("/"), k))
        log("")
        log("%-20s %6s %5s %5s %5s %6s %5s %5s %5s %5s %5s %7s %7s %7s  %s" % (
            "kind", "trials", "pass", "fail", "hang", "missed", "late", "name", "noerr", "left",
            "noted", "p50 ms", "p99 ms", "max ms", "survivor statuses"))
        for key in keys:
            parts = key.split("/")
            sel = [r for r in self.results if r["kind"] == parts[0] and (
                len(parts) == 1 or parts[1] in (r["transport"], r["phase"]))]
            lats = [x * 1e3 for r in sel for x in r["latencies"]]
            st = {}
            for r in sel:
                for s in r["statuses"]:
                    st[s] = st.get(s, 0) + 1

            def f(v):
                return "-" if v is None else "%.0f" % v
            def cat(*pats):
                return sum(any(p in w for w in r["why"] for p in pats) for r in sel)
            log("%-20s %6d %5d %5d %5d %6d %5d %5d %5d %5d %5d %7s %7s %7s  %s" % (
                ("" if len(parts) == 1 else "  ") + key, len(sel),
                sum(r["outcome"] == "pass" for r in sel),
                sum(r["outcome"] in ("fail", "xfail") for r in sel),
                sum(r["outcome"] == "hang" for r in sel),
                sum(r["outcome"] == "missed" for r in sel),
                cat("error after"), cat("does not name", "names no", "names neither"),
                cat("no error recorded", "never faulted", "never became ready"),
                cat("left"), sum(bool(r["notes"]) for r in sel),
                f(pct(lats, 50)), f(pct(lats, 99)), f(max(lats) if lats else None),
                ", ".join("%s %d" % (k, v) for k, v in sorted(st.items()))))
        log("(per trial, failed for: late: a survivor's error came after the bound; name: an"
            " error that does not name the cause; noerr: a survivor ended without an error of"
            " its own; left: a process or file left; noted: a peer named as a second cause,"
            " or a rank dlaunch stopped before its main ran)")
        passed = sum(r["outcome"] in ("pass", "missed") for r in self.results)
        xfailed = sum(r["outcome"] == "xfail" for r in self.results)
        failed = len(self.results) - passed - xfailed
        log("transports: %s; DCOMM_TIMEOUT %d ms; seed %d; %.0f s" % (
            ",".join(self.transports), self.a.timeout_ms, self.a.seed, wall))
        xpassed = {k for k in self.a.xfail for r in self.results
                   if r["outcome"] == "pass" and self.known(r) and k in (
                       r["kind"], "%s/%s" % (r["kind"], r["phase"]),
                       "%s/%s" % (r["kind"], r["transport"]))}
        if xfailed or self.a.xfail:
            log("%d expected failures (--xfail %s: known defects)%s" % (
                xfailed, " ".join(self.a.xfail),
                "; passing trials of: %s" % " ".join(sorted(xpassed)) if xpassed else ""))
        log("%d passed, %d failed" % (passed, failed))


def kill_job(p, marker):
    """SIGKILL to dlaunch's group and to every process carrying the marker
    (each rank leads a process group of its own)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for x in marker_pids(marker):
        try:
            os.kill(x, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


def main():
    build = os.path.normpath(os.path.join(HERE, "..", "..", "build"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dlaunch", default=os.path.join(build, "launcher", "dlaunch"))
    ap.add_argument("--worker", default=os.path.join(build, "tests", "fault", "fault_worker"))
    ap.add_argument("--trials", type=int, default=5, help="trials per kind")
    ap.add_argument("--kinds", default=",".join(ALL_KINDS))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--phases", default="",
                    help="kill trials: only these phases (comma list of %s)" % ",".join(KILL_PHASES))
    ap.add_argument("--time-budget", type=float, default=3600.0, help="seconds; stops starting trials")
    ap.add_argument("--timeout-ms", type=int, default=3000, help="DCOMM_TIMEOUT of the jobs")
    ap.add_argument("--kill-bound-ms", type=int, default=0,
                    help="kill trials: a survivor's error must come within this (default: "
                         "DCOMM_TIMEOUT + 1 s)")
    ap.add_argument("--log", default=None, help="append one JSON line per trial here")
    ap.add_argument("--keep-failed", action="store_true", help="keep failed trials' records")
    ap.add_argument("--no-ucx", action="store_true", help="no ucx trials even if the module is built")
    ap.add_argument("--xfail", action="append", default=[], metavar="KIND[/PHASE|/TRANSPORT]",
                    help="trials of a known defect: their failures are reported, not counted")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = int(time.time())
    for path in (a.dlaunch, a.worker):
        if not os.access(path, os.X_OK):
            sys.exit("campaign: %s is not built" % path)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(130))
    sys.exit(0 if Campaign(a).run() else 1)


if __name__ == "__main__":
    main()
