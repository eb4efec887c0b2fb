"""Sections of an earlier model card carried, unchanged and labelled, into a new one.

A full study trains some twenty models besides the default ensemble (architecture comparison,
noise study, learning curve, extrapolation): about 3.3 hours on the 2-core development machines
at 43 k sites, more than a 3-hour session. A quick retrain (``training.study --carry-from``)
trains only the default and molecule-level ensembles and takes these side studies, which are
about the method rather than about one set of weights, from the last card that measured them,
each under a note saying when, on which model and how many sites they were measured.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["CARRIABLE", "read_sections", "card_origin", "carried_section"]

#: Title prefixes of the sections a quick retrain may carry (their models are not retrained).
CARRIABLE = ("Architectures compared", "Noise study", "Learning curve",
             "Extrapolation to larger molecules")

_NOTE = "> Carried over unchanged from"
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def read_sections(card) -> dict:
    """``{title: [lines]}`` of every ``## `` section of a Markdown card, the heading excluded,
    trailing blank lines dropped; the text before the first section is under ``""``."""
    sections, title = {"": []}, ""
    for line in Path(card).read_text().splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            sections[title] = []
        else:
            sections[title].append(line)
    for lines in sections.values():
        while lines and not lines[-1].strip():
            lines.pop()
    return sections


def card_architecture(card) -> str | None:
    """The architecture of the default model a card describes (its ``- Architecture:`` line),
    or None for a card without one."""
    m = re.search(r"^- Architecture: `([A-Za-z0-9_]+)`", Path(card).read_text(), re.MULTILINE)
    return m.group(1) if m else None


def card_origin(card) -> str:
    """Where a carried section comes from, in words: the card's date, the commit and the size
    of the database of the default model it described."""
    text = Path(card).read_text()
    date = re.search(r"on (\d{4}-\d\d-\d\d \d\d:\d\d UTC) from a real evaluation run", text)
    commit = re.search(r"commit `([0-9a-f]{7,40})`", text)
    sites = re.search(r"trained on a database with fingerprint `[0-9a-f]*` \((\d+) sites", text)
    parts = [f"the model card of {date.group(1)}" if date else f"`{card}`"]
    if commit:
        parts.append(f"whose default model was trained at commit `{commit.group(1)[:7]}`")
    if sites:
        parts.append(f"on {int(sites.group(1)):,} sites")
    return " ".join(parts)


def _relink(line, old_dir, new_dir):
    """Relative links and images of ``line`` as seen from ``new_dir`` instead of ``old_dir``."""
    def fix(m):
        target = m.group(2)
        if re.match(r"^[a-z]+://|^#|^/", target):
            return m.group(0)
        moved = os.path.relpath((Path(old_dir) / target).resolve(), Path(new_dir).resolve())
        return m.group(1) + Path(moved).as_posix() + m.group(3)

    return _LINK.sub(fix, line)


def carried_section(card, prefix, out) -> list:
    """The lines of the section of ``card`` whose title starts with ``prefix``, for a new card
    written to ``out``: heading, a note naming where it comes from, the body with its links
    rewritten for ``out``'s folder. Raises ``ValueError`` when the card has no such section.
    """
    sections = read_sections(card)
    titles = [t for t in sections if t and t.startswith(prefix)]
    if not titles:
        raise ValueError(f"{card}: no section '{prefix}...' to carry over (sections: "
                         f"{[t for t in sections if t]})")
    title = titles[0]
    body = [_relink(line, Path(card).parent, Path(out).parent) for line in sections[title]]
    first = next((line for line in body if line.strip()), "")
    if first.startswith(_NOTE):
        # carried once already: its note names where it was measured, which stays true
        return [f"## {title}", *body, ""]
    note = (f"{_NOTE} {card_origin(card)}: its models were not "
            "retrained with this one (a quick retrain, `training.study --carry-from`), so "
            "its numbers describe those models, not this card's default.")
    return [f"## {title}", "", note, *body, ""]
