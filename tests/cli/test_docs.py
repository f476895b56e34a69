"""The README and docs/ teach only what works: every `exp` command in a ```bash block runs, in the
page's order, in a scratch project, and exits 0; every other `exp` command they quote (inline, or a
synopsis with [options]) names a real command and real flags; every search space they show
validates, every Python block compiles and every link (file and #anchor) resolves.

A block that is not run says why in an HTML comment right before it
(`<!-- not run by tests/cli/test_docs.py: the full 50-trial job -->`), and the test checks it
names a reason. Commands run as written except for size: `exp search` gets the tests' tiny data
(`TINY`: 96 digits at 16 px, 1 epoch, random init) appended and `--trials` (given or the default)
and `--workers` capped at 2, which keeps every page in seconds while each flag, file and step the docs name is exercised.
Each `exp search` runs from bash through an `exp` on PATH, in its own process; two or more other
commands between two searches (`exp trials`, `export`, `report`, ...) run one after another in one process
through exp's entry point, each with its words as bash expands them right before it runs (quotes,
the glob of files an earlier command wrote): a process each cost ~3.5 CPU-s of imports on CI.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY, exp_env
from tests.faultkit import RUN_CASE

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!-- not run by tests/cli/test_docs\.py: (?P<reason>[^>]*\S)\s*-->")
CAP = 2  # --trials and --workers in a docs run


def blocks(page: Path) -> list[tuple[str, str, str | None]]:
    """(language, code, reason it is not run) for each fenced block of `page`."""
    found, lines, index = [], page.read_text().split("\n"), 0
    while index < len(lines):
        fence = re.match(r"\s*```(\w*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        code = textwrap.dedent("\n".join(lines[index + 1 : end]))
        marker = NOT_RUN.search(lines[index - 1]) if index else None
        found.append((fence[1] or "plain", code, marker["reason"] if marker else None))
        index = end + 1
    return found


def commands(code: str) -> list[str]:
    """The `exp ...` lines of a block, comments removed."""
    return [line.split(" # ")[0].strip() for line in code.split("\n") if line.startswith("exp ")]


def runnable(page: Path) -> list[str]:
    return [
        c for lang, code, reason in blocks(page) if lang == "bash" and reason is None for c in commands(code)
    ]


def shrunk(command: str) -> str:
    """The command at the tests' size (see the module docstring), shell words (a glob) kept."""
    for flag in ("--trials", "--workers"):
        command = re.sub(rf"{flag} (\d+)", lambda m, f=flag: f"{f} {min(int(m[1]), CAP)}", command)
    if command.split()[1] == "search":
        command += " " + shlex.join(TINY) + ("" if "--trials" in command else f" --trials {CAP}")
    return command


def test_every_page_has_something_to_check() -> None:
    assert len(PAGES) >= 7
    assert runnable(REPO / "README.md") and runnable(REPO / "docs" / "studies.md")


# The commands of one stretch, each expanded by bash in the page's folder right before it runs.
STRETCH = RUN_CASE + r"""
import subprocess
results = []
for command in json.load(sys.stdin):
    words = subprocess.run(["bash", "-c", 'printf "%s\\0" ' + command.removeprefix("exp ")],
                           capture_output=True, text=True, check=True).stdout.split("\0")[:-1]
    results.append(run_case(words))
    if results[-1]["code"] != 0:
        break
print(json.dumps(results))
"""


def stretches(commands: list[str]) -> list[list[str]]:
    """The page's commands in order: each `exp search` alone, those between two searches together."""
    found: list[list[str]] = []
    for command in commands:
        alone = command.split()[1] == "search" or needs_a_shell(command)
        if alone or not found or found[-1][0].split()[1] == "search":
            found.append([command])
        else:
            found[-1].append(command)
    return found


def needs_a_shell(command: str) -> bool:
    """A pipe, redirection or `;`/`&&` outside quotes: the command runs from bash, alone."""
    words = shlex.shlex(command, posix=True, punctuation_chars=True)
    return any(set(word) <= set("|&;<>()") for word in words)


def run_stretch(commands: list[str], cwd: Path, env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """A command alone (a search, shell syntax, or no neighbour) from bash; a stretch of several in
    one process (STRETCH); one result per command run."""
    if len(commands) == 1:
        done = subprocess.run(["bash", "-c", shrunk(commands[0])], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        return [done]
    payload = json.dumps([shrunk(c) for c in commands])
    done = subprocess.run([sys.executable, "-c", STRETCH], input=payload, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    pairs = zip(commands, results, strict=False)  # a stretch stops at its first failure
    return [subprocess.CompletedProcess(c, r["code"], r["stdout"], r["stderr"]) for c, r in pairs]


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=lambda p: p.name)
def test_every_command_in_a_bash_block_runs(page: Path, tmp_path: Path) -> None:
    for folder in ("studies", "search_spaces", "dashboards"):
        (tmp_path / folder).symlink_to(REPO / folder)
    shim = tmp_path / "bin" / "exp"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m exptrack "$@"\n')
    shim.chmod(0o755)
    env = {**exp_env(tmp_path), "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}
    ran = []
    for stretch in stretches(runnable(page)):
        for command, done in zip(stretch, run_stretch(stretch, tmp_path, env), strict=False):
            said = f"{page.name}: {command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            assert done.returncode == 0, said
            assert "Traceback" not in done.stderr, done.stderr
            ran.append(command)
    assert ran == runnable(page)


def quoted_commands(page: Path) -> list[str]:
    """Every `exp ...` the page quotes outside bash blocks: inline code and synopsis lines."""
    text = page.read_text()
    inline = re.findall(r"`(exp [^`]+)`", text)
    synopsis = [c for lang, code, _ in blocks(page) if lang != "bash" for c in commands(code)]
    return inline + synopsis


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_quoted_command_names_real_flags(page: Path) -> None:
    import typer

    from exptrack.cli import app

    group = typer.main.get_command(app)
    options = {"--help", "--debug", "--version", "--install-completion", "--show-completion"}
    for command in quoted_commands(page):
        words = command.split()
        name = words[1]
        if name == "COMMAND":  # `exp COMMAND --help`: any command
            continue
        if name.startswith("-"):  # `exp -h`, `exp --version`, `exp --debug COMMAND`
            assert name.lstrip("[").split("]")[0] in {*options, "-h"}, command
            continue
        assert name in group.commands, f"{page.name}: `{command}`: no command {name!r}"  # type: ignore[attr-defined]
        found, rest = group.commands[name], words[2:]  # type: ignore[attr-defined]
        if hasattr(found, "commands"):  # `exp studies rm ...`, or the group's default (`exp studies`)
            sub = rest[0] if rest and rest[0] in found.commands else found.default_command
            found, rest = found.commands[sub], rest[1:] if rest and rest[0] == sub else rest
        known = {o for p in found.params for o in (*p.opts, *p.secondary_opts)}
        for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", " ".join(rest)):
            assert flag in known | options | {"-h"}, f"{page.name}: `{command}`: {name} has no {flag}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_block_not_run_says_why_and_every_space_and_python_block_is_valid(
    page: Path, tmp_path: Path
) -> None:
    from exptrack.search import space

    for lang, code, reason in blocks(page):
        if reason is not None:
            assert len(reason.split()) >= 3, f"{page.name}: say why a block is not run, not {reason!r}"
        if lang == "python":
            ast.parse(code)
        if lang == "yaml" and not code.startswith("apiVersion"):  # a search space (or its part)
            path = tmp_path / "space.yaml"
            path.write_text(code)
            assert space.load(path, own=own_space(code)).params
        if lang == "bash":
            for line in code.split("\n"):
                assert line.startswith(("exp ", "#")) or not line or reason, (
                    f"{page.name}: `{line}` runs nowhere"
                )


def own_space(code: str) -> bool:
    """A space that opens with the command of a study with its own training function may name
    that function's own parameters (keys that are not config fields)."""
    from exptrack.study import load_study_file

    opening = re.match(r"# exp search (studies/\S+\.py)", code)
    return bool(opening) and load_study_file(REPO / opening[1]).custom_objective


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"\w+://", target):
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target}: no such file"
        if fragment:
            assert fragment in anchors(file), f"{page.name}: link to {target}: no such heading"


def test_the_readme_front_page_stays_short() -> None:
    """A front page: what it is, the two commands, the tour, pictures, links; the rest in docs/."""
    text = (REPO / "README.md").read_text()
    assert len(text.split("\n")) <= 120
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (REPO / image).stat().st_size > 10_000, image
