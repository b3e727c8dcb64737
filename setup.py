from setuptools import find_packages, setup

setup(
    name="bagnet-keras",
    version="0.1.0",
    description="BagNets (Brendel & Bethge, ICLR 2019) in Keras 3 with the official ImageNet weights, "
    "and tools to see what CNNs look at.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["bagnet_keras", "bagnet_keras.*", "data_tools", "data_tools.*"]),
    package_data={"bagnet_keras.models": ["data/*.tsv"]},
    install_requires=[
        "tensorflow>=2.16",
        # The newest minor version tested: bagnet_keras.core.graph reads private Keras internals
        # (`make test-latest-keras` runs the suite against the newest release).
        "keras>=3.3,<3.16",
        "numpy",
        "opencv-python-headless",
        "scikit-learn",
        "matplotlib",
        # 0.6.10 exactly: master inverts the download status check.
        "icrawler==0.6.10",
        "requests",
        "urllib3>=2.3",
        "beautifulsoup4",
        "pyyaml",
        "tqdm",
        "pillow",
        "imagehash",
        "scipy",
        # structural_similarity, for the sanity checks of the maps (bagnet_keras.metrics.sanity)
        "scikit-image",
        # lazy subpackage exports (a function may share its module's name: explain.cam); 0.6 guards that case
        "lazy_loader>=0.6",
    ],
    # selenium drives Debian's chromium (apt: chromium chromium-driver) for the report's browser test. JAX and
    # PyTorch's CPU build are the other Keras backends, for `make test-backends` (the package never needs them:
    # a user installs the backend of their choice).
    extras_require={
        # keras-hub: the vision transformers (ViT, DeiT, DINOv2); the tests build small ones with it.
        "hub": ["keras-hub>=0.32"],
        "dev": ["pytest", "pytest-xdist", "ruff==0.17.6", "selenium", "hypothesis", "keras-hub>=0.32"],
        "backends": ["jax[cpu]", "torch==2.13.0"],
    },
    entry_points={"console_scripts": ["bagnet-keras=bagnet_keras.app.cli:main"]},
)
