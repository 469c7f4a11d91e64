"""The project's training classes (`datasets/classes.yaml`) and name matching onto them.

Public datasets call the same thing `Trash`, `trash pile` or `garbage_bag`; merging them onto one
class list is where label sets silently drift apart, so the matching rule lives in one place:
an exact class name or a declared alias (case, spaces, dashes and underscores ignored) maps
automatically, everything else must be mapped (or dropped) explicitly by the user.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from pydantic import Field

from detect.config_io import ConfigModel, load_model

DEFAULT_CLASSES_PATH = Path(__file__).resolve().parents[2] / "datasets" / "classes.yaml"


class TrainingClass(ConfigModel):
    """One object class the data team labels."""

    description: str = Field(title="Description", description="What to label as this class (labelling guide).", min_length=1)
    aliases: list[str] = Field(default_factory=list, title="Aliases", description="Names other datasets use for this class.")


class ProjectClasses(ConfigModel):
    """All training classes, in the order models list them."""

    version: int = Field(1, title="Format version", ge=1)
    classes: dict[str, TrainingClass] = Field(title="Classes", description="Class name -> definition.", min_length=1)

    @property
    def names(self) -> list[str]:
        return list(self.classes)

    def match(self, name: str) -> str | None:
        """The project class a source class name means (exact name or alias), or None."""
        key = normalise(name)
        for cls, spec in self.classes.items():
            if key == normalise(cls) or key in {normalise(a) for a in spec.aliases}:
                return cls
        return None

    def order(self, names: set[str]) -> list[str]:
        """`names` in project order (so models trained on different subsets list classes alike)."""
        return [n for n in self.classes if n in names]


def normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


@cache
def _load(path: Path) -> ProjectClasses:
    return load_model(ProjectClasses, path)


def load_classes(path: str | Path | None = None) -> ProjectClasses:
    """The project's training classes (default: `datasets/classes.yaml`), validated."""
    return _load(Path(path) if path else DEFAULT_CLASSES_PATH)
