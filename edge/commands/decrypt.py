"""``edge decrypt``: open sealed clips with the private key, on the owner's own machine.

    edge decrypt --new-key owner.key          # once: prints the public key for encrypt_to
    edge decrypt --key owner.key CLIP...      # writes <id>.wav and <id>.json

A CLIP is a ``.sealed`` file from the clips directory, a payload received over
MQTT or HTTPS, or an outbox spool file: all hold the same sealed clip.

The id inside a clip comes from whoever sealed it, so it names the output only if it is
a clip id as the recorder issues them (a UUID); any other id gets a name made from the
clip's sha256. Outputs are 0600 and never replace a file without ``--force``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from edge.commands import output_folder
from edge.errors import EdgeError, SealError, UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decrypt", help="open sealed clips with the private key")
    p.add_argument("files", nargs="*", type=Path, metavar="CLIP",
                   help="sealed clips: .sealed files, received payloads or outbox spool files")
    p.add_argument("--key", type=Path, metavar="FILE", help="the private key file")
    p.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                   help="where to write <id>.wav and <id>.json (default: .)")
    p.add_argument("--new-key", type=Path, metavar="FILE",
                   help="make a key pair: write the private key to FILE (0600) and print the "
                        "public key to set as upload.encrypt_to")
    p.add_argument("--force", action="store_true",
                   help="replace <id>.wav and <id>.json when they exist already")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from edge.files import private_dir, write_output
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
    private_dir(args.out)
    failures = 0
    for path in args.files:
        try:
            wav, meta = open_clip(path, key)
            name = output_name(meta, wav)
            meta = dict(meta, file=f"{name}.wav")
            if not args.force:  # neither file is written when either is there
                for suffix in (".wav", ".json"):
                    there = args.out / f"{name}{suffix}"
                    if there.is_symlink() or there.exists():
                        raise UsageError(f"{there} exists; give --force to replace it, or "
                                         "another --out")
            write_output(args.out / f"{name}.wav", wav, args.force)
            write_output(args.out / f"{name}.json",
                         json.dumps(meta, indent=2, sort_keys=True).encode(), args.force)
        except (EdgeError, OSError) as exc:
            failures += 1
            print(f"edge: error: {path}: {getattr(exc, 'strerror', None) or exc}")
            continue
        made = "" if name == meta.get("id") else " (its id is not a clip id; the name is made)"
        print(f"{path} -> {args.out / (name + '.wav')}{made}")
    return 1 if failures else 0


def output_name(meta: dict, wav: bytes) -> str:
    """The clip's id when it is one the recorder issues (a UUID), else a name we make from
    the clip's content (the same clip gets the same name)."""
    from edge.files import is_clip_id
    from edge.privacy.bundle import pack

    clip_id = meta.get("id")
    if isinstance(clip_id, str) and is_clip_id(clip_id):
        return clip_id
    return f"clip-{hashlib.sha256(pack(meta, wav)).hexdigest()[:16]}"


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
