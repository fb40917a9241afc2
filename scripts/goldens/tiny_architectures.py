#!/usr/bin/env python3
"""Tiny random models of every architecture SideTune loads from a Hugging Face folder or a GGUF
file, with reference outputs from transformers, for Tests/SideTuneBackbonesTests/Goldens/tiny/.

    pip install torch transformers tokenizers safetensors gguf numpy
    python3 scripts/goldens/tiny_architectures.py

For each architecture a folder as Hugging Face saves it (config.json, model.safetensors, and the
tokenizer: vocab.txt for BERT, tokenizer.json + tokenizer_config.json for the decoders) and
reference.safetensors with the inputs and outputs:
  bert:                 ids.K [T] I32 (the WordPiece ids of texts[K]), hidden.K [T, d] (last layer)
  llama, mistral, qwen2: ids.K [T] I32 (byte-level BPE ids of texts[K]), logits.K [T, V]
  vit, dinov2:          pixels [2, 3, 28, 28], hidden [2, 17, d] (after the final LayerNorm)
plus llama.gguf: the llama model written as llama.cpp writes it (F32, q and k rows permuted for
its RoPE layout, the tokenizer in tokenizer.ggml.*), checked against the llama reference. Widths
are tiny (32) and vocabularies small (a byte-level BPE of 320 tokens trained here) so the files
stay small; weights are random (seeded), with LayerScale and norm weights drawn too, so every
parameter matters.
"""
import json
import os

import gguf
import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import ByteLevelBPETokenizer
from transformers import (BertConfig, BertModel, BertTokenizerFast, Dinov2Config, Dinov2Model, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, ViTConfig, ViTModel)

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "SideTuneBackbonesTests", "Goldens", "tiny")
TEXTS = ["Side networks read a frozen backbone.", "hello world, 123 times!", "  spaces\tand\nnewlines  ", "ünïcödé and emoji 🙂"]
CORPUS = TEXTS * 3 + ["the quick brown fox jumps over the lazy dog " * 4, "memory decides who can adapt a model"]


def randomize(model, seed):
    """Draws every parameter (norm weights around 1, LayerScale around 0.5) so none is trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name.lower() and name.endswith("weight") or "norm1" in name or "norm2" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g)) if name.endswith("weight") else p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "lambda1" in name:
                p.copy_(0.5 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def save_model(model, folder):
    """As the Hub holds models: save_pretrained's config.json and model.safetensors (the checkpoint
    names, e.g. ViT's encoder.layer.N.attention.attention.query, and no tied lm_head)."""
    model.save_pretrained(folder)
    extra = os.path.join(folder, "generation_config.json")
    if os.path.exists(extra):
        os.remove(extra)


def bpe_tokenizer(folder):
    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, vocab_size=320, min_frequency=1, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "tokenizer_class": "PreTrainedTokenizerFast"}, f)
    return tok


def decoder(name, config_class, model_class, extra, seed):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    tok = bpe_tokenizer(folder)
    config = config_class(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0, **extra)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    randomize(model, seed)
    save_model(model, folder)
    ref = {}
    for k, text in enumerate(TEXTS):
        ids = tok.encode(text).ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        ref[f"ids.{k}"] = torch.tensor(ids, dtype=torch.int32)
        ref[f"logits.{k}"] = logits.float()
    save_file(ref, os.path.join(folder, "reference.safetensors"))
    return model, tok


def write_gguf(model, tok, path):
    """The llama model as llama.cpp's converter writes it: F32 tensors, q and k rows permuted."""
    c = model.config
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    rope = getattr(c, "rope_parameters", None) or {"rope_theta": getattr(c, "rope_theta", 10000.0)}
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_vocab_size(c.vocab_size)
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])
    merges = json.load(open(os.path.join(OUT, "llama", "tokenizer.json")))["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}

    def permute(x, heads):
        return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], c.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], c.num_key_value_heads))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def vision(name, config, model_class, seed):
    folder = os.path.join(OUT, name)
    torch.manual_seed(seed)
    model = model_class(config, add_pooling_layer=False).eval() if model_class is ViTModel else model_class(config).eval()
    randomize(model, seed)
    save_model(model, folder)
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        hidden = model(pixel_values=pixels).last_hidden_state
    save_file({"pixels": pixels, "hidden": hidden.float()}, os.path.join(folder, "reference.safetensors"))


def bert(seed):
    folder = os.path.join(OUT, "bert")
    os.makedirs(folder, exist_ok=True)
    words = sorted(set(" ".join(CORPUS).lower().replace(",", " , ").replace(".", " . ").replace("!", " ! ").split()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + ["##s", "##ing", "##ed"]
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(os.path.join(folder, "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                        max_position_embeddings=64)
    torch.manual_seed(seed)
    model = BertModel(config, add_pooling_layer=False).eval()
    randomize(model, seed)
    save_model(model, folder)
    ref = {}
    for k, text in enumerate(TEXTS):
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            hidden = model(torch.tensor([ids])).last_hidden_state[0]
        ref[f"ids.{k}"] = torch.tensor(ids, dtype=torch.int32)
        ref[f"hidden.{k}"] = hidden.float()
    save_file(ref, os.path.join(folder, "reference.safetensors"))


def main():
    os.makedirs(OUT, exist_ok=True)
    bert(1)
    llama, tok = decoder("llama", LlamaConfig, LlamaForCausalLM, {"tie_word_embeddings": False}, 2)
    decoder("mistral", MistralConfig, MistralForCausalLM, {"tie_word_embeddings": False, "sliding_window": 4096}, 3)
    decoder("qwen2", Qwen2Config, Qwen2ForCausalLM, {"tie_word_embeddings": True}, 4)
    write_gguf(llama, tok, os.path.join(OUT, "llama.gguf"))
    vision("vit", ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, image_size=28,
                            patch_size=7, num_channels=3), ViTModel, 5)
    vision("dinov2", Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, image_size=28, patch_size=7,
                                  num_channels=3, layerscale_value=0.5), Dinov2Model, 6)
    with open(os.path.join(OUT, "texts.json"), "w") as f:
        json.dump({"texts": TEXTS, "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                                                "gguf": getattr(gguf, "__version__", "?")}}, f, indent=1, ensure_ascii=False)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote tiny bert, llama (+ gguf), mistral, qwen2, vit, dinov2 to {os.path.normpath(OUT)}: {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
