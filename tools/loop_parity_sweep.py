"""Official-loop parity over many cases in one command: make each tiny fixture with the OFFICIAL code (oracle venv),
then check our loop against all of them.

    .venv/bin/python tools/loop_parity_sweep.py --out /tmp/loop_sweep            # ~6 min on 2 cores

Cases (``CASES``, 24): 14 seed pairs (neck, clip) of the three-shape clip, 6 of the dense clip (eight shapes, 2-4
births per frame, up to ~20 objects tracked at once), all with fp32 memories, and 4 with the official bf16 memory
storage. Each fixture is made by ``tools/make_video_loop_fixture.py`` (``OMP_NUM_THREADS=1``, ``--jobs`` at a time;
an existing one is reused unless ``--remake``) and checked twice by ``tools/check_sam3_loop_parity.py``: as the
tests check (knife-edge decisions given the official outcome) and without that referee, to show where our own
decisions go. ``--threads 2`` also makes every fixture again with the official code on 2 threads and counts the
steps where the official code disagrees with itself.

Writes OUT/summary.md (the table the README quotes) and OUT/summary.json; exit status 1 if any case fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import check_sam3_loop_parity as check  # noqa: E402

ORACLE = Path.home() / ".cache" / "sam3-oracle" / "bin" / "python"
THREE = [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7), (8, 8), (12, 12), (13, 13), (23, 71),
         (37, 8), (91, 250)]
DENSE = [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
CASES = ([("three", "fp32", n, c) for n, c in THREE] + [("dense", "fp32", n, c) for n, c in DENSE]
         + [("three", "bf16", 0, 0), ("three", "bf16", 13, 13), ("dense", "bf16", 0, 0), ("dense", "bf16", 1, 1)])


def case_name(scene: str, memory: str, neck: int, clip: int) -> str:
    return f"{scene}_{memory}_n{neck}_c{clip}"


def make(oracle: Path, out: Path, case: tuple, threads: int, remake: bool) -> tuple[Path, float]:
    scene, memory, neck, clip = case
    name = case_name(*case) + (f"_t{threads}" if threads != 1 else "") + ".pt"
    path = out / name
    t0 = time.time()
    if remake or not path.exists():
        cmd = [str(oracle), str(ROOT / "tools" / "make_video_loop_fixture.py"), "--out", str(out), "--name", name,
               "--neck-seed", str(neck), "--clip-seed", str(clip), "--scene", scene, "--memory-dtype", memory]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        (out / (name + ".log")).write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"making {name} failed (exit {done.returncode}); see {out / (name + '.log')}")
    return path, time.time() - t0


def self_disagreement(a: dict, b: dict) -> list[int]:
    """Steps where two official runs of one case (1 and 2 threads) differ in an area-shrinkage decision or in
    any output mask."""
    steps = [k for k, (x, y) in enumerate(zip(a["steps"], b["steps"]))
             if x.get("mem", {}).get("shrink_suppressed") != y.get("mem", {}).get("shrink_suppressed")]
    outputs = [o["frame_idx"] for o, p in zip(a["outputs"], b["outputs"])
               if not torch.equal(o["out_binary_masks_packed"], p["out_binary_masks_packed"])]
    return steps + [f"out{f}" for f in outputs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the fixtures, logs and summary")
    ap.add_argument("--oracle", type=Path, default=ORACLE, help="python of the oracle venv (../shared/tools/oracle)")
    ap.add_argument("--jobs", type=int, default=2, help="fixtures made at once (each on one thread)")
    ap.add_argument("--remake", action="store_true", help="make every fixture again")
    ap.add_argument("--threads", type=int, choices=(1, 2), default=1,
                    help="2: also make each fixture on 2 threads and count where the official code disagrees with itself")
    ap.add_argument("--cases", type=int, default=len(CASES), help="only the first N cases (quick runs)")
    args = ap.parse_args(argv)
    if not args.oracle.exists():
        raise SystemExit(f"no oracle python at {args.oracle}: run ../shared/tools/oracle/setup.sh first")
    args.out.mkdir(parents=True, exist_ok=True)
    cases = CASES[: args.cases]
    t0 = time.time()
    jobs = [(case, 1) for case in cases] + ([(case, 2) for case in cases] if args.threads == 2 else [])
    with ThreadPoolExecutor(args.jobs) as pool:
        made = list(pool.map(lambda job: make(args.oracle, args.out, job[0], job[1], args.remake), jobs))
    print(f"made {len(made)} fixtures in {time.time() - t0:.0f} s", flush=True)

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)  # as the fixtures were made (and it keeps the runs comparable)
    rows, lines = [], []
    model, model_key = None, None
    for case, (path, _) in zip(cases, made):
        fixture = check.read_fixture(path)
        key = case[2]  # the neck seed decides the weights
        if key != model_key:
            model, model_key = check.load_model("tiny", None, fixture), key
        frames = check.run_detector(model, fixture)
        refereed = check.check_fixture(model, fixture, frames, case_name(*case))
        alone = check.check_fixture(model, fixture, frames, case_name(*case), use_referee=False)
        steps = fixture["steps"]
        row = {
            "case": case_name(*case), "scene": case[0], "memory": case[1], "neck": case[2], "clip": case[3],
            "max_tracked": max(len(s["trk"]["obj_ids"]) for s in steps),
            "max_births": max(len(s["plan"]["new_det_obj_ids"]) for s in steps),
            "objects": steps[-1]["max_obj_id_after"] + 1,
            "compared": refereed.compared,
            "knife_edge_decisions": sum(len(v) for v in refereed.forced.values()),
            "official_robust_to_weight_noise": (fixture.get("robustness") or {}).get("same_decisions"),
            "pass": refereed.ok, "first_problem": refereed.problems[0] if refereed.problems else None,
            "pass_without_referee": alone.ok,
            "first_problem_without_referee": alone.problems[0] if alone.problems else None,
        }
        if args.threads == 2:
            other = check.read_fixture(made[len(cases) + cases.index(case)][0])
            row["official_1_vs_2_threads"] = self_disagreement(fixture, other)
        rows.append(row)
        line = check.summary_line(refereed, fixture) + ("" if alone.ok else f" | without referee: {alone.problems[0]}")
        lines.append(line)
        print(line, flush=True)

    passed = sum(r["pass"] for r in rows)
    head = ("| case | tracked (max) | births/frame (max) | objects | decisions | shrinkage decisions compared | knife "
            "edges refereed | result | without the referee |" + (" official 1 vs 2 threads |" if args.threads == 2 else ""))
    table = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        alone = "same" if r["pass_without_referee"] else r["first_problem_without_referee"].split(":")[0]
        cells = [r["case"], r["max_tracked"], r["max_births"], r["objects"], r["compared"]["decisions"],
                 r["compared"]["shrink_decisions"], r["knife_edge_decisions"], "PASS" if r["pass"] else "FAIL", alone]
        if args.threads == 2:
            cells.append(", ".join(map(str, r["official_1_vs_2_threads"])) or "agree")
        table.append("| " + " | ".join(map(str, cells)) + " |")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"
    summary = (f"{passed} of {len(rows)} cases match the official loop ({cpu}; {machine}; "
               f"{time.time() - t0:.0f} s)\n\n" + "\n".join(table) + "\n")
    (args.out / "summary.md").write_text(summary)
    (args.out / "summary.json").write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=1))
    print("\n" + summary)
    print(f"{'PASS' if passed == len(rows) else 'FAIL'}: {passed} of {len(rows)}; written {args.out / 'summary.md'}")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
