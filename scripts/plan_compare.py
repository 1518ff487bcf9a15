#!/usr/bin/env python3
"""Times `jobkeeper plan --format json` of HEAD~1..HEAD in REPO for each given binary against
`git diff-tree -r` of the same commits, interleaved, RUNS times each; prints the medians of the wall
clock and of the CPU time (getrusage of the children), and whether two binaries printed the same plan.

Usage: scripts/plan_compare.py REPO RUNS JOBKEEPER [JOBKEEPER]"""
import subprocess, resource, time, sys, statistics
repo, runs = sys.argv[1], int(sys.argv[2])
bins = sys.argv[3:]
cmds = {b: [b, "plan", "--repo", repo, "--from", "HEAD~1", "--to", "HEAD", "--format", "json"] for b in bins}
cmds["git diff-tree"] = ["git", "-C", repo, "diff-tree", "-r", "HEAD~1", "HEAD"]
wall = {k: [] for k in cmds}; cpu = {k: [] for k in cmds}
outs = {}
for _ in range(runs):
    for k, c in cmds.items():
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN); t0 = time.perf_counter()
        p = subprocess.run(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        t1 = time.perf_counter(); r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall[k].append((t1 - t0) * 1000); cpu[k].append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000)
        outs.setdefault(k, p.stdout)
g = statistics.median(wall["git diff-tree"]); gc = statistics.median(cpu["git diff-tree"])
for k in cmds:
    w = statistics.median(wall[k]); c = statistics.median(cpu[k])
    print(f"{k}: wall median {w:.1f} ms ({w/g:.1f}x git), cpu median {c:.1f} ms")
if len(bins) == 2:
    print("same output:", outs[bins[0]] == outs[bins[1]], len(outs[bins[0]]))
