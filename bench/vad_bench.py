"""VAD choice: CPU cost and accuracy of Silero (bundled) vs webrtcvad on synthesized audio.

Speech: espeak-ng prose (frames above -45 dBFS count as speech truth; pauses are silence).
Non-speech: digital silence, pink noise at -50 and -35 dBFS, and a 1 kHz tone (a chime).
Writes bench/results/vad.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.wake.engine import frame_dbfs
from edge.wake.models import ModelStore
from edge.wake.vad import SileroVad

OUT = Path(__file__).parent / "results"


def frames(x: np.ndarray) -> list[np.ndarray]:
    return [x[i:i + FRAME_SAMPLES] for i in range(0, len(x) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]


class WebRtc:
    def __init__(self, mode: int = 2) -> None:
        import webrtcvad

        self.v = webrtcvad.Vad(mode)

    def speech_probability(self, frame: np.ndarray) -> float:
        # 80 ms = 4 x 20 ms chunks; speech if most chunks are voiced
        raw = frame.tobytes()
        votes = [self.v.is_speech(raw[i:i + 640], 16000) for i in range(0, len(raw), 640)]
        return sum(votes) / len(votes)

    def reset(self) -> None:
        pass


def evaluate(vad, speech_frames, noise_frames):  # type: ignore[no-untyped-def]
    vad.reset()
    t0 = time.process_time()
    s = [vad.speech_probability(f) >= 0.5 for f in speech_frames]
    vad.reset()
    n = [vad.speech_probability(f) >= 0.5 for f in noise_frames]
    cpu = time.process_time() - t0
    total = len(speech_frames) + len(noise_frames)
    return {
        "speech_recall": round(float(np.mean(s)), 4),
        "false_speech_rate": round(float(np.mean(n)), 4),
        "cpu_ms_per_frame": round(cpu / total * 1000, 4),
        "cpu_s_per_audio_s": round(cpu / (total * 0.08), 5),
    }


def main() -> None:
    store = ModelStore.default()
    speech = synth.prose(120.0, seed=11)
    sp = [f for f in frames(speech) if frame_dbfs(f) > -30.0]
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 1000 * np.arange(16000 * 5) / 16000)).astype(
        np.int16)
    noise = synth.concat([synth.silence(10.0), synth.pink_noise(30.0, -50.0, seed=1),
                          synth.pink_noise(30.0, -35.0, seed=2), tone])
    nz = frames(noise)
    results = {
        "silero (bundled, onnxruntime)": evaluate(SileroVad.load(store.path("silero_vad")), sp,
                                                  nz),
        "webrtcvad mode 2": evaluate(WebRtc(2), sp, nz),
        "webrtcvad mode 3": evaluate(WebRtc(3), sp, nz),
        "frames": {"speech": len(sp), "non_speech": len(nz)},
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "vad.json").write_text(json.dumps(results, indent=2))
    print(f"{'VAD':<32} {'recall':>7} {'false':>7} {'ms/frame':>9}")
    for k, v in results.items():
        if k != "frames":
            print(f"{k:<32} {v['speech_recall']:>7} {v['false_speech_rate']:>7} "
                  f"{v['cpu_ms_per_frame']:>9}")


if __name__ == "__main__":
    main()
