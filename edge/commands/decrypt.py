"""``edge decrypt``: open sealed clips with the private key, on the owner's own machine.

    edge decrypt --new-key owner.key          # once: prints the public key for encrypt_to
    edge decrypt --key owner.key CLIP...      # writes <id>.wav and <id>.json

A CLIP is a ``.sealed`` file from the clips directory, a payload received over
MQTT or HTTPS, or an outbox spool file: all hold the same sealed clip.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.commands import output_folder
from edge.errors import SealError, UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decrypt", help="open sealed clips with the private key")
    p.add_argument("files", nargs="*", type=Path, metavar="CLIP")
    p.add_argument("--key", type=Path, metavar="FILE", help="the private key file")
    p.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                   help="where to write <id>.wav and <id>.json (default: .)")
    p.add_argument("--new-key", type=Path, metavar="FILE",
                   help="make a key pair: write the private key to FILE (0600) and print the "
                        "public key to set as upload.encrypt_to")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from edge.privacy import crypto

    if args.new_key is not None:
        private, public = crypto.new_keypair()
        crypto.write_private_key(args.new_key, private)
        print(f"private key written to {args.new_key}: keep it off the device")
        print("set this on the device, in the [upload] section:")
        print(f'encrypt_to = "{public}"')
        return 0
    if args.key is None or not args.files:
        raise UsageError("give --key FILE and one or more sealed clips (or --new-key FILE to "
                         "make a key pair)")
    output_folder(args.out, "--out")
    key = crypto.read_private_key(args.key)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in args.files:
        try:
            wav, meta = open_clip(path, key)
        except (SealError, OSError) as exc:
            failures += 1
            print(f"edge: error: {path}: {getattr(exc, 'strerror', None) or exc}")
            continue
        clip_id = str(meta.get("id") or path.stem)
        (args.out / f"{clip_id}.wav").write_bytes(wav)
        meta = dict(meta, file=f"{clip_id}.wav")
        (args.out / f"{clip_id}.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        print(f"{path} -> {args.out / (clip_id + '.wav')}")
    return 1 if failures else 0


def open_clip(path: Path, private_key: str) -> tuple[bytes, dict]:
    """(WAV bytes, metadata) of a sealed clip, a received payload or an outbox spool file."""
    from edge.privacy import crypto
    from edge.privacy.bundle import BundleError, unpack

    data = path.read_bytes()
    if not crypto.is_sealed(data):
        try:
            _, body = unpack(data)
        except BundleError:
            body = b""
        if not crypto.is_sealed(body):
            raise SealError("not a sealed clip (clips are sealed only when upload.encrypt_to "
                            "was set when they were recorded)")
        data = body
    try:
        meta, wav = unpack(crypto.open_sealed(data, private_key))
    except BundleError as exc:
        raise SealError(f"opened, but the content is not a clip ({exc})") from None
    return wav, meta
