"""Measure the times the README quotes: its commands, run as a user runs them.

Runs, each as a fresh ``python -m dmir`` process on this checkout (so import time, model
loading and writing the outputs count):

* ``dmir demo -o DIR``  (the shipped prior, 4 tasks x 4 photos, 128 px, 50 steps);
* ``dmir restore PHOTO -o check.png --task sr_bicubic_aa --scale 4 --degrade``
  (the README's own-photo example; PHOTO defaults to the shipped 256x256 demo photo
  ``dmir/data/demo/astronaut.png``, ``--photo`` takes any other).

For each: wall-clock seconds and CPU seconds (user + system of the child process and its
threads, from ``resource.getrusage(RUSAGE_CHILDREN)``). On a shared, loaded machine the wall
time depends on the other jobs; the CPU time much less so (it is what the command costs), so
the README quotes CPU time, and wall time for the machine it was measured on. Prints a table
and writes ``benchmarks/results/readme_times.json`` (machine, load average, threads, each
command's exit status and times).

    python benchmarks/readme_times.py [--only demo restore] [--photo PATH] [--out JSON]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEMO_PHOTO = ROOT / "dmir" / "data" / "demo" / "astronaut.png"


def commands(work: Path, photo: Path) -> dict[str, list[str]]:
    """The README's commands (name → dmir arguments), writing into ``work``."""
    return {
        "demo": ["demo", "-o", str(work / "demo")],
        "restore": ["restore", str(photo), "-o", str(work / "restored.png"), "--task",
                    "sr_bicubic_aa", "--scale", "4", "--degrade"],
    }


def measure(args: list[str]) -> dict:
    """Run ``python -m dmir ARGS`` on this checkout; wall and CPU seconds, exit status, the
    last line it printed on stdout (stderr when stdout is empty)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "dmir", *args], env=env, cwd=ROOT,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    lines = (p.stdout.strip() or p.stderr.strip()).splitlines()
    return {"command": "dmir " + " ".join(args), "rc": p.returncode, "wall_s": round(wall, 1),
            "cpu_s": round(user + system, 1), "user_s": round(user, 1),
            "system_s": round(system, 1), "last_line": lines[-1] if lines else ""}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=["demo", "restore"],
                    default=["demo", "restore"], help="which commands (default: both)")
    ap.add_argument("--photo", default=str(DEMO_PHOTO),
                    help="the photo of the restore example (default: the shipped 256x256 "
                    "demo photo)")
    ap.add_argument("--out", default=str(HERE / "results" / "readme_times.json"))
    a = ap.parse_args(argv)
    from PIL import Image

    with Image.open(a.photo) as im:
        photo_size = list(im.size)
    load0 = os.getloadavg()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="dmir-readme-times-") as tmp:
        cmds = commands(Path(tmp), Path(a.photo))
        for name in a.only:
            print(f"running {name}: dmir {' '.join(cmds[name])}", flush=True)
            rows[name] = measure(cmds[name])
    result = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count(),
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                          "load_average_before": [round(v, 2) for v in load0],
                          "load_average_after": [round(v, 2) for v in os.getloadavg()]},
              "photo": {"path": os.path.relpath(a.photo, ROOT), "size": photo_size},
              "commands": rows,
              "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"\n{'command':<10}{'wall s':>9}{'CPU s':>9}  rc  (load average "
          f"{load0[0]:.1f} on {os.cpu_count()} CPUs)")
    for name, r in rows.items():
        print(f"{name:<10}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}  {r['rc']:>2}  {r['command']}")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {a.out}")
    return 0 if all(r["rc"] == 0 for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
