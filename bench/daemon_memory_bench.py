"""The daemon's memory, start-up and CPU with the models on numpy, against onnxruntime and
openwakeword (issue 18, item 4).

    .venv/bin/python bench/daemon_memory_bench.py                 # 120 s of audio, 5 runs each
    .venv/bin/python bench/daemon_memory_bench.py --seconds 30 --repeat 1

One wake word (hey_jarvis). The audio (cached in bench/.cache/) is a wake phrase and a
request, then prose: the daemon detects, records a clip and runs the VAD, as on a device.

* ``edge run``: the real command (``edge run --config C --input WAV``) with ``wake.runtime``
  ``auto`` (the stock models on numpy, no onnxruntime in the process) and ``onnxruntime``
  (every model on onnxruntime: the daemon before issue 18). Measured from the parent: start
  to first scored frame (wall seconds from before ``Popen`` to reading the daemon's own
  "first frame scored" log line, which its audio loop writes after the first frame has gone
  through the detector), the CPU the process had used by then and whether onnxruntime or
  numpy.random is mapped into it (/proc), peak RSS (``ru_maxrss`` of the waited child) and
  CPU (user + system) for the whole run, start-up included.
* ``openwakeword``: ``openwakeword.model.Model.predict`` over the same WAV, and the engine
  alone (ours, either runtime), run by bench/engine_bench.py's child: peak RSS (VmHWM),
  start to first scored frame, CPU per audio second.
* per-frame CPU of each stage, in this process, for each runtime: the melspectrogram (one 80
  ms frame with its context), the streamed embedding step (numpy in both runtimes; the
  whole-window embedding on onnxruntime for comparison), the classifier, the VAD (two Silero
  calls per frame; it runs only while a clip is recorded).

Start-up and RSS: the median of ``--repeat`` runs (after one untimed run of each, which
fills the bytecode cache); CPU: the least of them (the least disturbed by other load). The
venv's shared libraries are first dropped from the page cache (``uncache_libraries``), so
the RSS of their code pages does not depend on how recently pip wrote them. The machine may
be shared: ratios between rows of one run are the comparison to trust; ``load_avg`` and the
wall time of ``python -c "import numpy"`` (the machine's pace) are recorded. Targets:
``edge run`` peak RSS <= 60 MB, start to first scored frame <= 0.15 s (wall, so only meaningful on
a quiet machine; the CPU up to that frame is recorded too), CPU of ``edge run`` (numpy) no
more than 1.05 x onnxruntime's, and the numpy engine's scores within 1e-3 of openwakeword's
on every frame with the same detections. Results: a table on stdout and
bench/results/daemon_memory.json; exit status 1 if a target or check fails."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"
WAKE = "hey_jarvis"
FIRST_MARKER = b"first frame scored"
RSS_LIMIT_MB = 60.0
STARTUP_LIMIT_S = 0.15
CPU_LIMIT_RATIO = 1.05
RUNTIMES = ("auto", "onnxruntime")
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))


# --- the parent -------------------------------------------------------------------------

def bench_audio(seconds: float) -> Path:
    """A wake phrase and a request, then prose, as a 16 kHz WAV (cached)."""
    path = CACHE / f"daemon-{seconds:g}s.wav"
    if path.exists():
        return path
    import soundfile as sf

    from edge.audio import synth

    head = synth.concat([synth.silence(2.0), synth.speak("hey jarvis"), synth.silence(0.3),
                         synth.speak("what is the weather like today"), synth.silence(2.5)])
    rest = max(0.0, seconds - len(head) / 16000)
    pcm = synth.concat([head, synth.prose(rest, seed=11)])
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.wav")
    sf.write(str(tmp), pcm, 16000, subtype="PCM_16")
    os.replace(tmp, path)
    return path


def write_config(tmp: Path, runtime: str, tag: str) -> Path:
    cfg = tmp / f"{tag}.toml"
    cfg.write_text(f'state_dir = "{tmp / tag}"\nlog_level = "info"\n'
                   f'[wake]\nmodels = ["{WAKE}"]\nruntime = "{runtime}"\n')
    return cfg


def child_env() -> dict[str, str]:
    """Children write and reuse bytecode in a private cache, as an installed package has it
    compiled: start-up then measures the daemon, not Python's compiler."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(CACHE / "pycache")
    return env


def run_edge(cfg: Path, wav: Path) -> dict[str, Any]:
    """The real `edge run` on the WAV: start to its first scored frame (the daemon's own
    "first frame scored" log line, read as it is written), the CPU it had spent by then
    (/proc), and for the whole run peak RSS and CPU from the kernel's accounting."""
    edge = Path(sys.executable).parent / "edge"
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(edge), "run", "--config", str(cfg), "--input", str(wav)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=child_env())
    assert proc.stderr is not None
    startup = startup_cpu = None
    ort = rnd = False
    tail: list[bytes] = []
    for line in proc.stderr:
        if startup is None and FIRST_MARKER in line:
            startup = time.perf_counter() - t0
            startup_cpu = process_cpu_s(proc.pid)
            maps = Path(f"/proc/{proc.pid}/maps").read_text()  # the models are loaded
            ort, rnd = "onnxruntime" in maps, "numpy/random" in maps
        tail = (tail + [line])[-20:]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = b"".join(tail).decode(errors="replace")
    if proc.returncode != 0 or startup is None:
        raise SystemExit(f"edge run failed ({proc.returncode}): {err[-2000:]}")
    return {"peak_rss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime,
            "wall_s": wall, "startup_s": startup, "startup_cpu_s": startup_cpu,
            "onnxruntime_loaded": ort, "numpy_random_loaded": rnd}


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a running process, all its threads (/proc/PID/stat
    fields 14 and 15)."""
    from edge.service.startup import stat_fields

    try:
        fields = stat_fields(f"/proc/{pid}/stat")
    except (OSError, ValueError):
        return None
    return (int(fields[14 - 3]) + int(fields[15 - 3])) / os.sysconf("SC_CLK_TCK")


def run_engine_child(engine: str, wav: Path, tag: str) -> dict[str, Any]:
    import engine_bench

    from edge.wake.models import ModelStore

    store = ModelStore.default()
    models = {n: str(store.path(n)) for n in ("melspectrogram", "embedding", WAKE)}
    return engine_bench.run_child(engine, wav, models, f"daemon-{tag}")


def stage_cpu(runtime: str, wav: Path, reps: int) -> dict[str, float]:
    """CPU microseconds per 80 ms frame of each stage, on frames of the bench audio."""
    import soundfile as sf

    from edge.wake.engine import EMB_STEP, EMB_WINDOW, Classifier, FeatureModels
    from edge.wake.models import ModelStore
    from edge.wake.vad import SileroVad

    store = ModelStore.default()
    feats = FeatureModels.load(store.path("melspectrogram"), store.path("embedding"),
                               runtime=runtime)
    clf = Classifier.load(WAKE, store.path(WAKE), runtime=runtime)
    vad = SileroVad.load(store.path("silero_vad"), runtime)
    pcm = sf.read(str(wav), dtype="int16")[0][:16000 * 12]
    x = pcm.astype(np.float32)
    spec = feats.melspectrogram(x)
    stream = feats.streaming_embedding()
    stream.prime(spec[:EMB_WINDOW])
    n_frames = (len(spec) - EMB_WINDOW) // EMB_STEP
    emb = np.vstack([stream.step(spec[EMB_WINDOW + i * EMB_STEP - EMB_STEP:
                                      EMB_WINDOW + i * EMB_STEP]) for i in range(1, n_frames)])
    frames = pcm[: len(pcm) // 1280 * 1280].reshape(-1, 1280)

    def per_call(fn: Any, items: list[Any]) -> float:
        best = float("inf")
        for _ in range(reps):
            t0 = time.process_time()
            for it in items:
                fn(it)
            best = min(best, (time.process_time() - t0) / len(items))
        return best * 1e6

    mel_in = [x[i:i + 1760] for i in range(0, len(x) - 1760, 1280)][:100]
    rows = [spec[EMB_WINDOW + i * EMB_STEP - EMB_STEP:EMB_WINDOW + i * EMB_STEP]
            for i in range(1, 100)]
    stream.prime(spec[:EMB_WINDOW])
    feat = [emb[i:i + clf.n_embeddings] for i in range(0, 100)]
    windows = [spec[i * EMB_STEP:i * EMB_STEP + EMB_WINDOW] for i in range(0, 40)]
    return {
        "mel_us": per_call(feats.melspectrogram, mel_in),
        "embedding_step_us": per_call(stream.step, rows),
        "embedding_window_us": per_call(feats.embeddings, windows),
        "classifier_us": per_call(clf.score, feat),
        "vad_us": per_call(vad.speech_probability, list(frames[:60])),
    }


def median(values: list[float]) -> float:
    return float(np.median(values))


def uncache_libraries() -> int:
    """Drop the page cache of the venv's shared libraries (numpy's, onnxruntime's, ...);
    returns how many files were advised.

    A file pip has just written sits in the page cache in large folios, and a page fault
    in a mapping of it maps the whole folio: right after ``make setup`` the daemon's peak
    RSS read 6 MB higher (60.2 against 53.5 MB) for the same code pages. Read back from
    disk, as after a reboot, the folios are small. Every run of the bench starts here, so
    its RSS does not depend on how recently the venv was installed."""
    site = Path(np.__file__).resolve().parents[1]
    n = 0
    for lib in (*site.glob("*/**/*.so*"), *site.glob("*.libs/*.so*")):
        try:
            fd = os.open(lib, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        finally:
            os.close(fd)
    return n


def reference_import_s(runs: int = 7) -> float:
    """Wall seconds of ``python -c "import numpy"`` (median; one untimed run first): a fixed
    workload none of our code is in, recorded beside the start-up figures. This machine is a
    shared VM whose speed drifts (the same code's start-up read 0.14 s and 0.20 s an hour
    apart): compare runs by it."""
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy"], check=True)
        if i:
            times.append(time.perf_counter() - t0)
    return median(times)


def parent(args: argparse.Namespace) -> int:
    from engine_bench import detections

    os.environ.clear()
    os.environ.update(child_env())  # engine_bench's children too
    wav = bench_audio(args.seconds)
    uncache_libraries()
    numpy_import_s = reference_import_s()
    audio_s = args.seconds
    load0 = os.getloadavg()
    edge_runs: dict[str, list[dict[str, Any]]] = {r: [] for r in RUNTIMES}
    engines = ("openwakeword", "edge", "edge-ort")
    engine_runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    with tempfile.TemporaryDirectory(prefix="edge-daemon-bench-") as tmp_s:
        tmp = Path(tmp_s)
        for runtime in RUNTIMES:  # untimed: fills the bytecode cache
            run_edge(write_config(tmp, runtime, f"{runtime}-warm"), wav)
        for engine in engines:
            run_engine_child(engine, wav, f"{engine}-warm")
        for rep in range(args.repeat):
            for runtime in RUNTIMES:
                print(f"run {rep + 1}/{args.repeat}: edge run, runtime {runtime} ...",
                      flush=True)
                cfg = write_config(tmp, runtime, f"{runtime}-{rep}")
                edge_runs[runtime].append(run_edge(cfg, wav))
            for engine in engines:
                print(f"run {rep + 1}/{args.repeat}: engine {engine} ...", flush=True)
                engine_runs[engine].append(run_engine_child(engine, wav, f"{engine}-{rep}"))
    stages = {r: stage_cpu(r, wav, 5) for r in RUNTIMES}
    load1 = os.getloadavg()

    rows: dict[str, dict[str, Any]] = {}
    for runtime in RUNTIMES:
        e = edge_runs[runtime]
        rows[f"edge run ({runtime})"] = {
            "peak_rss_mb": median([r["peak_rss_kb"] for r in e]) / 1024,
            "startup_s": median([r["startup_s"] for r in e]),
            "startup_cpu_s": median([r["startup_cpu_s"] for r in e]),
            "cpu_x_realtime": min(r["cpu_s"] for r in e) / audio_s,
            "onnxruntime_loaded": any(r["onnxruntime_loaded"] for r in e),
            "numpy_random_loaded": any(r["numpy_random_loaded"] for r in e),
        }
    names = {"openwakeword": "openwakeword loop", "edge": "engine only (numpy)",
             "edge-ort": "engine only (onnxruntime)"}
    scores = {}
    for engine, runs in engine_runs.items():
        rows[names[engine]] = {
            "peak_rss_mb": median([r["peak_rss_kb"] for r in runs]) / 1024,
            "startup_s": median([r["startup_s"] for r in runs]),
            "cpu_x_realtime": min(r["cpu_x_realtime"] for r in runs),
        }
        scores[engine] = np.load(runs[0]["scores_file"])
    numpy_row, ort_row = rows["edge run (auto)"], rows["edge run (onnxruntime)"]
    ratios = {
        "rss edge run numpy / onnxruntime": numpy_row["peak_rss_mb"] / ort_row["peak_rss_mb"],
        "rss edge run numpy / openwakeword":
            numpy_row["peak_rss_mb"] / rows["openwakeword loop"]["peak_rss_mb"],
        "startup numpy / onnxruntime": numpy_row["startup_s"] / ort_row["startup_s"],
        "cpu edge run numpy / onnxruntime":
            numpy_row["cpu_x_realtime"] / ort_row["cpu_x_realtime"],
        "cpu engine numpy / onnxruntime": rows["engine only (numpy)"]["cpu_x_realtime"]
            / rows["engine only (onnxruntime)"]["cpu_x_realtime"],
    }
    max_diff = float(np.abs(scores["edge"] - scores["openwakeword"]).max())
    checks = {
        "edge run (auto) never loads onnxruntime": not numpy_row["onnxruntime_loaded"],
        "edge run (auto) has not loaded numpy.random by its first frame":
            not numpy_row["numpy_random_loaded"],
        "numpy engine within 1e-3 of openwakeword on every frame": max_diff < 1e-3,
        "numpy engine detects on the same frames as openwakeword":
            detections(scores["edge"]) == detections(scores["openwakeword"]),
        "the wake phrase is detected": len(detections(scores["edge"])) >= 1,
    }
    targets = {
        f"edge run peak RSS <= {RSS_LIMIT_MB:g} MB":
            (numpy_row["peak_rss_mb"], numpy_row["peak_rss_mb"] <= RSS_LIMIT_MB),
        f"start to first scored frame <= {STARTUP_LIMIT_S} s":
            (numpy_row["startup_s"], numpy_row["startup_s"] <= STARTUP_LIMIT_S),
        f"edge run CPU numpy / onnxruntime <= {CPU_LIMIT_RATIO}":
            (ratios["cpu edge run numpy / onnxruntime"],
             ratios["cpu edge run numpy / onnxruntime"] <= CPU_LIMIT_RATIO),
    }

    print()
    print(f"{audio_s:g} s of audio, one wake word ({WAKE}), {args.repeat} run(s) each; "
          f"load average {load0[0]:.2f} before, {load1[0]:.2f} after; "
          f"`python -c 'import numpy'` {numpy_import_s:.3f} s (the machine's pace)")
    head = f"{'':<28} {'peak RSS MB':>11} {'start s':>8} {'start CPU s':>11} {'CPU x rt':>9}"
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        cpu_start = f"{r['startup_cpu_s']:.3f}" if "startup_cpu_s" in r else ""
        print(f"{name:<28} {r['peak_rss_mb']:>11.1f} {r['startup_s']:>8.3f} {cpu_start:>11} "
              f"{r['cpu_x_realtime']:>9.5f}")
    print()
    print(f"per-frame CPU (us) {'numpy':>8} {'onnxruntime':>12}")
    for key in stages["auto"]:
        print(f"  {key:<24} {stages['auto'][key]:>8.1f} {stages['onnxruntime'][key]:>12.1f}")
    print()
    for name, value in ratios.items():
        print(f"ratio {name:<40} {value:.3f}")
    print(f"max |score difference| numpy engine vs openwakeword: {max_diff:.2e}")
    for name, (value, ok) in targets.items():
        print(f"target {name}: {value:.3f} {'PASS' if ok else 'FAIL'}")
    for name, ok in checks.items():
        print(f"check  {name}: {'PASS' if ok else 'FAIL'}")

    import numpy

    report = {
        "seconds": audio_s, "repeat": args.repeat, "wake_word": WAKE,
        "load_avg_before_after": [load0[0], load1[0]],
        "reference_numpy_import_s": numpy_import_s,
        "rows": rows, "stage_cpu_us_per_frame": stages, "ratios": ratios,
        "targets": {k: {"value": v, "pass": ok} for k, (v, ok) in targets.items()},
        "checks": checks, "max_score_diff": max_diff,
        "method": {
            "peak_rss_mb": "edge run: ru_maxrss of the waited child; engine rows: VmHWM; "
                           "median of runs",
            "startup_s": "perf_counter from before Popen to reading edge run's 'first "
                         "frame scored' log line; median",
            "startup_cpu_s": "edge run's user + system CPU (/proc, clock ticks) when that "
                             "line is read: all its threads from exec on; median",
            "cpu_x_realtime": "edge run: user + system CPU of the whole run (start-up "
                              "included) per audio second; engine rows: after warm-up; "
                              "least of runs",
        },
        "environment": {"python": sys.version.split()[0],
                        "interpreter": os.path.realpath(sys.executable),
                        "numpy": numpy.__version__,
                        "cpus": os.cpu_count(),
                        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "daemon_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {(RESULTS / 'daemon_memory.json').relative_to(ROOT)}")
    ok = all(checks.values()) and all(ok for _, ok in targets.values())
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="seconds of audio")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each")
    return parent(ap.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
