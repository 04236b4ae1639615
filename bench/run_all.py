"""Run every bench/*_bench.py in turn (`make bench`); each writes bench/results/<name>.json.

Usage: python bench/run_all.py [NAME ...]   (e.g. `engine latency`; default: all)
Exits non-zero if any benchmark fails its targets or crashes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    benches = sorted(HERE.glob("*_bench.py"))
    if argv:
        benches = [b for b in benches if b.stem.removesuffix("_bench") in argv]
    failed = []
    for bench in benches:
        print(f"\n=== {bench.stem} ===", flush=True)
        start = time.monotonic()
        rc = subprocess.call([sys.executable, str(bench)], cwd=HERE.parent)
        print(f"--- {bench.stem}: exit {rc} in {time.monotonic() - start:.0f} s", flush=True)
        if rc != 0:
            failed.append(bench.stem)
    print(f"\n{len(benches) - len(failed)} of {len(benches)} benchmarks met their targets"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
