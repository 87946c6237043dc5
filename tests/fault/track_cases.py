"""Run many ``sam3video track`` command lines, each in its own forked child of one Python process.

Usage: ``python tests/fault/track_cases.py CASES.json RESULTS.json``. ``CASES.json`` is a list of
``{"name": str, "argv": [str, ...], "timeout": seconds}``; ``argv`` is what follows ``sam3video``.
Each case runs ``sam3video.cli.main(argv)`` in a fork of this process (imports paid once; the parent
never runs a torch op, so forking is safe), with its stdout and stderr (file descriptors 1 and 2,
so native libraries' output too) sent to files. ``RESULTS.json`` gets, per case,
``{"name", "returncode", "stdout", "stderr", "seconds"}``: ``returncode`` is the exit status, or
``-signal`` for a child killed by a signal (a segfault is -11), or None for one still running after
``timeout`` (then killed). An exception escaping ``main`` is printed as a traceback, status 99.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import traceback


def _child(argv: list[str], out_path: str, err_path: str) -> None:
    """Run the CLI with fds 1 and 2 on files, then ``os._exit`` with its status (never returns)."""
    code = 99
    try:
        for fd, path in ((1, out_path), (2, err_path)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        from sam3video.cli import main

        try:
            code = main(argv)
        except SystemExit as e:  # argparse usage errors
            code = e.code if isinstance(e.code, int) else 2
    except BaseException:  # noqa: BLE001 - an escape from main is what the test must see
        traceback.print_exc()
        code = 99
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run_case(argv: list[str], timeout: float, workdir: str) -> dict:
    out_path, err_path = os.path.join(workdir, "stdout"), os.path.join(workdir, "stderr")
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _child(argv, out_path, err_path)
    returncode = None
    while time.monotonic() - start < timeout:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with open(out_path, errors="replace") as f, open(err_path, errors="replace") as g:
        stdout, stderr = f.read(), g.read()
    return {"returncode": returncode, "stdout": stdout, "stderr": stderr,
            "seconds": round(time.monotonic() - start, 2)}


def main() -> int:
    cases_path, results_path = sys.argv[1:3]
    with open(cases_path) as f:
        cases = json.load(f)
    # Imported once, before forking (the video libraries are left to each child): what ``track`` uses.
    import importlib

    import sam3video.cli  # noqa: F401

    for name in ("sam3video.run", "sam3video.model.checkpoint", "sam3video.video.predictor"):
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - moved by a refactor: the child imports what it needs
            pass

    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for case in cases:
            result = run_case(case["argv"], float(case.get("timeout", 60)), workdir)
            results.append({"name": case["name"], **result})
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
