"""Kafka: ``KafkaSource`` and ``KafkaSink`` on aiokafka, with PyFlink's builder names.

Install with ``pip install "flowkit[kafka]"``. See docs/connectors.md (Kafka source and
KafkaSink).

Example:
    >>> from flowkit.connectors.kafka import KafkaOffsetsInitializer, KafkaSource
    >>> from flowkit.connectors.base import JsonSchema
    >>> source = (KafkaSource.builder().set_bootstrap_servers("localhost:9092")
    ...           .set_topics("orders").set_value_only_deserializer(JsonSchema()).build())
"""

from flowkit.connectors.kafka.sink import FlinkFixedPartitioner as FlinkFixedPartitioner
from flowkit.connectors.kafka.sink import KafkaPartitioner as KafkaPartitioner
from flowkit.connectors.kafka.sink import (
    KafkaRecordSerializationSchema as KafkaRecordSerializationSchema,
)
from flowkit.connectors.kafka.sink import (
    KafkaRecordSerializationSchemaBuilder as KafkaRecordSerializationSchemaBuilder,
)
from flowkit.connectors.kafka.sink import KafkaSink as KafkaSink
from flowkit.connectors.kafka.sink import KafkaSinkBuilder as KafkaSinkBuilder
from flowkit.connectors.kafka.sink import KafkaSinkError as KafkaSinkError
from flowkit.connectors.kafka.sink import KafkaSinkState as KafkaSinkState
from flowkit.connectors.kafka.sink import KafkaSinkWriter as KafkaSinkWriter
from flowkit.connectors.kafka.sink import KafkaTransaction as KafkaTransaction
from flowkit.connectors.kafka.source import KafkaOffsetResetStrategy as KafkaOffsetResetStrategy
from flowkit.connectors.kafka.source import KafkaOffsetsInitializer as KafkaOffsetsInitializer
from flowkit.connectors.kafka.source import KafkaRecord as KafkaRecord
from flowkit.connectors.kafka.source import (
    KafkaRecordDeserializationSchema as KafkaRecordDeserializationSchema,
)
from flowkit.connectors.kafka.source import KafkaSource as KafkaSource
from flowkit.connectors.kafka.source import KafkaSourceBuilder as KafkaSourceBuilder
from flowkit.connectors.kafka.source import KafkaTopicPartition as KafkaTopicPartition
