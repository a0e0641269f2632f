"""
Support shared by the test suite (``tests/``) and the benchmark (``bench/``); part of neither, never shipped.

``testing.servers`` holds the real servers both run against: an OpenAI-compatible embeddings server on
loopback, a Milvus standalone 2.3.5 server (PyPI ``milvus``), and moto's S3 server. Nothing here is in
the provider's wheel or sdist (``pyproject.toml`` finds only ``airflow_provider_milvus*``;
``MANIFEST.in`` prunes this directory; ``tests/test_packaging.py`` checks both).
"""
