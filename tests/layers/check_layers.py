#!/usr/bin/env python3
"""check_layers.py: the file graphs of core/ and launcher/ have no circle, and
core/ and collectives/ reach no backend's internals.

    tests/layers/check_layers.py [ROOT] [--graph]

For every .c file of core/ (then of launcher/) it lists the non-static functions the file defines
and the identifiers it calls; an edge a.c -> b.c means a.c calls a function
that b.c defines. A circle (a strongly connected component of more than one
file) fails, naming its files and the calls that close it. It also fails when
a file of core/ or collectives/ includes a header of transports/shm/ or of the
rendezvous protocol (util/rdv*.h: the bootstrap sees job_store.h and store.h).
--graph prints every edge. The parser is a regex over the source
with comments and strings removed: good enough for this code base's style
(function definitions start in column 0; calls are `name(`).
"""
import os
import re
import sys

DEF = re.compile(r'^[A-Za-z_][\w \t\*]*?\b([A-Za-z_]\w*)\s*\([^;{]*\)\s*\{', re.M)
CALL = re.compile(r'\b([A-Za-z_]\w*)\s*\(')
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
FORBIDDEN = (re.compile(r'(^|/)shm/'), re.compile(r'(^|/)rdv[^/]*\.h$'))


def strip(text):
    text = re.sub(r'/\*.*?\*/', ' ', text, flags=re.S)
    text = re.sub(r'//[^\n]*', ' ', text)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


def definitions(text):
    out = set()
    for m in DEF.finditer(text):
        head = text[m.start():m.end()]
        if not head.startswith('static') and m.group(1) not in ('if', 'for', 'while', 'switch'):
            out.add(m.group(1))
    return out


def sccs(nodes, edges):
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def circles(root, layer, graph):
    """Prints the circles among layer's files; returns (files, edges, bad)."""
    d = os.path.join(root, layer)
    files = sorted(f for f in os.listdir(d) if f.endswith('.c'))
    text = {f: strip(open(os.path.join(d, f)).read()) for f in files}
    owner = {}
    for f in files:
        for name in definitions(text[f]):
            owner.setdefault(name, f)
    edges, why = {}, {}
    for f in files:
        for name in set(CALL.findall(text[f])):
            g = owner.get(name)
            if g is not None and g != f:
                edges.setdefault(f, set()).add(g)
                why.setdefault((f, g), set()).add(name)
    bad = 0
    if graph:
        for f in files:
            for g in sorted(edges.get(f, ())):
                print('%s/%s -> %s (%s)' % (layer, f, g, ', '.join(sorted(why[(f, g)]))))
    for comp in sccs(files, edges):
        if len(comp) > 1:
            bad = 1
            print('circle among %s files: %s' % (layer, ', '.join(comp)))
            for f in comp:
                for g in sorted(edges.get(f, set()) & set(comp)):
                    print('  %s -> %s: %s' % (f, g, ', '.join(sorted(why[(f, g)]))))
    return len(files), sum(len(v) for v in edges.values()), bad


def main():
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
    bad = 0
    counts = []
    for layer in ('core', 'launcher'):
        nfiles, nedges, b = circles(root, layer, '--graph' in sys.argv)
        bad |= b
        counts.append('%d %s files, %d file edges' % (nfiles, layer, nedges))
    for layer in ('core', 'collectives'):
        d = os.path.join(root, layer)
        for f in sorted(os.listdir(d)):
            if not f.endswith(('.c', '.h')):
                continue
            for inc in INCLUDE.findall(open(os.path.join(d, f)).read()):
                shm = os.path.join(root, 'transports', 'shm', os.path.basename(inc))
                if any(p.search(inc) for p in FORBIDDEN) or os.path.exists(shm):
                    bad = 1
                    print('%s/%s includes "%s" (%s internals)' %
                          (layer, f, inc, 'the rendezvous protocol' if FORBIDDEN[1].search(inc)
                           else 'the shm backend'))
    print('%s; %s' % ('; '.join(counts), 'FAILED' if bad else 'no circle, no forbidden include'))
    return bad


if __name__ == '__main__':
    sys.exit(main())
