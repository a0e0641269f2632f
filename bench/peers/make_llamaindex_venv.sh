#!/usr/bin/env bash
# The LlamaIndex peer's own virtualenv (.venv-llamaindex), apart from the provider's locked environment:
# its pins would fight Airflow's. Made with the pinned uv of .venv-uv (scripts/venv.sh makes it).
# --link-mode=copy: nltk (under llama-index-core) refuses to open hard-linked data files.
# Versions are pinned here so that published figures name what they measured.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv-uv/bin/uv ] || { echo "run scripts/venv.sh first (it installs the pinned uv into .venv-uv)" >&2; exit 1; }
[ -x .venv-llamaindex/bin/python ] || .venv-uv/bin/uv venv --quiet --python "${PYTHON:-python3.11}" .venv-llamaindex
.venv-uv/bin/uv pip install --quiet --link-mode=copy --python .venv-llamaindex/bin/python \
  "llama-index-core==${LLAMA_INDEX_CORE:-0.14.25}" \
  "llama-index-vector-stores-milvus==${LLAMA_INDEX_MILVUS:-1.2.0}" \
  "llama-index-embeddings-openai==${LLAMA_INDEX_OPENAI:-0.7.0}" \
  "psutil"
.venv-llamaindex/bin/python -c "import llama_index.core, llama_index.vector_stores.milvus, llama_index.embeddings.openai; print('llama-index-core', llama_index.core.__version__)"
