"""Edit names of an image translator -> indices, torch-free.

Shared by ``models.translator.UNetTranslator`` and ``deploy.runtime.EdgeTranslator`` (which must not
import torch), so an exported translator understands ``--edit truck`` exactly as the checkpoint does.
"""

from __future__ import annotations

from typing import Any

from distilgan.errors import UserError

PAIR_SEPARATORS = ("->", "→", ":", " to ", ">")


class EditLookup:
    """Edit-name lookup for anything carrying a translator's edit attributes (the torch model, the
    exported runtime)."""

    num_edits: int
    edit_names: list[str]
    edits: list[dict[str, Any]] | None
    class_names: list[str] | None

    def _aliases(self, value: Any) -> set[str]:
        # a class given by index also answers to its name, and the other way round
        text = str(value).strip().lower()
        out = {text}
        names = [n.lower() for n in (self.class_names or [])]
        if text.isdigit() and int(text) < len(names):
            out.add(names[int(text)])
        elif text in names:
            out.add(str(names.index(text)))
        return out

    def _edit_pairs(self) -> list[tuple[set[str], set[str]]]:
        pairs = []
        for i, name in enumerate(self.edit_names):
            record = (self.edits or [{}] * self.num_edits)[i]
            if "source" in record and "target" in record:
                source, target = record["source"], record["target"]
            else:
                split = split_pair(name)
                source, target = split if split else ("", "")
            pairs.append((self._aliases(source), self._aliases(target)))
        return pairs

    def edit_index(self, edit: int | str) -> int:
        """An edit's index from its index, its name ("automobile:truck", any case), a pair written
        "automobile->truck" / "automobile to truck", or one class that only one edit starts or ends at."""
        names = self.edit_names
        listed = ", ".join(names)
        if isinstance(edit, bool):
            raise UserError(f"edit {edit!r} is not an edit (this translator's edits: {listed})")
        if isinstance(edit, int) or (hasattr(edit, "__index__") and not isinstance(edit, str)):
            index = int(edit)  # numpy / torch integers too
            if not 0 <= index < self.num_edits:
                raise UserError(f"edit index {index} is outside 0..{self.num_edits - 1} (this translator's edits: {listed})")
            return index
        text = str(edit).strip()
        if not text:
            raise UserError(f"empty edit name (this translator's edits: {listed})")
        if text in names:
            return names.index(text)
        folded = text.lower()
        matches = [i for i, n in enumerate(names) if n.lower() == folded]
        if not matches and folded.isdigit():
            return self.edit_index(int(folded))
        if not matches:
            pairs = self._edit_pairs()
            split = split_pair(folded)
            if split:
                matches = [i for i, (s, t) in enumerate(pairs) if split[0] in s and split[1] in t]
            else:
                matches = [i for i, (s, t) in enumerate(pairs) if folded in s | t]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UserError(f"edit '{edit}' is ambiguous: it matches {', '.join(names[i] for i in matches)} (give the full name)")
        raise UserError(f"unknown edit '{edit}' (this translator's edits: {listed})")


def split_pair(text: str) -> tuple[str, str] | None:
    for separator in PAIR_SEPARATORS:
        if separator in text:
            source, _, target = text.partition(separator)
            if source.strip() and target.strip():
                return source.strip().lower(), target.strip().lower()
    return None
