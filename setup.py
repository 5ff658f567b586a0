"""Packages, with the top-level cards/ templates shipped inside the wheel as tl_concepts/cards."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["tl_concepts", "tl_concepts.*"]) + ["tl_concepts.cards"],
    package_dir={"tl_concepts.cards": "cards"},
)
