"""``edge log``, ``edge label`` and ``edge stats`` as a person (or a researcher) uses them."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.activations.store import ActivationLog
from edge.cli import main as edge
from tests.activation_helpers import row

T0 = 1_714_521_600.0  # 2024-05-01T00:00Z


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "activations.sqlite3"
    with ActivationLog.open(path) as log:
        p = log.open_period(T0, {"hey_jarvis": 0.5}, heard_s=7200.0, end_wall=T0 + 86400 * 3,
                            end_reason="stopped")
        log.record(row("11111111-aaaa", wall_time=T0 + 60, model="hey_jarvis", period=p))
        log.record(row("22222222-bbbb", wall_time=T0 + 86400 * 2, model="hey_jarvis",
                       outcome="no_speech", clip_id=None, likely_false=True,
                       flags=("no_speech",), duration_s=4.6, period=p))
        log.record(row("33333333-cccc", wall_time=T0 + 86400 * 2 + 60, model="hey_jarvis",
                       duration_s=22.0, period=p))
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    code = edge(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_log_lists_every_activation(db, capsys):
    code, out, _ = run(capsys, "log", "--db", str(db))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["#", "time", "(UTC)"]
    assert [ln.split()[0] for ln in lines[1:]] == ["1", "2", "3"]
    assert "no_speech" in lines[2] and "2024-05-03 00:00:00" in lines[2]


def test_label_then_false_only_shows_labelled_and_flagged_wakes(db, capsys):
    code, out, _ = run(capsys, "label", "3", "false", "--db", str(db))
    assert (code, out.strip()) == (0, "activation 3 (33333333-cccc) labelled false (was unknown)")
    code, out, _ = run(capsys, "label", "33333333", "true", "--db", str(db))
    assert out.strip().endswith("labelled true (was false (cli))")
    run(capsys, "label", "last", "false", "--db", str(db))
    code, out, _ = run(capsys, "log", "--json", "--false-only", "--db", str(db))
    got = [json.loads(ln) for ln in out.splitlines()]
    assert [r["n"] for r in got] == [2, 3]
    assert [h["label"] for h in got[1]["label_history"]] == ["false", "true", "false"]


def test_log_since_and_limit(db, capsys):
    _, out, _ = run(capsys, "log", "--json", "--since", "2024-05-02", "--db", str(db))
    assert [json.loads(ln)["n"] for ln in out.splitlines()] == [2, 3]
    _, out, _ = run(capsys, "log", "--json", "--limit", "1", "--db", str(db))
    assert [json.loads(ln)["n"] for ln in out.splitlines()] == [3]


@pytest.mark.parametrize("name", ["wakes.csv", "wakes.json", "wakes.jsonl"])
def test_export_for_researchers(db, tmp_path, capsys, name):
    out_file = tmp_path / name
    code, _, err = run(capsys, "log", "--export", str(out_file), "--db", str(db))
    assert code == 0 and "wrote 3 activation(s)" in err
    text = out_file.read_text()
    if name.endswith(".csv"):
        got = list(csv.DictReader(io.StringIO(text)))
        assert got[1]["outcome"] == "no_speech" and got[1]["likely_false"] == "True"
        assert got[0]["time"] == "2024-05-01T00:01:00.000Z"
    elif name.endswith(".jsonl"):
        got = [json.loads(ln) for ln in text.splitlines()]
    else:
        got = json.loads(text)
    assert [r["id"] for r in got] == ["11111111-aaaa", "22222222-bbbb", "33333333-cccc"]


def test_stats_text_and_json(db, capsys):
    run(capsys, "label", "3", "false", "--db", str(db))
    code, out, _ = run(capsys, "stats", "--db", str(db))
    assert code == 0
    assert "Listening: 2.00 h" in out
    assert "False activations per listening hour: 1.00" in out
    code, out, _ = run(capsys, "stats", "--json", "--since", "2024-05-02", "--db", str(db))
    report = json.loads(out)
    assert report["counts"]["activations"] == 2 and report["counts"]["false"] == 2
    assert report["since"] == "2024-05-02T00:00:00.000Z"
    assert report["false_durations"]["max_s"] == 22.0


@pytest.mark.parametrize("args,message", [
    (["label", "99", "false"], "no activation 99 in the log"),
    (["label", "deadbeef", "false"], "no activation deadbeef in the log"),
    (["label", "1", "maybe"], "label 'maybe' is not allowed; give true"),
    (["label", "1", "yes"], "label 'yes' is not allowed"),
    (["stats", "--since", "last tuesday"], "--since 'last tuesday' is not a date; give YYYY-MM-DD"),
    (["log", "--since", "2024-02-30"], "is not a date"),
    (["log", "--limit", "0"], "--limit 0 is not allowed; give 1 or more"),
    (["log", "--export", "out.txt"], "end it in .csv, .json, .jsonl"),
])
def test_bad_input_gets_a_clear_one_line_error(db, capsys, args, message):
    code, out, err = run(capsys, *args, "--db", str(db))
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_missing_log_says_when_it_will_exist(tmp_path, capsys):
    code, _, err = run(capsys, "log", "--db", str(tmp_path / "none.sqlite3"))
    assert code == 2 and "there is no activation log at" in err and "edge run" in err
    assert not (tmp_path / "none.sqlite3").exists()


def test_a_corrupt_log_is_reported_by_the_cli_without_traceback(tmp_path):
    bad = tmp_path / "activations.sqlite3"
    bad.write_bytes(b"\x00not sqlite\x00" * 500)
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'state_dir = "{tmp_path}"\n')
    out = subprocess.run([sys.executable, "-m", "edge", "stats", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("edge: error: the activation log ")
    assert "is corrupt" in out.stderr and f"mv {bad} {bad}.bad" in out.stderr
    assert "Traceback" not in out.stderr
