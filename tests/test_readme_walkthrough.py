"""The README's "Your first hour", run command by command, as written, from a fresh copy.

The copy holds what a clone would (the tracked files, plus the files not yet committed and
not ignored, so the test checks the work in progress too), with a throwaway home folder.
Two things a fresh clone would download are provided instead, so the test needs no network
and installs nothing: the models (copied from this checkout's models/, as `make run` would
fetch them; `edge models fetch` verifies them), and the virtual environment. The copy's
`.venv` is a bare venv whose site-packages point at the copy's source and at the test's own
site-packages (a `.pth` file), with its stamps set, so `make run` finds it installed and
runs every other step as written: the apt check, the models, the `~/.local/bin/edge` link and
the demo. A `.venv/bin/pip install -e '.[EXTRA]'` line is checked, not run: the extra exists
and its modules import in that venv.

The microphone is an ALSA file PCM (tests/fixtures/alsa.py): none while `make run` runs (so
it shows the demo), then one that hears "hey jarvis" and a request, as if plugged in after
the demo. A command whose comment says Ctrl-C is stopped with SIGINT once it has written
its clip.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soxr

from edge.audio import synth
from edge.cli import build_parser
from tests.fixtures.alsa import AlsaConfig
from tests.fixtures.audio import phrase
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Your first hour"
EXTRA_LINE = re.compile(r"^\.venv/bin/pip install -e '\.\[([a-z]+)\]'$")


def walkthrough(readme: Path = ROOT / "README.md") -> list[str]:
    """The command lines of the README's walk-through: every line of its ```sh blocks."""
    text = readme.read_text()
    assert f"\n{SECTION}\n" in text, f"README.md has no {SECTION!r} section"
    section = text.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def words(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def extra_modules(extra: str) -> list[str]:
    """The import names of an extra's requirements (they match the project names here)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extra in extras, f"pyproject.toml has no [{extra}] extra"
    return [re.match(r"[A-Za-z0-9_.-]+", r)[0].lower().replace("-", "_")  # type: ignore[index]
            for r in extras[extra]]


# ---- fast: every command parses --------------------------------------------------------


def test_the_walkthrough_covers_the_first_hour():
    lines = walkthrough()
    firsts = [" ".join(words(line)[:2]) for line in lines]
    for step in ("make run", "edge devices", "edge run", "edge log", "edge label", "edge stats",
                 "edge measure"):
        assert step in firsts, f"the walk-through has no `{step}`"
    assert any(words(line)[:4] == ["edge", "label", "last", "false"] for line in lines)
    assert any("Ctrl-C" in line for line in lines if words(line)[:2] == ["edge", "run"])


def test_every_walkthrough_command_parses():
    parser = build_parser()
    for line in walkthrough():
        argv = words(line)
        if argv[0] == "edge":
            parser.parse_args(argv[1:])  # exits (fails the test) on a bad option
        elif argv[0] == "make":
            out = subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, capture_output=True,
                                 text=True, env=_clean_make_env(os.environ))
            assert out.returncode == 0, out.stderr
        elif m := EXTRA_LINE.match(line):
            assert extra_modules(m[1])
        elif argv[0] == "arecord":
            assert shutil.which("arecord"), "arecord is missing (alsa-utils, scripts/apt-deps.sh)"
        else:
            pytest.fail(f"the walk-through has a command this test does not know: {line}")


# ---- the whole walk-through from a fresh copy --------------------------------------------


def _clean_make_env(env: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    """``env`` without what an outer `make test` passes down to a nested make."""
    return {k: v for k, v in env.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def fresh_copy(dest: Path) -> Path:
    """The checkout's files a clone would hold, with the work not yet committed."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():  # a tracked file deleted in the work tree is gone from the commit too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    fetched = [p for p in (ROOT / "models").iterdir()  # what `edge models fetch` downloads
               if p.is_file() and not (dest / "models" / p.name).exists()]
    assert fetched, "no models in models/: run `make test` (it fetches them) first"
    for model in fetched:
        shutil.copy2(model, dest / "models" / model.name)
    return dest


def venv_over_this_one(copy: Path) -> None:
    """A `.venv` in ``copy`` that runs the copy's source with this venv's packages."""
    venv = copy / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    [site] = (venv / "lib").glob("python3*/site-packages")
    # plain path lines: this venv's own .pth files (its editable install of the checkout) are
    # not read, so `edge` is the copy's
    (site / "walkthrough.pth").write_text(f"{copy}\n{purelib}\n")
    edge = venv / "bin" / "edge"
    edge.write_text(f"#!{venv / 'bin' / 'python'}\n"  # as pip writes a console script
                    "import sys\nfrom edge.cli import main\n"
                    "if __name__ == '__main__':\n    sys.exit(main())\n")
    edge.chmod(0o755)
    for stamp in (".edge-run-installed", ".edge-installed"):
        (venv / stamp).touch()  # newer than the copied pyproject.toml: nothing to install


MIC_RATE = 44100
"""A USB microphone's own rate: ALSA opens a file PCM at 44.1 kHz unless told otherwise."""


def microphone_stream() -> np.ndarray:
    """"hey jarvis" and a request, as the microphone hears them at MIC_RATE."""
    x = synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                      phrase("what is the weather like today"), synth.silence(2.0)])
    y = soxr.resample(x.astype(np.float32), 16000, MIC_RATE, quality="VHQ")
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def until_a_clip_then_ctrl_c(line: str, cwd: Path, env: dict[str, str], clips: Path
                             ) -> tuple[str, str]:
    """Run ``line`` until it has written a clip into ``clips``, then press Ctrl-C."""
    before = len(list(clips.glob("*.wav")))
    proc = subprocess.Popen(["bash", "-c", line], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or len(list(clips.glob("*.wav"))) > before,
                 180, f"a clip from `{line}`", poll_s=0.2)
        assert proc.poll() is None, proc.communicate()[1]
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"{line}: {stderr}"
    return stdout, stderr


def test_the_walkthrough_runs_command_by_command_from_a_fresh_copy(tmp_path):
    copy = fresh_copy(tmp_path / "edge-recorder")
    venv_over_this_one(copy)
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "alsa").mkdir()
    alsa = AlsaConfig(tmp_path / "alsa")  # no capture device yet
    this_venv = str(Path(sys.executable).parent)
    path = [str(home / ".local" / "bin")] + [
        p for p in os.environ["PATH"].split(":") if p and p != this_venv]
    env = {k: v for k, v in _clean_make_env(os.environ).items()
           if k not in ("STATE_DIRECTORY", "EDGE_MODELS_DIR", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), PATH=":".join(path), ALSA_CONFIG_PATH=str(alsa.path))
    state = home / ".local" / "state" / "edge-recorder"
    outputs: dict[str, str] = {}

    for line in walkthrough():
        argv = words(line)
        if m := EXTRA_LINE.match(line):
            imports = "; ".join(f"import {mod}" for mod in extra_modules(m[1]))
            out = subprocess.run([str(copy / ".venv" / "bin" / "python"), "-c", imports],
                                 capture_output=True, text=True, env=env, cwd=copy)
            assert out.returncode == 0, f"{line}: {out.stderr}"
            continue
        if "Ctrl-C" in line:
            stdout, stderr = until_a_clip_then_ctrl_c(line, copy, env, state / "clips")
        else:
            done = subprocess.run(["bash", "-c", line], cwd=copy, env=env, capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, f"{line}:\n{done.stdout}\n{done.stderr}"
            stdout, stderr = done.stdout, done.stderr
        outputs[" ".join(argv[:2])] = stdout + stderr
        if argv[:2] == ["make", "run"]:
            # the demo ran, and kept its clip out of the owner's state
            assert "DEMO MODE" in stderr and "Demo finished: 1 detection(s), 1 clip(s)" in stdout
            assert (home / ".local" / "bin" / "edge").resolve() == copy / ".venv" / "bin" / "edge"
            assert not state.exists()
            # now plug the microphone in: the machine's only sound device, so ALSA's default
            alsa.add("usbmic", microphone_stream(), rate=MIC_RATE, default=True)

    assert "usbmic" in outputs["edge devices"]
    assert len(list((state / "clips").glob("*.wav"))) == 1
    assert "hey_jarvis" in outputs["edge log"]
    stats = subprocess.run(["edge", "stats", "--json"], cwd=copy, env=env, capture_output=True,
                           text=True, timeout=120)
    counts = json.loads(stats.stdout)["counts"]
    # the microphone's wake, labelled false; the demo's wake is not in the owner's log
    assert counts["activations"] == 1 and counts["labelled_false"] == 1, counts
    assert len(list((home / ".local/state/edge-recorder-demo/clips").glob("*.wav"))) == 1
    measured = json.loads((home / "room-report" / "report.json").read_text())
    assert abs(measured["audio_hours"] - 600 / 3600) < 1e-5
    assert (home / "room-report" / "report.html").exists()
