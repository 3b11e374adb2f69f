"""Generate docs/configuration-reference.md from the key table and the example configuration.

Each key's type, default, environment variable and allowed values come from the key table of
`pomabotd.config` (`key_table()`); its description is the comment above it in the shipped
example, `config/pomabotd.toml`, which comments every key. So adding a key stays one table
entry plus one commented line, and the reference cannot drift from either: a test regenerates
the page and fails when the checked-in one differs, or when a key has no description.

    python -m tools.config_reference           # rewrite the page
    python -m tools.config_reference --check   # exit 1 if the page is stale
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pomabotd.config import key_table

ROOT: Final = Path(__file__).resolve().parents[1]
EXAMPLE: Final = ROOT / "config" / "pomabotd.toml"
PAGE: Final = ROOT / "docs" / "configuration-reference.md"

_KINDS: Final = {
    "bool": "boolean",
    "int": "integer",
    "float": "number",
    "str": "string",
    "strs": "list of strings",
}
#: A key line, `name = value`, or one commented out (`# workers = 8`: a default computed at load).
_KEY_LINE: Final = re.compile(r"^(#\s?)?([a-z][a-z0-9_]*)\s*=\s*")
_SECTION_LINE: Final = re.compile(r"^\[([a-z]+)\]\s*$")
#: The right-hand note naming a key's environment variable, as the example writes it.
_ENV_NOTE: Final = re.compile(r"\s{2,}(env ([A-Z][A-Z0-9_]*)|no env variable)\s*$")
#: Words of a comment that read as code: calls, flags, quoted values, names with `_`, `*`
#: or `=`.
_CODE_WORD: Final = re.compile(
    r'[A-Za-z_][A-Za-z0-9_.]*\([^()]*\)|--[a-z][a-z-]*|"[^"]*"'
    r"|[A-Za-z0-9_./:+-]*[_*=][A-Za-z0-9_./:*=+-]*[A-Za-z0-9_*=]"
)


class ExampleError(ValueError):
    """The example configuration does not describe the keys as the reference needs."""


@dataclass
class Comments:
    """What the example says about one section: its introduction, and each key's description
    with the environment variable its comment names (None for `no env variable` or none)."""

    intro: str = ""
    described: dict[str, str] = field(default_factory=dict)
    env_notes: dict[str, str | None] = field(default_factory=dict)


def read_example(text: str) -> dict[str, Comments]:
    """Each section's comments, by section name, from the example configuration's text.

    A key's description is the paragraph of comment lines right above it (a bare `#` line
    separates paragraphs); earlier paragraphs above a section's first key introduce the section.
    """
    sections: dict[str, Comments] = {}
    section: Comments | None = None
    paragraphs: list[list[str]] = [[]]
    env_note: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if match := _SECTION_LINE.match(stripped):
            section = sections.setdefault(match.group(1), Comments())
            paragraphs, env_note = [[]], None
            continue
        if section is None:
            continue
        key = _KEY_LINE.match(stripped)
        if key and (not key.group(1) or _is_value_line(stripped)):
            name = key.group(2)
            if not section.described and len(paragraphs) > 1:
                section.intro = " ".join(" ".join(p) for p in paragraphs[:-1] if p)
            section.described[name] = " ".join(paragraphs[-1])
            section.env_notes[name] = env_note
            paragraphs, env_note = [[]], None
        elif stripped == "#":
            paragraphs.append([])
        elif stripped.startswith("#"):
            words = stripped[1:].strip()
            if note := _ENV_NOTE.search("  " + words):
                env_note = note.group(2)
                words = _ENV_NOTE.sub("", "  " + words).strip()
            if words:
                paragraphs[-1].append(words)
        elif not stripped:
            paragraphs, env_note = [[]], None
    return sections


def _is_value_line(line: str) -> bool:
    """Whether a commented line is a commented-out key (`# workers = 8`), not prose."""
    return bool(re.match(r"^#\s?[a-z][a-z0-9_]*\s*=\s*\S+\s*$", line))


def render(example_text: str | None = None) -> str:
    """The whole reference page, from the key table and the example configuration's text.

    ExampleError when a key has no description in the example, or its comment names another
    environment variable than the key table's.
    """
    text = EXAMPLE.read_text(encoding="utf-8") if example_text is None else example_text
    comments = read_example(text)
    specs = key_table()
    problems = []
    for dotted, spec in specs.items():
        section, name = dotted.split(".", 1)
        found = comments.get(section, Comments())
        if not found.described.get(name):
            problems.append(f"{dotted} has no description in config/pomabotd.toml")
        elif found.env_notes.get(name) != spec.env:
            problems.append(
                f"{dotted}: config/pomabotd.toml names env {found.env_notes.get(name)}, "
                f"the key table {spec.env}"
            )
    if problems:
        raise ExampleError("; ".join(problems))

    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m tools.config_reference` from the key table in",
        "     pomabotd/config.py and the comments of config/pomabotd.toml. Do not edit. -->",
        "",
        "Every key pomabotd reads, section by section, as it is written in a TOML file",
        "(`[batch]` then `workers = 4`). Each has a type, a default, and, for some, an",
        "environment variable that overrides the file; a few also have a command-line flag,",
        "named in their description. [Configuration](configuration.md) says how the layers",
        "combine and how a refused value is reported. The repository's `config/pomabotd.toml`",
        "holds every key at its default with the same descriptions.",
        "",
    ]
    for section in dict.fromkeys(key.split(".", 1)[0] for key in specs):
        keys = [key for key in specs if key.startswith(section + ".")]
        out += [f"## [{section}] {{#{section}}}", ""]
        intro = comments[section].intro
        if intro:
            out += [_markdown(intro), ""]
        out += ["| key | type | default | environment |", "|---|---|---|---|"]
        for key in keys:
            spec = specs[key]
            out.append(
                f"| [`{key}`](#{key}) | {_KINDS[spec.kind]} | {_default(spec.default)} "
                f"| {_env(spec.env)} |"
            )
        out.append("")
        for key in keys:
            spec = specs[key]
            name = key.split(".", 1)[1]
            out += [
                f"### `{key}` {{#{key}}}",
                "",
                _markdown(comments[section].described[name]),
                "",
                f"- **Type:** {_KINDS[spec.kind]}",
                f"- **Allowed:** {spec.requirement}",
                f"- **Default:** {_default(spec.default)}",
                f"- **Environment:** {_env(spec.env)}",
                "",
            ]
    return "\n".join(out)


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{value!r}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{item}"' for item in value) + "]`"
    return "computed when the configuration loads (see the description)"


def _env(name: str | None) -> str:
    return f"`{name}`" if name else "none"


def _markdown(prose: str) -> str:
    """The example's plain comment text as Markdown: code-like words in backticks, so that
    `BATCH_*` or `status_addr` never read as emphasis; spans already in backticks stay."""
    parts = prose.split("`")
    for index in range(0, len(parts), 2):
        parts[index] = _CODE_WORD.sub(lambda m: f"`{m.group(0)}`", parts[index])
    return "`".join(parts)


def main(argv: list[str]) -> int:
    """Rewrite the page, or with `--check` say whether it is current (exit 1 when stale)."""
    page = render()
    if "--check" in argv:
        if PAGE.read_text(encoding="utf-8") != page:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python -m tools.config_reference")
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
