"""`edge run` pauses the cyclic collector while it starts, freezes what start-up built, and
runs with the collector on."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fixtures.wake import write_wake_wav


def test_edge_run_freezes_its_start_up_heap_and_collects_after(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    wav = write_wake_wav(tmp_path / "wake.wav", 4.0)
    code = textwrap.dedent(f"""
        import gc, sys
        from edge.cli import main
        seen = []
        gc.callbacks.append(lambda phase, info: seen.append(phase))
        rc = main(["run", "--config", {str(cfg)!r}, "--input", {str(wav)!r}])
        print(rc, gc.isenabled(), gc.get_freeze_count(), seen.count("stop"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    rc, enabled, frozen, collections = out.stdout.split()
    assert rc == "0" and enabled == "True", out.stderr
    assert int(frozen) > 10_000  # modules, models and subsystems: frozen once built
    assert int(collections) > 0  # the loop ran with the collector on
