"""The offline side: warehouse engines and training sets.

``engine``        ``Engine`` (DuckDB, PostgreSQL): run SQL or sqlglot trees, move Arrow
``entity``        normalise and validate entity inputs, place them in the warehouse
``training_set``  ``get_training_set`` and the lazy ``TrainingSet`` result
"""
