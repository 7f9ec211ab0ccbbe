"""``pyflink.datastream.connectors.kafka``: flowkit's Kafka connector (needs the
``kafka`` extra)."""

from __future__ import annotations

from flowkit.connectors.base import DeliveryGuarantee as DeliveryGuarantee
from flowkit.connectors.kafka import KafkaOffsetResetStrategy as KafkaOffsetResetStrategy
from flowkit.connectors.kafka import KafkaOffsetsInitializer as KafkaOffsetsInitializer
from flowkit.connectors.kafka import KafkaPartitioner as KafkaPartitioner
from flowkit.connectors.kafka import (
    KafkaRecordSerializationSchema as KafkaRecordSerializationSchema,
)
from flowkit.connectors.kafka import (
    KafkaRecordSerializationSchemaBuilder as KafkaRecordSerializationSchemaBuilder,
)
from flowkit.connectors.kafka import KafkaSink as KafkaSink
from flowkit.connectors.kafka import KafkaSinkBuilder as KafkaSinkBuilder
from flowkit.connectors.kafka import KafkaSource as KafkaSource
from flowkit.connectors.kafka import KafkaSourceBuilder as KafkaSourceBuilder
from flowkit.connectors.kafka import KafkaTopicPartition as KafkaTopicPartition

__all__ = [
    "DeliveryGuarantee",
    "KafkaOffsetResetStrategy",
    "KafkaOffsetsInitializer",
    "KafkaPartitioner",
    "KafkaRecordSerializationSchema",
    "KafkaRecordSerializationSchemaBuilder",
    "KafkaSink",
    "KafkaSinkBuilder",
    "KafkaSource",
    "KafkaSourceBuilder",
    "KafkaTopicPartition",
]
