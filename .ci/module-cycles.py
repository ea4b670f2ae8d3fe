#!/usr/bin/env python3
"""Fails (exit 1) when the crate's top-level modules import each other in a cycle.

A top-level module is `src/X.rs` or `src/X/`; an import is any `crate::X` path (also inside
`use crate::{...}`) in its non-test code. The layering this keeps: a low floor (config,
liveness, fsutil, journal) never names a higher one (stages, ops, commands). Prints each cycle
with one file per edge, so the move that breaks it is easy to find."""
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "src"
mods = {os.path.splitext(n)[0] for n in os.listdir(src)} - {"main", "lib"}
edges = {}
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith(".rs") or f == "tests.rs" or f.endswith("_tests.rs"):
            continue
        path = os.path.join(root, f)
        me = os.path.splitext(os.path.relpath(path, src).split(os.sep)[0])[0]
        text = open(path, encoding="utf-8", errors="replace").read()
        cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+", text)
        text = text[: cut.start()] if cut else text
        names = set(re.findall(r"\bcrate::(\w+)", text))
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text, re.S):
            names |= {x.strip().split("::")[0] for x in group.split(",") if x.strip()}
        for n in names & mods - {me}:
            edges.setdefault((me, n), path)

graph = {m: sorted(b for (a, b) in edges if a == m) for m in mods}
index, low, stack, on, cycles = {}, {}, [], set(), []


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        group = []
        while True:
            w = stack.pop()
            on.discard(w)
            group.append(w)
            if w == v:
                break
        if len(group) > 1:
            cycles.append(sorted(group))


sys.setrecursionlimit(10000)
for m in sorted(mods):
    if m not in index:
        visit(m)
for c in cycles:
    print(f"import cycle of {len(c)} top-level modules: {', '.join(c)}")
    for (a, b), p in sorted(edges.items()):
        if a in c and b in c:
            print(f"  {a} -> {b}   ({p})")
if cycles:
    print("A low module must not import a higher one: move the shared piece down.")
    sys.exit(1)
print("no import cycle between top-level modules")
