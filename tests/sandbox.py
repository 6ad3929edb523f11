"""See cloud_transfer work without any cloud account: ``python -m tests.sandbox``.

Starts a local S3 (moto server) and the project's Drive emulator on 127.0.0.1, puts a few sample
photos and videos in a bucket, runs a real transfer with ``cloud_transfer.py`` as a subprocess, and
prints where every file landed in the emulated Drive plus the tool's own summary. A second run
shows that nothing is uploaded twice. Needs requirements-dev.txt installed.

With ``--keep`` the servers stay up after the runs, and the sandbox prints the lines to paste into
another terminal (``cd``, ``export``, example commands) to explore it with ``status``, ``verify``
and ``rollback``, until Enter is pressed (or stdin ends).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.local_cloud import jpeg_with_exif, local_cloud, photo_bytes

PROJECT = Path(__file__).resolve().parent.parent
SAMPLES = {
    "2019/Trip to Lisbon/IMG_0001.jpg": 180_000,
    "2019/Trip to Lisbon/IMG_0002.HEIC": 240_000,
    "2019/Trip to Lisbon/clip.mov": 1_400_000,
    "2020/O'Brien's party.jpg": 95_000,
    "2020/Ünïcødé фото.png": 60_000,
    "2020/": 0,                     # a folder marker: not copied
    "notes/shopping-list.txt": 120,  # not a photo: not copied
}
#: Printed before the wait for Enter; tests read the output up to this line.
KEEP_PROMPT = "Servers still running; press Enter (or Ctrl-D) to stop them."


def run_tool(workdir: Path, env: dict[str, str], *args: str) -> int:
    command = [sys.executable, str(PROJECT / "cloud_transfer.py"), *args]
    print(f"\n$ {' '.join(['python', 'cloud_transfer.py', *args])}", flush=True)
    return subprocess.run(command, cwd=workdir, env=env).returncode


def explore_text(workdir: Path, env: dict[str, str]) -> str:
    """What a user pastes into another terminal to use the running sandbox: cd and the variables
    that point the tool at the local servers (fake credentials only), then example commands.
    No shell comments among them: zsh does not accept them when typed or pasted."""
    changed = {name: value for name, value in env.items() if os.environ.get(name) != value}
    tool = f"{shlex.quote(sys.executable)} {shlex.quote(str(PROJECT / 'cloud_transfer.py'))}"
    setup = [f"cd {shlex.quote(str(workdir))}",
             *(f"export {name}={shlex.quote(value)}" for name, value in sorted(changed.items()))]
    examples = [f"{tool} status", f"{tool} verify", f"{tool} rollback --run last"]
    return ("\nTo explore the sandbox while it runs, paste these lines into another terminal:\n\n"
            + "\n".join(setup) + "\n\nthen try, for example:\n\n" + "\n".join(examples))


def wait_for_enter() -> None:
    print(f"\n{KEEP_PROMPT}", flush=True)
    try:
        input()
    except (EOFError, KeyboardInterrupt):   # stdin closed (Ctrl-D, a pipe) or Ctrl-C: stop all the same
        print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true",
                        help="keep the servers running, print how to use them from another terminal, "
                             "and wait for Enter")
    options = parser.parse_args(argv)
    # The tool's own output goes straight to this file descriptor: keep ours in order with it.
    sys.stdout.reconfigure(line_buffering=True)
    with local_cloud("sandbox-photos") as cloud:
        for key, size in SAMPLES.items():
            body = photo_bytes(key, size)
            if key.endswith(".jpg"):   # taken in Lisbon on 4 May 2019: Drive shows that date, not the upload's
                body = jpeg_with_exif("2019:05:04 18:30:00", "+01:00", body)
            cloud.s3.put_object(Bucket=cloud.bucket, Key=key, Body=body)
        print(f"local S3 (moto):    {cloud.moto_url}  bucket {cloud.bucket}, {len(SAMPLES)} objects")
        print(f"Drive emulator:     {cloud.drive.url}")
        print(f"working directory:  {cloud.workdir}")
        env = cloud.tool_env()
        first = run_tool(cloud.workdir, env)
        print("\nWhere the files landed in (emulated) Google Drive:")
        drive = cloud.drive
        for item in sorted(drive.list_files(), key=lambda f: drive.path_of(f["id"])):
            if item.get("mimeType") != "application/vnd.google-apps.folder":
                print(f"  {drive.path_of(item['id'])}  ({item['size']} bytes, dated {item['modifiedTime'][:10]}, "
                      f"md5 {item['md5Checksum']})")
        second = run_tool(cloud.workdir, env)
        verified = run_tool(cloud.workdir, env, "verify")
        if options.keep:
            print(explore_text(cloud.workdir, env))
            wait_for_enter()
        return first or second or verified


if __name__ == "__main__":
    sys.exit(main())
