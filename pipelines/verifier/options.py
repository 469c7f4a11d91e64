"""The options of a verifier training, with their defaults: one place for `train`, `crossval` and the CLI.

Kept free of numpy and the detector so that the command line can read its defaults from here without
slowing every `streetwatch` start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_C = 0.01
"""Inverse L2 strength of the logistic heads, unless `HEAD_C` names the head or `--C` sets one for all."""
HEAD_C = {"street_stall": 0.0003}
"""Heads that need stronger regularisation. The stall head has 65 positive photos and reads 896 features per tile: on three
group splits (fold seeds 0, 1, 2; nested thresholds) C 0.01 -> 0.0003 gave stall F1 0.31 / 0.37 / 0.30 -> 0.35 / 0.36 / 0.37,
false findings 120 / 117 / 129 -> 101 / 96 / 93, Chinese streets' AP 0.32 / 0.35 / 0.34 -> 0.39 / 0.45 / 0.42 (AP over all
photos flat). 0.001 and 0.0001 did about as well (0.0003 is the middle of that plateau); the other heads gained no F1 or
precision on all three splits at 0.003 or 0.001 (docs/verifier.md)."""


@dataclass
class TrainOptions:
    backbone: str = "yolo11n-neck"
    imgsz: int = 640  # the detector's input size: neck features (and the vehicles found) depend on it
    tiles: tuple[int, int] = (5, 3)
    c: float | None = None  # None: each head's own (`c_for`)
    folds: int = 5
    seed: int = 0
    synth: int = 400
    verifier_id: str = "street-v7"
    bootstrap: int = 1000
    heads: list[str] = field(default_factory=list)

    def c_for(self, head: str) -> float:
        """The L2 strength a head is trained with: `c` when set, else the head's own (`HEAD_C`, `DEFAULT_C`)."""
        return self.c if self.c is not None else HEAD_C.get(head, DEFAULT_C)

    @property
    def c_text(self) -> str:
        """The heads' C as the card and `--help` say it."""
        if self.c is not None:
            return f"C={self.c} for every head"
        return "C=" + ", ".join(f"{c} for {h}" for h, c in HEAD_C.items()) + f", {DEFAULT_C} for the others"

    @property
    def tiles_text(self) -> str:
        """The tile grid as the command line writes it (COLSxROWS)."""
        return f"{self.tiles[0]}x{self.tiles[1]}"
