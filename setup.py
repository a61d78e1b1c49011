"""as3l_plugin: Active Self-Semi-Supervised Learning (AS3L) as a plugin for USB (semilearn 0.3.2).

semilearn itself pins unusable versions, so it is installed separately with
``pip install --no-deps semilearn==0.3.2``; ``.ci/setup`` does the whole set-up.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"',
                    Path(__file__).with_name("as3l_plugin").joinpath("__init__.py").read_text()).group(1)

setup(
    name="as3l_plugin",
    version=version,
    description="AS3L (Active Self-Semi-Supervised Learning) for the USB semi-supervised codebase",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["as3l_plugin", "as3l_plugin.*"]),
    include_package_data=True,
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "numpy>=1.24",
        "scikit-learn>=1.3",
        "scikit-image>=0.21",  # hog_features: the outside judge of the auto feature choice
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        # runtime imports of semilearn 0.3.2 (installed itself with --no-deps)
        "usb": [
            "torchaudio==2.11.0",
            "progress",
            "ruamel.yaml<0.18",
            "scikit-image",
            "tensorboard",
            "timm",
            "transformers",
            "wandb",
            "aim",
        ],
        "fast": ["faiss-cpu>=1.7"],
        # selenium drives Debian's chromium + chromium-driver in the annotation page test
        "test": ["pytest>=7", "hypothesis>=6", "selenium>=4.10"],
    },
    entry_points={"console_scripts": ["as3l=as3l_plugin.cli:main"]},
)
