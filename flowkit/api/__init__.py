"""What users write against: the environment and the DataStream API.

Builds a logical plan of transformations only; calls ``runtime`` only from ``execute()``.
Nothing imports ``api``.
"""
