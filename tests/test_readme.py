"""The README and docs/ checked against the code: every option of `--help` is documented and every
documented option exists; every command is documented; the exit-code table matches `ExitCode` and
`--help`. And the sandbox the README sends a newcomer to works as it says: `--keep` prints lines
that let `status`, run from another shell, see the copy."""
from __future__ import annotations

import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloud_transfer as ct
from tests.sandbox import KEEP_PROMPT

PROJECT = Path(__file__).resolve().parent.parent
DOC_FILES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]

#: `--words` the docs show that belong to other programs (or are not options at all).
NOT_OURS = {
    "--drive-stop-on-upload-limit": "rclone's, in the README's exit-code notes",
    "--keep": "python -m tests.sandbox --keep",
    "--full": "python -m tests.benchmark --full",
    "--smoke": "python -m tests.benchmark --smoke",
    "--script": "python -m tests.list_lag_check --script",
    "--subprocesses": "py-spy record --subprocesses",
    "--idle": "py-spy record --idle",
    "--x-s3": "the name suffix of S3 Express directory buckets",
    "--profile": "aws sso login --profile NAME",
    "--frobnicate": "the unknown flag of the bad-input table",
    "--bukcet": "a mistyped --bucket in the bad-input table",
    "--dry": "an abbreviation the bad-input table says is not taken",
}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def doc_texts() -> dict[str, str]:
    return {path.relative_to(PROJECT).as_posix(): path.read_text(encoding="utf-8") for path in DOC_FILES}


def parser_options() -> set[str]:
    return {flag for action in ct.build_parser()._actions for flag in action.option_strings if flag.startswith("--")}


def test_every_option_of_the_parser_is_documented():
    documented = {flag for text in doc_texts().values() for flag in OPTION.findall(text)}
    missing = parser_options() - documented
    assert not missing, f"options in --help that README.md and docs/*.md never mention: {sorted(missing)}"


def test_every_documented_option_exists():
    unknown = {}
    for name, text in doc_texts().items():
        for flag in set(OPTION.findall(text)) - parser_options() - set(NOT_OURS):
            unknown.setdefault(flag, name)
    assert not unknown, ("options the docs mention that the parser does not have (add them to the parser, "
                         f"fix the docs, or list another tool's option in NOT_OURS): {dict(sorted(unknown.items()))}")


def test_every_command_is_documented():
    texts = "\n".join(doc_texts().values())
    for command in ct.COMMAND_NAMES:
        assert re.search(rf"^\| `{command}`", texts, re.M), f"no row for `{command}` in a command table"


def exit_code_table() -> dict[int, tuple[str, str, str]]:
    """The docs' one table headed | code | name | meaning | rclone's nearest |: code -> (name, meaning, rclone)."""
    tables = []
    for name, text in doc_texts().items():
        lines = text.splitlines()
        for start, line in enumerate(lines):
            if re.fullmatch(r"\|\s*code\s*\|\s*name\s*\|\s*meaning\s*\|\s*rclone's nearest\s*\|", line.strip()):
                rows = {}
                for row in lines[start + 2:]:
                    match = re.fullmatch(r"\|\s*(\d+)\s*\|\s*`?(\w+)`?\s*\|\s*(.+?)\s*\|\s*([^|]+?)\s*\|", row.strip())
                    if not match:
                        break
                    rows[int(match[1])] = (match[2], match[3], match[4])
                tables.append((name, rows))
    assert len(tables) == 1, f"expected one exit-code table (| code | name | meaning | rclone's nearest |), found {len(tables)}"
    return tables[0][1]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_the_exit_code_table_matches_the_code_and_help():
    table = exit_code_table()
    assert {code: name for code, (name, _, _) in table.items()} == {int(code): code.name for code in ct.ExitCode}
    assert {code: rclone for code, (_, _, rclone) in table.items()} == {
        int(code): rclone for code, (_, rclone) in ct.EXIT_CODES.items()}
    assert set(ct.EXIT_CODES) == set(ct.ExitCode)
    help_lines = [line.split(None, 1) for line in ct.EXIT_CODE_HELP.splitlines()[1:] if line.strip()]
    assert {int(code) for code, _ in help_lines} == set(table)
    for code, meaning in help_lines:
        # The docs may say more, but not something else: the words of --help's first clause are all there.
        clause = re.split(r"\s*[(;\[]", meaning, maxsplit=1)[0]
        missing = words(clause) - words(table[int(code)][1])
        assert not missing, f"exit code {code}: --help says {clause!r}; the docs' meaning lacks {sorted(missing)}"


class Lines:
    """The lines of a process's output, read by a thread, so that each wait has a deadline."""

    def __init__(self, stream) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, last: str, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {last!r} within {timeout_s} s; output so far:\n" + "\n".join(self.seen))
            if line is None:
                raise AssertionError(f"output ended before {last!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if line == last:
                return self.seen


def test_the_sandbox_kept_running_can_be_explored_with_the_lines_it_prints():
    process = subprocess.Popen([sys.executable, "-m", "tests.sandbox", "--keep"], cwd=PROJECT, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output = Lines(process.stdout).until(KEEP_PROMPT, timeout_s=120)
        landed = [line for line in output if line.startswith("  Amazon Photos Transfer/")]
        workdirs = [shlex.split(line)[1] for line in output if line.startswith("cd ")]
        exports = dict(shlex.split(line)[1].split("=", 1) for line in output if line.startswith("export "))
        status = [line for line in output if line.endswith("cloud_transfer.py status")]
        assert landed and len(workdirs) == 1 and len(status) == 1, "\n".join(output)
        assert {"AWS_ENDPOINT_URL", "DRIVE_ENDPOINT_URL", "S3_BUCKET_NAME"} <= set(exports)

        # What a user does in another terminal: cd, paste the exports, run the printed command.
        result = subprocess.run(shlex.split(status[0]), cwd=workdirs[0], env={**os.environ, **exports},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert re.search(rf"^  done {len(landed)} \(", result.stdout, re.M), result.stdout

        process.stdin.write("\n")   # Enter stops the servers
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_every_setting_is_in_help_and_in_the_reference():
    settings = {*ct.KNOWN_SETTINGS, "GOOGLE_APPLICATION_CREDENTIALS"}
    help_text = ct.build_parser().format_help()
    reference = (PROJECT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert not {name for name in settings if name not in help_text}, "settings missing from --help"
    assert not {name for name in settings if name not in reference}, "settings missing from docs/reference.md"
