"""The documentation (issue 35): a short README, one page per topic under docs/, links that
resolve, and a CLI reference that names every command and option the typer app has."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest
import typer

from harness.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 200

_FENCE_RE = re.compile(r"^\s*(```|~~~)")
_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target); the target ends at whitespace or ')'.
_LINK_RE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE_RE = re.compile(r"(`+)(?:(?!\1).)+\1")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE_RE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lowercase, punctuation removed
    (letters, digits, '_', '-' and spaces stay), each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in _prose_lines(path.read_text()):
        match = _HEADING_RE.match(line)
        if not match:
            continue
        slug = github_slug(match[2])
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file's prose (not in code blocks or inline code)."""
    prose = "\n".join(_INLINE_CODE_RE.sub("", line) for line in _prose_lines(path.read_text()))
    return _LINK_RE.findall(prose)  # link text may run over a line break


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{path.relative_to(root)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            problems.append(f"{path.relative_to(root)}: {target} (no heading #{anchor} in {dest.name})")
    return problems


def test_the_readme_is_short_and_keeps_its_tested_versions_last() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "## Tested versions" in text


def test_every_relative_link_and_anchor_resolves() -> None:
    pages = [*_pages(), ROOT / "bench" / "README.md", ROOT / "results" / "README.md"]
    problems = [p for page in pages for p in broken_links(page)]
    assert problems == [], "\n".join(problems)


def test_the_docs_index_links_every_page() -> None:
    index = DOCS / "README.md"
    linked = {(DOCS / t.partition("#")[0]).resolve() for t in links(index) if t.partition("#")[0]}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p != index and p.resolve() not in linked]
    assert missing == [], f"docs/README.md does not link {missing}"
    readme = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    assert index.resolve() in readme


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        (
            "Selection: search and held-out questions, rungs, pruning",
            "selection-search-and-held-out-questions-rungs-pruning",
        ),
        ("The demo search (`make search`, 50 trials)", "the-demo-search-make-search-50-trials"),
        (
            "`bench/align.py`: DPO training, TRL's fused LM head",
            "benchalignpy-dpo-training-trls-fused-lm-head",
        ),
        (
            "Devices: one decision per run, and `harness doctor`",
            "devices-one-decision-per-run-and-harness-doctor",
        ),
        (
            "2026-11-22 (later): `python -m bench.scoring --rounds 3`",
            "2026-11-22-later-python--m-benchscoring---rounds-3",
        ),
    ],
)
def test_anchors_are_made_as_github_makes_them(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text(
        "# Other page\n\n## A section: with `code`\n\n```\n# not a heading\n```\n"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-section-with-code) [gone](missing.md) [no\nanchor](other.md#not-a-heading)\n"
        "[self](#title) `[in code](nowhere.md)`\n\n# Title\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "page.md: missing.md (no such file)",
        "page.md: other.md#not-a-heading (no heading #not-a-heading in other.md)",
    ]


def _commands() -> dict[str, list[str]]:
    """Each command's options (every spelling, --no-x included) and its arguments' names."""
    group = typer.main.get_command(app)
    out: dict[str, list[str]] = {}
    for name, command in group.commands.items():
        names = []
        for param in command.params:
            if param.param_type_name == "argument":
                names.append((param.name or "").upper())
            else:
                names += [*param.opts, *param.secondary_opts]
        out[name] = names
    return out


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def _cli_sections() -> dict[str, str]:
    """docs/cli.md, cut at its '## `harness COMMAND`' headings."""
    text = (DOCS / "cli.md").read_text()
    parts = re.split(r"^## `harness ([a-z-]+)`\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def undocumented(commands: dict[str, list[str]], sections: dict[str, str], everything: str) -> list[str]:
    problems = []
    for name, params in commands.items():
        if not _mentions(everything, f"harness {name}"):
            problems.append(f"harness {name}: named nowhere in README.md or docs/")
        section = sections.get(name)
        if section is None:
            problems.append(f"harness {name}: no '## `harness {name}`' section in docs/cli.md")
            continue
        problems += [
            f"harness {name} {p}: not in its docs/cli.md section" for p in params if not _mentions(section, p)
        ]
    return problems


def test_every_command_and_option_is_documented() -> None:
    commands = _commands()
    assert {"build", "search", "leaderboard"} <= set(commands) and "--out" in commands["build"]
    everything = "\n".join(p.read_text() for p in _pages())
    problems = undocumented(commands, _cli_sections(), everything)
    assert problems == [], "\n".join(problems)
    assert set(_cli_sections()) == set(commands), "docs/cli.md documents a command the CLI does not have"


def test_a_missing_option_or_command_is_found() -> None:
    sections = {"build": "harness build RECIPE --out DIR [--overwrite]"}
    commands = {"build": ["RECIPE", "--out", "--overwrite", "--no-overwrite"], "eval": ["MODEL"]}
    assert undocumented(commands, sections, "harness build") == [
        "harness build --no-overwrite: not in its docs/cli.md section",
        "harness eval: named nowhere in README.md or docs/",
        "harness eval: no '## `harness eval`' section in docs/cli.md",
    ]
    assert not _mentions("--report-out", "--report") and _mentions("[--report | x]", "--report")
