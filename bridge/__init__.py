"""pypi-kafka-bridge: PyPI's journal as a typed, exactly-once event stream on Apache Kafka."""

__version__ = "0.1.0"
