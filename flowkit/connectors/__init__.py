"""Connectors to brokers and databases, one module per system.

* :mod:`flowkit.connectors.kafka`: ``KafkaSource`` and ``KafkaSink`` (aiokafka), with
  PyFlink's builder names; extra ``kafka``.
* :mod:`flowkit.connectors.redis`: ``RedisStreamSource`` and ``RedisStreamSink``
  (redis-py's asyncio client); extra ``redis``.
* :mod:`flowkit.connectors.nats`: ``JetStreamSource`` and ``JetStreamSink`` (nats-py);
  extra ``nats``.
* :mod:`flowkit.connectors.postgres`: ``PostgresCdcSource`` (logical replication);
  extra ``postgres``.

``pip install "flowkit[connectors]"`` installs the clients of all of them. What they share
(serialization schemas, ``DeliveryGuarantee``, dead letters) is in
:mod:`flowkit.connectors.base`. docs/connectors.md lists every option and guarantee.
"""
