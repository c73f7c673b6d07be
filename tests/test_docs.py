"""The docs stay true for someone who clones only this repository: no file points outside
it, and every repository path and relative link the docs name exists.

A path the docs mark ``(planned)`` is allowed not to exist yet, and must not exist: once it
does, the docs describe it and drop the mark.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FOLDERS = ("operators", "connectors", "dataflows", "config", "scripts", "tests", "k8s", "docs")
# A path into one of the repository's folders, as the docs write it (`operators/metrics.py`,
# `connectors/migrations/`); not the tail of a longer path or of a URL.
REPO_PATH = re.compile(rf"(?<![\w./$<>-])((?:{'|'.join(FOLDERS)})/[\w./-]*[\w/])")
PLANNED = re.compile(r"`?\s*\(planned\)")  # right after the path
# A relative path that climbs: `../x`, `../../x` (not the tail of `...`).
CLIMBING = re.compile(r"(?<![\w.])(?:\.\./)+[^\s`'\"()\[\]<>|,;]*")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def repository_files() -> list[Path]:
    """Tracked files, and new ones not ignored (work not yet committed counts too)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = [ROOT / name for name in listed.decode().split("\0") if name]
    return [path for path in paths if path.is_file()]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None  # binary


def escapes(path: Path, reference: str) -> bool:
    """Markdown links are relative to their file; everything else (Makefile, scripts,
    settings, code) runs from the repository root."""
    base = path.parent if path.suffix == ".md" else ROOT
    return not (base / reference).resolve().is_relative_to(ROOT)


def outside_references(path: Path, text: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{number}: {match.group()}"
        for number, line in enumerate(text.splitlines(), 1)
        for match in CLIMBING.finditer(line)
        if escapes(path, match.group())
    ]


def test_no_file_points_outside_the_repository() -> None:
    found = []
    for path in repository_files():
        if path == Path(__file__).resolve():  # its own examples below
            continue
        text = text_of(path)
        if text is not None and ".." in text:
            found.extend(outside_references(path, text))
    assert not found, "paths outside the repository (move what they name into it):\n" + "\n".join(
        found
    )


def test_the_check_sees_a_path_outside_the_repository() -> None:
    readme, design = ROOT / "README.md", ROOT / "docs" / "architecture.md"
    assert outside_references(readme, "set out in `../shared/DESIGN.md` (per-key ...)")
    assert outside_references(design, "see [the brief](../../shared/DESIGN.md)")
    assert not outside_references(design, "see [the README](../README.md), ... and .../x")


def named_paths(text: str) -> list[tuple[str, bool]]:
    """(path, planned) for every repository path the text names."""
    return [
        (match.group(1), PLANNED.match(text, match.end()) is not None)
        for match in REPO_PATH.finditer(text)
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_the_docs_name_exists(doc: Path) -> None:
    text = doc.read_text()
    missing = [p for p, planned in named_paths(text) if not planned and not (ROOT / p).exists()]
    built = [p for p, planned in named_paths(text) if planned and (ROOT / p).exists()]
    assert not missing, f"{doc.name} names paths that do not exist: {sorted(set(missing))}"
    assert not built, f"{doc.name} calls these planned, but they exist now: {sorted(set(built))}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_in_the_docs_resolves(doc: Path) -> None:
    broken = []
    for target in MARKDOWN_LINK.findall(doc.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:|#", target):  # a URL or an anchor
            continue
        resolved = (doc.parent / target.split("#")[0]).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
    assert not broken, f"{doc.name} links to what this repository does not hold: {broken}"


def test_the_path_check_reads_the_docs_as_written() -> None:
    text = (
        "see `operators/metrics.py` and `connectors/migrations/`, the flow "
        "`dataflows/feedback.py:flow`, https://example.org/docs/x.md, rules in "
        "`operators/rules/`\n(planned)."
    )
    assert named_paths(text) == [
        ("operators/metrics.py", False),
        ("connectors/migrations/", False),
        ("dataflows/feedback.py", False),
        ("operators/rules/", True),
    ]
