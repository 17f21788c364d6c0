"""comflp-espnet: CoMFLP layer pruning for ESPnet speech recognizers."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).resolve().parent
version = {}
exec((here / "comflp_espnet" / "__init__.py").read_text(), version)

setup(
    name="comflp-espnet",
    version=version["__version__"],
    description=(
        "Correlation-measure based fast layer pruning (CoMFLP) for ESPnet ASR models: "
        "an ESPnet recipe plugin"
    ),
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["comflp_espnet", "comflp_espnet.*"]),
    python_requires=">=3.9",
    install_requires=[
        "espnet>=202402",
        "torch>=2.1",
        "torchaudio",
        "sentencepiece",
        "jiwer>=3.0",
        "kaldiio>=2.18",
        "soundfile",
        "numpy",
        "pyyaml",
        "matplotlib",
    ],
    extras_require={"test": ["pytest", "hypothesis"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio :: Speech",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
