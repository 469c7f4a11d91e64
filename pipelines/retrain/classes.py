"""The project's training classes (`datasets/classes.yaml`, the wheel's copy in a pip install) and name matching onto
them.

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

_ROOT = Path(__file__).resolve().parents[2]
CLASSES_FILE = Path("datasets") / "classes.yaml"
SHIPPED_CLASSES = _ROOT / "streetwatch_datasets" / "classes.yaml"
"""The wheel's copy of the checkout's `datasets/classes.yaml` (setup.py ships it), beside this package in
site-packages: a pip install merges and retrains onto the same classes as a checkout. Read, never written."""
PROJECT_CLASSES = SHIPPED_CLASSES if SHIPPED_CLASSES.is_file() else _ROOT / CLASSES_FILE


def classes_path() -> Path:
    """The training classes file in effect: `datasets/classes.yaml` in the current folder when there is one (a
    checkout's root, or a data team's own edited copy beside its `datasets/versions/`), else the project's (the
    checkout's, or the wheel's copy in a pip install, which has no `datasets/` of its own)."""
    local = Path.cwd() / CLASSES_FILE
    return local if local.is_file() else PROJECT_CLASSES


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
    """The project's training classes (default: `classes_path`), validated."""
    return _load(Path(path) if path else classes_path())
