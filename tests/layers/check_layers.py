#!/usr/bin/env python3
"""check_layers.py: the file graph of core/ has no circle, and core/ and
collectives/ reach no backend's internals.

    tests/layers/check_layers.py [ROOT] [--graph]

For every .c file of core/ it lists the non-static functions the file defines
and the identifiers it calls; an edge a.c -> b.c means a.c calls a function
that b.c defines. A circle (a strongly connected component of more than one
file) fails, naming its files and the calls that close it. It also fails when
a file of core/ or collectives/ includes a header of transports/shm/.
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
FORBIDDEN = (re.compile(r'(^|/)shm/'),)


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


def main():
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
    core = os.path.join(root, 'core')
    files = sorted(f for f in os.listdir(core) if f.endswith('.c'))
    text = {f: strip(open(os.path.join(core, f)).read()) for f in files}
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
    if '--graph' in sys.argv:
        for f in files:
            for g in sorted(edges.get(f, ())):
                print('%s -> %s (%s)' % (f, g, ', '.join(sorted(why[(f, g)]))))
    for comp in sccs(files, edges):
        if len(comp) > 1:
            bad = 1
            print('circle among core files: ' + ', '.join(comp))
            for f in comp:
                for g in sorted(edges.get(f, set()) & set(comp)):
                    print('  %s -> %s: %s' % (f, g, ', '.join(sorted(why[(f, g)]))))
    for layer in ('core', 'collectives'):
        d = os.path.join(root, layer)
        for f in sorted(os.listdir(d)):
            if not f.endswith(('.c', '.h')):
                continue
            for inc in INCLUDE.findall(open(os.path.join(d, f)).read()):
                shm = os.path.join(root, 'transports', 'shm', os.path.basename(inc))
                if any(p.search(inc) for p in FORBIDDEN) or os.path.exists(shm):
                    bad = 1
                    print('%s/%s includes "%s" (the shm backend internals)' % (layer, f, inc))
    nedges = sum(len(v) for v in edges.values())
    print('%d core files, %d file edges, %s' % (len(files), nedges, 'FAILED' if bad else 'no circle'))
    return bad


if __name__ == '__main__':
    sys.exit(main())
