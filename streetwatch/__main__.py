"""`python -m streetwatch`: the same as the `streetwatch` console script (where the script is not on PATH)."""

from streetwatch.cli import main

main()
