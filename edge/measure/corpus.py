"""What ``edge measure`` listens to: negatives (long recordings) and positives.

Negatives are files, or folders searched recursively; every file found counts,
and one that is not readable audio is listed as skipped. Positives come from one
folder, one utterance per file: files directly in it are positives for every
model measured; a subfolder is a keyword, as public wake-word benchmarks are laid
out, and its files are positives for the model of that name (``hey_jarvis``,
``hey-jarvis`` and ``Hey Jarvis`` all name the model ``hey_jarvis``).

>>> corpus = find_corpus([Path("tv")], Path("positives"), ("hey_jarvis",))
>>> corpus.negatives[0].path, corpus.positives[0].targets
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import UsageError


@dataclass(frozen=True)
class Job:
    """One file to score."""

    index: int
    path: Path
    kind: str
    """``negative`` or ``positive``."""
    targets: tuple[str, ...] = ()
    """For a positive: the models it should wake."""


@dataclass
class Corpus:
    negatives: list[Job]
    positives: list[Job]
    unmatched: list[str] = field(default_factory=list)
    """Positive subfolders that name no measured model (their files are not used)."""

    @property
    def jobs(self) -> list[Job]:
        return self.negatives + self.positives


def keyword(name: str) -> str:
    """A folder name as a model name: lower case, runs of spaces and dashes as ``_``."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not any(part.startswith(".")
                                             for part in p.relative_to(path).parts))


def find_corpus(paths: list[Path], positives: Path | None, models: tuple[str, ...],
                exclude: Path | None = None) -> Corpus:
    """The files to measure, leaving out any under ``exclude`` (the report's own folder).

    Raises :class:`UsageError` for missing or empty inputs.
    """
    negatives: list[Path] = []
    for p in paths:
        if not p.exists():
            raise UsageError(f"input {p} does not exist; give audio files or folders of them")
        negatives += _files_under(p)
    if exclude is not None:
        negatives = [p for p in negatives if not p.resolve().is_relative_to(exclude.resolve())]
    if not negatives:
        raise UsageError(
            f"no input files: {', '.join(str(p) for p in paths)} holds no files; give long "
            "recordings (files, or folders searched recursively) to count false accepts in"
        )
    jobs = [Job(i, p, "negative") for i, p in enumerate(negatives)]
    corpus = Corpus(jobs, [])
    if positives is None:
        return corpus
    if not positives.is_dir():
        raise UsageError(f"--positives {positives} is not a folder; give a folder with one "
                         "utterance per file (or a subfolder per keyword)")
    names: dict[str, tuple[str, ...]] = {}
    for m in models:  # micro:alexa's utterances sit under alexa/ too: one folder, both families
        for k in dict.fromkeys((keyword(m), keyword(m.split(":", 1)[-1]))):
            names[k] = names.get(k, ()) + (m,)
    found: list[tuple[Path, tuple[str, ...]]] = []
    for entry in sorted(positives.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            found.append((entry, models))
        elif entry.is_dir():
            model = names.get(keyword(entry.name))
            if model is None:
                corpus.unmatched.append(entry.name)
                continue
            found += [(f, model) for f in _files_under(entry)]
    if not found:
        known = ", ".join(models)
        raise UsageError(
            f"--positives {positives} holds no utterances for the models measured ({known}); "
            "put one utterance per file in it, or in a subfolder named after the model"
        )
    start = len(jobs)
    corpus.positives = [Job(start + i, p, "positive", t) for i, (p, t) in enumerate(found)]
    return corpus
