"""The README's ```bash commands run as written; those that take longer than about a minute are skipped by rule.

Every command of every ```bash block is classified by the first rule of ``RULES`` whose pattern it matches:
``RUN`` (fast tier: CLI start-up only), ``RUN_SLOW`` (slow tier: trains for under a minute) or ``SKIP``
(reported as a pytest skip with the rule's reason: ``pytest -rs tests/test_readme.py`` lists what is not run
and why). A README command that no rule matches, or a rule that matches no command, fails
``test_every_readme_command_is_classified``: when the README changes, update ``RULES`` here. A block with
shell control flow or variable assignments is one command (a script); any other block is one command per line
(``\\`` continuations joined).

Commands run in a temporary working folder holding links to the repository's ``configs/`` and ``examples/``,
with ``lit-rlhf`` (and ``python``) resolving to this interpreter and this checkout, one thread, W&B offline.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_in_group

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

RUN, RUN_SLOW, SKIP = "run", "run (slow tier)", "skip"
TIMEOUT_S = {RUN: 240, RUN_SLOW: 420}  # per command, on a loaded 2-core machine (measured ~20 s and ~30-60 s)

# (pattern searched in the command without its comments, action, reason). First match wins: order matters.
RULES: list[tuple[str, str, str]] = [
    (r"\bpip install\b", SKIP, "installs packages from a registry (network, minutes; .ci/run does the install); "
                               "the quickstart it ends with trains ~3 min (tests/e2e/test_quickstart.py runs it)"),
    (r"\bpytest\b", SKIP, "runs the test suite itself"),
    (r"<\w+>|\bCKPT\b|\bOUT_DIR\b|\.\.\.|\s--[\w.-]+ M\b", SKIP,
     "a template with placeholders (<x>, CKPT, OUT_DIR, M, ...), not a runnable command"),
    (r"^lit-rlhf assets\b", SKIP, "installs packages and downloads an archive (network)"),
    (r"configs/scale/", SKIP, "multi-process runs of the DPO config, which needs the DPO path's pairs first; "
                              "tests/distributed runs every method under DDP and FSDP2"),
    (r"configs/dpo\.yaml", SKIP,
     "the DPO path: SFT (~3 min), sampling 2,200 problems × 4 and DPO; minutes to tens of minutes"),
    (r"my_rewards\.score", RUN_SLOW, "GRPO of the tiny model on your own reward and prompts, extended, exported"),
    (r"--ckpt_path\b", SKIP, "resumes a run of configs/reward.yaml that has to exist first"),
    (r"configs/sft_gatt\.yaml", SKIP, "1,200 training steps on sampled dialogues (minutes)"),
    (r"^lit-rlhf strength\b", SKIP, "trains an ensemble of 5 reward models (minutes)"),
    (r"configs/w2s_sentiment\.yaml", SKIP, "needs `lit-rlhf assets` and fine-tunes MiniLM (minutes per loss)"),
    (r"--model\.help\b|--print_config\b|(^|\s)(-h|--help)\b", RUN, "CLI start-up only"),
    (r"^lit-rlhf fit --model=", RUN_SLOW, "a 100-step fit of the tiny model, ~30 s"),
    (r"configs/w2s_synthetic\.yaml", RUN_SLOW, "a linear-probe weak-to-strong run, ~1 min"),
]

CONTROL = re.compile(r"^\s*(for|while|until|if|case|function)\b|^\s*\w+=", re.M)


@dataclass(frozen=True)
class Command:
    block: int  # index of the ```bash block in the README
    line: int  # README line of the command's first line
    text: str  # as written (comments kept: bash ignores them)

    @property
    def bare(self) -> str:
        """The command without comments and with its lines joined (what the rules match)."""
        lines = [re.sub(r"(^|\s)#.*$", "", line) for line in self.text.splitlines()]
        return re.sub(r"\s*\\\n\s*", " ", "\n".join(lines)).strip()

    def __str__(self) -> str:
        first = self.bare.splitlines()[0].rstrip() if self.bare else ""
        return f"README.md:{self.line}: {first[:70]}"


def readme_commands() -> list[Command]:
    commands, block, start, body = [], -1, None, []
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if start is None and line.strip() == "```bash":
            block, start, body = block + 1, number + 1, []
        elif start is not None and line.strip() == "```":
            commands += split_block(block, start, body)
            start = None
        elif start is not None:
            body.append(line)
    assert start is None, f"README.md:{start - 1}: unclosed ```bash block"
    return commands


def split_block(block: int, start: int, lines: list[str]) -> list[Command]:
    text = "\n".join(lines)
    if CONTROL.search(re.sub(r"(^|\s)#.*$", "", text, flags=re.M)):
        return [Command(block, start, text)]
    commands, current, first = [], [], None
    for offset, line in enumerate(lines):
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        first = start + offset if not current else first
        current.append(line)
        if not line.rstrip().endswith("\\"):
            commands.append(Command(block, first, "\n".join(current)))
            current = []
    return commands


def classify(command: Command) -> tuple[str, str] | None:
    for pattern, action, reason in RULES:
        if re.search(pattern, command.bare, re.M):
            return action, reason
    return None


COMMANDS = readme_commands()


def test_blocks_split_into_commands():
    lines = ["# a comment line", "lit-rlhf a \\", "  --b 1   # note", "", "lit-rlhf c --d '#x'"]
    first, second = split_block(0, 10, lines)
    assert (first.line, first.bare, second.line, second.bare) == (11, "lit-rlhf a --b 1", 14, "lit-rlhf c --d '#x'")
    script = ["X=1", "for i in 1 2; do  # loop", "  echo $X $i", "done"]
    assert split_block(1, 20, script) == [Command(1, 20, "\n".join(script))]


def test_every_readme_command_is_classified():
    assert COMMANDS, "no ```bash block found in README.md"
    unclassified = [str(c) for c in COMMANDS if classify(c) is None]
    assert not unclassified, f"README commands that no rule of tests/test_readme.py matches: {unclassified}"
    used = {next(i for i, (p, _, _) in enumerate(RULES) if re.search(p, c.bare, re.M)) for c in COMMANDS}
    stale = [RULES[i][0] for i in range(len(RULES)) if i not in used]
    assert not stale, f"rules of tests/test_readme.py that match no README command (remove or update): {stale}"
    assert any(classify(c)[0] == RUN for c in COMMANDS), "no README command runs in the fast tier"


def _params() -> list:
    """Every classified command: skipped ones as pytest skips with their reason, slow ones in the slow tier."""
    params = []
    for command in COMMANDS:
        action, reason = classify(command) or (None, "")
        marks = {SKIP: [pytest.mark.skip(reason=f"not run: {reason}")], RUN_SLOW: [pytest.mark.slow]}.get(action, [])
        if action is not None:
            params.append(pytest.param(command, action, id=str(command), marks=marks))
    return params


@pytest.fixture
def workdir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A working folder with the repository's configs and examples, and ``lit-rlhf`` = this checkout."""
    for name in ("configs", "examples"):
        (tmp_path / name).symlink_to(REPO / name, target_is_directory=True)
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    for name, exec_line in (("lit-rlhf", f'exec "{sys.executable}" -m lit_rlhf "$@"'),
                            ("python", f'exec "{sys.executable}" "$@"'), ("python3", f'exec "{sys.executable}" "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{exec_line}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return tmp_path, env


def run_command(command: Command, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """``(exit status or None when killed at the timeout, output)`` of one README command under ``bash -e``."""
    return run_in_group(["bash", "-e", "-o", "pipefail", "-c", command.text], cwd, env, timeout)


@pytest.mark.parametrize(("command", "action"), _params())
def test_readme_command_runs(command: Command, action: str, workdir):
    returncode, output = run_command(command, *workdir, TIMEOUT_S[action])
    assert returncode is not None, f"{command} did not finish in {TIMEOUT_S[action]} s; output tail:\n{output[-3000:]}"
    assert returncode == 0, f"{command} exited with {returncode}; output tail:\n{output[-5000:]}"
