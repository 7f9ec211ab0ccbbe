"""Kafka connector (aiokafka): ``KafkaSource`` and ``KafkaSink`` with PyFlink's names."""

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
