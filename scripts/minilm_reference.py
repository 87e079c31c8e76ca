"""sentence-transformers' all-MiniLM-L6-v2 embeddings (mean pooling, L2) for a list of
sentences, for the transformers bench.

    python scripts/minilm_reference.py MODEL_DIR SENTENCES.json
"""
import json
import sys

from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
sentences = json.load(open(sys.argv[2]))
print(json.dumps(model.encode(sentences, batch_size=32, convert_to_numpy=True).tolist()))
