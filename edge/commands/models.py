"""``edge models fetch|list``: install and check the verified model files of both families
(openWakeWord and microWakeWord) and the shared feature and VAD models."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.wake.models import ModelStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="fetch and list the wake-word models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    f = msub.add_parser("fetch", help="download the pinned wheels and install verified models")
    f.add_argument("--from", dest="source", type=Path, metavar="PATH",
                   help="install from a local folder (the wheels or the model files), or "
                        "from one of the pinned wheels, its models only (air-gapped devices)")
    f.add_argument("--dir", type=Path, help="models directory (default: the configured one)")
    f.set_defaults(func=fetch)
    l_ = msub.add_parser("list", help="show installed models and whether they verify")
    l_.add_argument("--dir", type=Path, help="models directory")
    l_.set_defaults(func=list_models)


def fetch(args: argparse.Namespace) -> int:
    store = ModelStore.default(args.dir)
    missing = [m.name for m in store.manifest.models if store.status(m.name).state != "ok"]
    if not missing and args.source is None:
        print(f"all {len(store.manifest.models)} models installed and verified in "
              f"{store.directory}")
        return 0
    for path in store.fetch(args.source):
        print(f"installed {path}")
    still = [m.name for m in store.manifest.models if store.status(m.name).state != "ok"]
    if still:
        print(f"not installed yet: {', '.join(still)}; run `edge models fetch` with the "
              "other wheel (or a folder holding both)")
        return 1
    print(f"all {len(store.manifest.models)} models verified (sha256) in {store.directory}")
    return 0


FAMILIES = {"wakeword": "openWakeWord", "micro": "microWakeWord"}
"""The wake-word families by manifest kind; the other kinds are shared parts."""


def list_models(args: argparse.Namespace) -> int:
    store = ModelStore.default(args.dir)
    print(f"models in {store.directory}:")
    print(f"  {'NAME':<18} {'FAMILY':<14} {'STATE':<8} {'FILE':<24} LICENCE")
    bad = 0
    for m in store.manifest.models:
        st = store.status(m.name)
        bad += st.state != "ok"
        family = FAMILIES.get(m.kind, f"({m.kind})")
        print(f"  {m.name:<18} {family:<14} {st.state:<8} {m.file:<24} {m.license}")
    if bad:
        print("run `edge models fetch` to install or repair the models marked missing/corrupt")
    return 1 if bad else 0
