"""The wheel's packages: ours, the committed files of `models/` as `streetwatch_models`, and the training classes
(`datasets/classes.yaml`) as `streetwatch_datasets`.

pyproject.toml's `packages.find` cannot add a package from a folder of another name, and a top-level `models` package
would collide with other distributions'. The model cards and verifier heads are small files of our own (weights are
never committed), so a pip install judges with the same default verifier as a checkout (`detect.registry`); which
files ship is `[tool.setuptools.package-data]`.
"""

from setuptools import find_namespace_packages, setup

SHIPPED_MODELS = ["streetwatch_models", "streetwatch_models.cards", "streetwatch_models.verifiers"]
SHIPPED_DATASETS = ["streetwatch_datasets"]  # datasets/classes.yaml, the classes data merge and retrain map onto

setup(packages=find_namespace_packages(include=["detect*", "pipelines*", "api*", "benchmarks*", "streetwatch",
                                                "streetwatch.*"]) + SHIPPED_MODELS + SHIPPED_DATASETS)
