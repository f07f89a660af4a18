#!/usr/bin/python3
"""gloo_bench: the columns of dbench / mpi_bench (nccl-tests' columns) over
torch.distributed's Gloo backend (Debian's python3-torch), for comparison.

    /usr/bin/python3 bench/gloo_bench.py -np 2 -b 8 -e 256M -f 2 -o allreduce

Starts its own -np processes (one per rank) that meet through a FileStore.
Gloo's collectives work in place, so allreduce reports in the in-place column;
reducescatter is not implemented by Gloo in this torch and is skipped.
Data is the same small-integer pattern as dbench's, so #wrong is a real check.
"""
import argparse
import json
import os
import sys
import tempfile
import time

COLLS = ["allreduce", "broadcast", "allgather", "reducescatter", "alltoall"]
TYPES = {"int8": 1, "uint8": 1, "int32": 4, "int64": 8, "half": 2, "bfloat16": 2,
         "float": 4, "double": 8}
OPS = ["sum", "prod", "min", "max", "avg"]


def parse_size(text):
    mul = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.rstrip("Bb")
    if t and t[-1].upper() in mul:
        return int(float(t[:-1]) * mul[t[-1].upper()])
    return int(float(t))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-np", type=int, default=2, help="ranks (processes) to start")
    p.add_argument("-b", type=parse_size, default=32 << 20)
    p.add_argument("-e", type=parse_size, default=32 << 20)
    p.add_argument("-f", type=float, default=1.0)
    p.add_argument("-i", type=parse_size, default=1 << 20)
    p.add_argument("-n", type=int, default=20)
    p.add_argument("-w", type=int, default=5)
    p.add_argument("-c", type=int, default=1, choices=[0, 1])
    p.add_argument("-o", default="allreduce", choices=COLLS + ["all"])
    p.add_argument("-d", default="float", choices=list(TYPES) + ["all"])
    p.add_argument("-R", default="sum", choices=OPS + ["all"])
    p.add_argument("-r", type=int, default=0)
    p.add_argument("-a", type=int, default=1, choices=[0, 1, 2, 3])
    p.add_argument("-J", action="store_true", help="also print JSON lines")
    a = p.parse_args(argv)
    if a.np < 1 or a.b > a.e or (a.f <= 1 and a.i <= 0) or not 0 <= a.r < a.np:
        p.error("need -np >= 1, -b <= -e, a step, and a root below -np")
    return a


def sizes(a):
    s = a.b
    while s <= a.e:
        yield s
        s = max(s + 1, int(s * a.f)) if a.f > 1 else s + a.i


def rank_main(rank, a, store_path):
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="file://" + store_path, rank=rank,
                            world_size=a.np)
    n = a.np
    tt = {"int8": torch.int8, "uint8": torch.uint8, "int32": torch.int32,
          "int64": torch.int64, "half": torch.float16, "bfloat16": torch.bfloat16,
          "float": torch.float32, "double": torch.float64}
    rops = {"sum": dist.ReduceOp.SUM, "prod": dist.ReduceOp.PRODUCT,
            "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}

    def gen(op, src, count, start=0):
        i = torch.arange(start, start + count, dtype=torch.int64)
        v = (i * 13 + src * 7 + (src >> 3)) & 7
        return (v == 0).to(torch.int64) + 1 if op == "prod" else v

    def expect(op, count, start=0):
        vals = [gen(op, r, count, start) for r in range(n)]
        acc = vals[0].clone()
        for v in vals[1:]:
            if op == "prod":
                acc = acc * v
            elif op == "min":
                acc = torch.minimum(acc, v)
            elif op == "max":
                acc = torch.maximum(acc, v)
            else:
                acc = acc + v
        return acc

    def agg(v, how):
        t = torch.tensor([v], dtype=torch.float64)
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN,
                               "max": dist.ReduceOp.MAX}[how])
        return float(t[0])

    def wrong_of(got, want, dtype):
        return int((got.to(torch.float64) != want.to(dtype).to(torch.float64)).sum())

    def column(call, check):
        wrong = check() if a.c else -1
        for _ in range(a.w):
            call()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(a.n):
            call()
        t = (time.perf_counter() - t0) / a.n
        t = {0: agg(t if rank == 0 else 0.0, "sum"), 1: agg(t, "sum") / n,
             2: agg(t, "min"), 3: agg(t, "max")}[a.a]
        wrong = agg(wrong, "sum") if a.c else -1
        return t * 1e6, wrong

    colls = COLLS if a.o == "all" else [a.o]
    types = list(TYPES) if a.d == "all" else [a.d]
    ops = OPS if a.R == "all" else [a.R]
    total_wrong, bw_sum, nbw = 0, 0.0, 0
    if rank == 0:
        print("# gloo: nranks %d, minBytes %d maxBytes %d, warmup iters: %d iters: %d "
              "validation: %d\n# library: torch %s, backend gloo" %
              (n, a.b, a.e, a.w, a.n, a.c, torch.__version__))
        print("#\n#%60s%-36s%s" % ("", "out-of-place", "in-place"))
        fmt = "#%12s  %12s  %8s  %6s  %5s  %8s  %6s  %6s  %6s  %8s  %6s  %6s  %6s"
        print(fmt % ("size", "count", "type", "redop", "root", "time", "algbw", "busbw",
                     "#wrong", "time", "algbw", "busbw", "#wrong"))
        print(fmt % ("(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)",
                     "(GB/s)", "(GB/s)", ""))
    for coll in colls:
        for tname in types:
            red = coll in ("allreduce", "reducescatter")
            for op in (ops if red else ["sum"]):
                why = None
                if coll == "reducescatter":
                    why = "Gloo has no reduce_scatter in this torch"
                elif red and op not in rops:
                    why = "Gloo has no %s" % op
                elif tname == "bfloat16" and coll == "allreduce":
                    why = "Gloo does not reduce bfloat16"
                if why:
                    if rank == 0:
                        print("# %s %s %s: skipped (%s)" % (coll, tname, op, why))
                    continue
                dt, es = tt[tname], TYPES[tname]
                for size in sizes(a):
                    whole = coll in ("allreduce", "broadcast")
                    count = size // es if whole else size // es // n
                    if count == 0:
                        continue
                    nbytes = count * es * (1 if whole else n)
                    if coll == "allreduce":
                        buf = gen(op, rank, count).to(dt)

                        def call(buf=buf):
                            dist.all_reduce(buf, op=rops[op])

                        def check(buf=buf, count=count, op=op, dt=dt):
                            buf.copy_(gen(op, rank, count).to(dt))
                            dist.all_reduce(buf, op=rops[op])
                            return wrong_of(buf, expect(op, count), dt)
                        factor, col = 2.0 * (n - 1) / n, 1
                    elif coll == "broadcast":
                        buf = gen("sum", a.r, count).to(dt)

                        def call(buf=buf):
                            dist.broadcast(buf, src=a.r)

                        def check(buf=buf, count=count, dt=dt):
                            buf.copy_(gen("sum", a.r, count).to(dt) if rank == a.r
                                      else torch.full((count,), 99).to(dt))
                            dist.broadcast(buf, src=a.r)
                            return wrong_of(buf, gen("sum", a.r, count), dt)
                        factor, col = 1.0, 0
                    elif coll == "allgather":
                        src = gen("sum", rank, count).to(dt)
                        out = torch.empty(count * n, dtype=dt)
                        views = list(out.split(count))

                        def call(src=src, views=views):
                            dist.all_gather(views, src)

                        def check(src=src, out=out, views=views, count=count, dt=dt):
                            out.fill_(99)
                            dist.all_gather(views, src)
                            want = torch.cat([gen("sum", r, count) for r in range(n)])
                            return wrong_of(out, want, dt)
                        factor, col = (n - 1) / n, 0
                    else:
                        src = gen("sum", rank, count * n).to(dt)
                        out = torch.empty(count * n, dtype=dt)

                        def call(src=src, out=out):
                            dist.all_to_all_single(out, src)

                        def check(src=src, out=out, count=count, dt=dt):
                            out.fill_(99)
                            dist.all_to_all_single(out, src)
                            want = torch.cat([gen("sum", r, count, rank * count)
                                              for r in range(n)])
                            return wrong_of(out, want, dt)
                        factor, col = (n - 1) / n, 0
                    us, wrong = column(call, check)
                    algbw = nbytes / (us * 1e-6) / 1e9
                    busbw = algbw * factor
                    total_wrong += max(wrong, 0)
                    bw_sum += busbw
                    nbw += 1
                    if rank != 0:
                        continue
                    res = "  %8.*f  %6.2f  %6.2f  %6s" % (0 if us >= 10000 else 2, us, algbw,
                                                          busbw, "N/A" if wrong < 0 else
                                                          "%d" % wrong)
                    na = "  %8s  %6s  %6s  %6s" % ("N/A", "N/A", "N/A", "N/A")
                    print(" %12d  %12d  %8s  %6s  %5d%s%s" %
                          (nbytes, count * (1 if whole else n), tname, op if red else "none",
                           a.r if coll == "broadcast" else -1, res if col == 0 else na,
                           res if col == 1 else na))
                    if a.J:
                        cell = {"time_us": us, "algbw": algbw, "busbw": busbw, "wrong": wrong}
                        print(json.dumps({"backend": "gloo", "coll": coll, "nranks": n,
                                          "size": nbytes, "count": count, "type": tname,
                                          "redop": op if red else "none",
                                          "root": a.r if coll == "broadcast" else -1,
                                          "algo": "", "oop": cell if col == 0 else None,
                                          "ip": cell if col == 1 else None}))
                    sys.stdout.flush()
    if rank == 0:
        print("# Out of bounds values : %d %s" % (total_wrong, "OK" if total_wrong == 0
                                                   else "FAILED"))
        print("# Avg bus bandwidth    : %g \n#" % (bw_sum / nbw if nbw else 0.0))
        sys.stdout.flush()
    dist.destroy_process_group()
    if total_wrong:
        sys.exit(1)


def main():
    a = parse_args(sys.argv[1:])
    try:
        import torch.multiprocessing as mp
    except ImportError:
        sys.exit("gloo_bench: needs torch (Debian: apt-get install python3-torch; run with "
                 "/usr/bin/python3)")
    fd, path = tempfile.mkstemp(prefix="gloo_bench.")
    os.close(fd)
    os.unlink(path)  # FileStore creates it; a stale file would confuse it
    try:
        ctx = mp.spawn(rank_main, args=(a, path), nprocs=a.np, join=False)
        while not ctx.join(timeout=600):
            pass
    except mp.ProcessRaisedException as e:
        sys.exit("gloo_bench: a rank failed: %s" % str(e).strip().splitlines()[-1])
    except mp.ProcessExitedException as e:
        sys.exit("gloo_bench: %s" % e)
    finally:
        if os.path.exists(path):
            os.unlink(path)


if __name__ == "__main__":
    main()
