"""The options of a verifier training, with their defaults: one place for `train`, `crossval` and the CLI.

Kept free of numpy and the detector so that the command line can read its defaults from here without
slowing every `streetwatch` start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainOptions:
    backbone: str = "yolo11n-neck"
    tiles: tuple[int, int] = (5, 3)
    c: float = 0.01
    folds: int = 5
    seed: int = 0
    synth: int = 400
    verifier_id: str = "street-v6"
    bootstrap: int = 1000
    heads: list[str] = field(default_factory=list)

    @property
    def tiles_text(self) -> str:
        """The tile grid as the command line writes it (COLSxROWS)."""
        return f"{self.tiles[0]}x{self.tiles[1]}"
