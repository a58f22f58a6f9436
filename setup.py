"""Metaplastic binarized neural networks for Keras: optimizer, model zoo, continual learning."""

from setuptools import find_packages, setup

setup(
    name="metaplastic-bnn-zoo",
    version="0.1.0",
    description=(
        "Metaplastic binarized neural networks (Laborieux et al.) for Keras/Larq: "
        "optimizer, model zoo, continual-learning protocols and LCE deployment."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(
        include=[
            "zoo", "zoo.*", "training", "training.*", "tuning", "tuning.*",
            "experiments", "experiments.*",
        ]
    )
    + ["zoo.saved_models"],
    # Pretrained models (SavedModel, LCE flatbuffer, model card) ship as package data:
    # saved_models/<name>/** is installed as zoo/saved_models/<name>/**, where
    # zoo.pretrained looks for them (and at saved_models/ in a source checkout).
    package_dir={"zoo.saved_models": "saved_models"},
    package_data={"zoo.saved_models": ["**/*"]},
    include_package_data=True,
    # larq and LCE need Keras 2: TF >= 2.16 ships Keras 3, so the stack is pinned here.
    python_requires=">=3.10,<3.12",
    install_requires=[
        "tensorflow-cpu==2.15.1; platform_machine != 'aarch64'",
        "tensorflow==2.15.1; platform_machine == 'aarch64'",
        "larq==0.14.0",
        "numpy<2",
        "keras-tuner==1.4.8",
        "scipy",  # keras-tuner BayesianOptimization
        "scikit-learn",  # keras-tuner BayesianOptimization
        "tensorflow-datasets",
        "tensorflow-metadata<1.16",
        "matplotlib",
        "Pillow",
    ],
    extras_require={
        "lce": ["larq-compute-engine==0.16.0"],
        "test": ["pytest", "larq-compute-engine==0.16.0"],
    },
    classifiers=[
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Framework :: TensorFlow",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
