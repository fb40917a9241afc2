#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into Fuzz/corpus/<target>/ (python3 alone: the
binary formats are written by hand here, the tiny model configs and images are copied from the
test fixtures). Deterministic: running it again gives the same files. Usage: python3 make-seeds.py
"""
import gzip
import json
import random
import shutil
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TINY = ROOT / "Tests/SideTuneBackbonesTests/Goldens/tiny"
IMAGES = ROOT / "Tests/SideTuneDataTests/Goldens/images"
CORPUS = HERE / "corpus"
rng = random.Random(0)


def out(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data.encode() if isinstance(data, str) else data)


def floats(n, scale=0.5):
    return [rng.uniform(-scale, scale) for _ in range(n)]


def f32(values):
    return struct.pack(f"<{len(values)}f", *values)


def f16(values):
    return struct.pack(f"<{len(values)}e", *values)


def bf16(values):
    return b"".join(struct.pack("<f", v)[2:] for v in values)


# ---------------------------------------------------------------- safetensors

def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)] -> file bytes."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


out("safetensors", "floats.safetensors", safetensors([
    ("w", "F32", [2, 3], f32(floats(6))), ("h", "F16", [3], f16(floats(3))), ("b", "BF16", [2], bf16(floats(2))),
    ("position_ids", "I64", [1, 2], struct.pack("<2q", 0, 1)),
], {"format": "pt"}))
out("safetensors", "ints.safetensors", safetensors([
    ("u8", "U8", [3], bytes([0, 1, 255])), ("i8", "I8", [2], bytes([0x80, 0x7f])), ("mask", "BOOL", [2], bytes([0, 1])),
    ("i16", "I16", [2], struct.pack("<2h", -3, 7)), ("i32", "I32", [1], struct.pack("<i", -9)),
    ("d", "F64", [], struct.pack("<d", 2.5)), ("empty", "F32", [0, 4], b""),
]))
shutil.copy(TINY / "bert/reference.safetensors", CORPUS / "safetensors/bert-reference.safetensors")

# ---------------------------------------------------------------- GGUF

GGUF_TYPES = {"u8": 0, "i8": 1, "u16": 2, "i16": 3, "u32": 4, "i32": 5, "f32": 6, "bool": 7, "str": 8, "arr": 9,
              "u64": 10, "i64": 11, "f64": 12}
SCALAR_FORMATS = {"u8": "<B", "i8": "<b", "u16": "<H", "i16": "<h", "u32": "<I", "i32": "<i", "f32": "<f",
                  "bool": "<?", "u64": "<Q", "i64": "<q", "f64": "<d"}


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gvalue(kind, v):
    if kind == "str":
        return gstr(v)
    if kind.startswith("arr:"):
        et = kind[4:]
        return struct.pack("<IQ", GGUF_TYPES[et], len(v)) + b"".join(gvalue(et, x) for x in v)
    return struct.pack(SCALAR_FORMATS[kind], v)


GGML = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 8, "BF16": 30}


def quantised(kind, n):
    """n values of ggml type `kind` as bytes (random but finite)."""
    if kind == "F32":
        return f32(floats(n))
    if kind == "F16":
        return f16(floats(n))
    if kind == "BF16":
        return bf16(floats(n))
    blocks = n // 32
    if kind == "Q8_0":
        return b"".join(f16([0.01]) + bytes(rng.randrange(256) for _ in range(32)) for _ in range(blocks))
    if kind == "Q4_0":
        return b"".join(f16([0.02]) + bytes(rng.randrange(256) for _ in range(16)) for _ in range(blocks))
    if kind == "Q4_1":
        return b"".join(f16([0.02, -0.1]) + bytes(rng.randrange(256) for _ in range(16)) for _ in range(blocks))
    raise ValueError(kind)


def gguf(kvs, tensors, version=3, alignment=32):
    """kvs: [(key, kind, value)]; tensors: [(name, dims innermost first, ggml type)]."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, kind, value in kvs:
        t = GGUF_TYPES["arr"] if kind.startswith("arr:") else GGUF_TYPES[kind]
        head += gstr(key) + struct.pack("<I", t) + gvalue(kind, value)
    data = b""
    for name, dims, kind in tensors:
        n = 1
        for d in dims:
            n *= d
        data += b"\0" * (-len(data) % alignment)
        head += gstr(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        head += struct.pack("<IQ", GGML[kind], len(data))
        data += quantised(kind, n)
    head += b"\0" * (-len(head) % alignment)
    return head + data


def gpt2_alphabet():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


ALPHABET = gpt2_alphabet()
MERGES = ["h e", "l l", "Ġ w", "o r", "he ll", "Ġw or"]
BPE_TOKENS = ALPHABET + [m.replace(" ", "") for m in MERGES] + ["<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
                 "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
V, D, FFN, HEADS, KV = len(BPE_TOKENS), 32, 64, 4, 2
out("gguf", "tiny-llama.gguf", gguf([
    ("general.architecture", "str", "llama"), ("general.alignment", "u32", 32), ("general.name", "str", "tiny"),
    ("llama.block_count", "u32", 1), ("llama.context_length", "u32", 64), ("llama.embedding_length", "u32", D),
    ("llama.feed_forward_length", "u32", FFN), ("llama.attention.head_count", "u32", HEADS),
    ("llama.attention.head_count_kv", "u32", KV), ("llama.rope.freq_base", "f32", 10000.0),
    ("llama.attention.layer_norm_rms_epsilon", "f32", 1e-5), ("llama.vocab_size", "u32", V),
    ("llama.rope.dimension_count", "u32", D // HEADS),
    ("tokenizer.ggml.model", "str", "gpt2"), ("tokenizer.ggml.pre", "str", "smollm"),
    ("tokenizer.ggml.tokens", "arr:str", BPE_TOKENS),
    ("tokenizer.ggml.token_type", "arr:i32", [1] * (V - 2) + [3, 3]),
    ("tokenizer.ggml.merges", "arr:str", MERGES),
    ("tokenizer.ggml.bos_token_id", "u32", V - 2), ("tokenizer.ggml.eos_token_id", "u32", V - 1),
    ("tokenizer.ggml.padding_token_id", "u32", V - 1), ("tokenizer.chat_template", "str", CHAT_TEMPLATE),
], [
    ("token_embd.weight", [D, V], "Q8_0"), ("blk.0.attn_norm.weight", [D], "F32"),
    ("blk.0.attn_q.weight", [D, D], "Q4_0"), ("blk.0.attn_k.weight", [D, KV * D // HEADS], "Q4_1"),
    ("blk.0.attn_v.weight", [D, KV * D // HEADS], "F16"), ("blk.0.attn_output.weight", [D, D], "BF16"),
    ("blk.0.ffn_norm.weight", [D], "F32"), ("blk.0.ffn_gate.weight", [D, FFN], "Q8_0"),
    ("blk.0.ffn_up.weight", [D, FFN], "Q8_0"), ("blk.0.ffn_down.weight", [FFN, D], "Q4_0"),
    ("output_norm.weight", [D], "F32"),
]))
out("gguf", "all-types-v2.gguf", gguf([
    ("u8", "u8", 7), ("i8", "i8", -7), ("u16", "u16", 700), ("i16", "i16", -700), ("u32", "u32", 70000),
    ("i32", "i32", -70000), ("f32", "f32", 0.5), ("bool", "bool", True), ("str", "str", "héllo"),
    ("u64", "u64", 1 << 40), ("i64", "i64", -(1 << 40)), ("f64", "f64", 1e-300), ("general.alignment", "u32", 64),
    ("ints", "arr:i64", [1, -2, 3]), ("flags", "arr:bool", [True, False]), ("empty", "arr:f32", []),
], [("a", [4, 2], "F32"), ("b", [32], "Q8_0"), ("c", [3], "F16")], version=2, alignment=64))

# ---------------------------------------------------------------- ONNX (protobuf written by hand)


def varint(n):
    n &= (1 << 64) - 1
    b = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            b += bytes([byte | 0x80])
        else:
            return b + bytes([byte])


def ld(field, payload):
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def vi(field, n):
    return varint(field << 3) + varint(n)


def fixed32(field, x):
    return varint(field << 3 | 5) + struct.pack("<f", x)


def tensor(name, dims, values=None, dtype=None, raw=True, ints=None):
    dtype = dtype or (7 if ints is not None else 1)
    t = b"".join(vi(1, d) for d in dims) + vi(2, dtype) + ld(8, name.encode())
    if ints is not None:
        t += ld(9, struct.pack(f"<{len(ints)}q", *ints)) if raw else ld(7, b"".join(varint(i) for i in ints))
    elif raw:
        t += ld(9, f32(values))
    else:
        t += ld(4, f32(values))  # packed float_data
    return t


def attr(name, s=None, f=None, i=None, t=None, ints=None, floats_=None):
    a = ld(1, name.encode())
    if s is not None:
        a += ld(4, s.encode()) + vi(20, 3)
    if f is not None:
        a += fixed32(2, f) + vi(20, 1)
    if i is not None:
        a += vi(3, i) + vi(20, 2)
    if t is not None:
        a += ld(5, t) + vi(20, 4)
    if ints is not None:
        a += ld(8, b"".join(varint(x) for x in ints)) + vi(20, 7)
    if floats_ is not None:
        a += b"".join(fixed32(7, x) for x in floats_) + vi(20, 6)
    return a


def node(op, inputs, outputs, name="", attrs=()):
    n = b"".join(ld(1, x.encode()) for x in inputs) + b"".join(ld(2, x.encode()) for x in outputs)
    n += ld(3, name.encode()) + ld(4, op.encode())
    return n + b"".join(ld(5, a) for a in attrs)


def value_info(name, dims):
    shape = b"".join(ld(1, vi(1, d) if isinstance(d, int) else ld(2, d.encode())) for d in dims)
    return ld(1, name.encode()) + ld(2, ld(1, vi(1, 1) + ld(2, shape)))


def model(nodes, inits, inputs=(), outputs=(), name="g"):
    g = b"".join(ld(1, n) for n in nodes) + ld(2, name.encode()) + b"".join(ld(5, t) for t in inits)
    g += b"".join(ld(11, v) for v in inputs) + b"".join(ld(12, v) for v in outputs)
    return vi(1, 8) + ld(8, ld(1, b"") + vi(2, 17)) + ld(7, g)


def dinov2(concat_heads=False, cast=False, named_nodes=True):
    """A one-layer DINOv2 graph (width 4, 2 heads, MLP 8, patch 2, 2x2 position grid) with the
    node patterns of Hugging Face's export that DINOv2ViT.load walks."""
    d, c, p, g, m, p_ = 4, 3, 2, 2, 8, "backbone."
    inits, nodes = [], []

    def init(name, dims):
        n = 1
        for x in dims:
            n *= x
        inits.append(tensor(name, dims, [rng.uniform(0.5, 1.5) for _ in range(n)], raw=len(inits) % 3 != 0))

    init(p_ + "embeddings.cls_token", [1, 1, d])
    init(p_ + "embeddings.mask_token", [1, d])
    init(p_ + "embeddings.patch_embeddings.projection.weight", [d, c, p, p])
    init(p_ + "embeddings.patch_embeddings.projection.bias", [d])
    init(p_ + "layernorm.weight", [d])
    init(p_ + "layernorm.bias", [d])
    layer = p_ + "encoder.layer.0."
    for n in ["norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "layer_scale1.lambda1", "layer_scale2.lambda1"]:
        init(layer + n, [d])
    init("onnx::Reshape_50", [1, g * g, d])  # position table
    init("onnx::Slice_51", [1, 1, d])  # CLS position
    inits.append(tensor("onnx::Reshape_52", [4], ints=[1, g, g, d]))
    inits.append(tensor("onnx::Reshape_60", [4], ints=[0, 0, 2, 2], raw=False, dtype=7))
    inits.append(tensor("onnx::Add_70", [], [1e-6]))
    x = "pixel_values"
    # LayerNorm 1, decomposed: Mul(Div(Sub, Sqrt(Add(ReduceMean, eps))), weight) + bias
    nodes += [node("ReduceMean", [x], ["rm"], "/ln/ReduceMean"), node("Sub", [x, "rm"], ["sub"], "/ln/Sub"),
              node("Pow", ["sub"], ["sq"]), node("ReduceMean", ["sq"], ["var"]),
              node("Add", ["var", "onnx::Add_70"], ["var_eps"]), node("Sqrt", ["var_eps"], ["std"]),
              node("Div", ["sub", "std"], ["normed"]), node("Mul", ["normed", layer + "norm1.weight"], ["scaled"]),
              node("Add", ["scaled", layer + "norm1.bias"], ["ln1"])]
    linears = [("attention.attention.query", d, d), ("attention.attention.key", d, d), ("attention.attention.value", d, d),
               ("attention.output.dense", d, d), ("mlp.fc1", d, m), ("mlp.fc2", m, d)]
    for k, (path, i, o) in enumerate(linears):
        w = f"onnx::MatMul_{100 + k}"
        init(w, [i, o])
        init(layer + path + ".bias", [o])
        module = "/" + (layer + path).replace(".", "/").replace("layer/0", "layer.0")
        nodes.append(node("MatMul", ["ln1", w], [f"mm{k}"], module + "/MatMul" if named_nodes else ""))
        nodes.append(node("Add", [layer + path + ".bias", f"mm{k}"], [f"lin{k}"], module + "/Add"))
    if concat_heads:
        consts = [tensor("", [1], ints=[v]) for v in (0, 0, 2, 2)]
        for k, t in enumerate(consts):
            nodes.append(node("Constant", [], [f"c{k}"], f"/Constant_{k}", [attr("value", t=t)]))
        nodes.append(node("Concat", [f"c{k}" for k in range(4)], ["qshape"], "/Concat_q", [attr("axis", i=0)]))
        nodes.append(node("Reshape", ["lin0", "qshape"], ["qh"]))
    else:
        nodes.append(node("Reshape", ["lin0", "onnx::Reshape_60"], ["qh"]))
    nodes.append(node("MatMul", ["qh", "lin1"], ["scores"], "/attn/MatMul"))
    # Position embeddings: Reshape -> Transpose (-> Cast) -> Resize(cubic) -> Transpose -> Reshape -> Concat
    nodes.append(node("Reshape", ["onnx::Reshape_50", "onnx::Reshape_52"], ["grid"]))
    nodes.append(node("Transpose", ["grid"], ["grid_t"], attrs=[attr("perm", ints=[0, 3, 1, 2])]))
    src = "grid_t"
    if cast:
        nodes.append(node("Cast", ["grid_t"], ["grid_c"], attrs=[attr("to", i=1)]))
        src = "grid_c"
    nodes.append(node("Resize", [src, "", "", "sizes"], ["resized"], "/backbone/embeddings/Resize",
                      [attr("mode", s="cubic"), attr("cubic_coeff_a", f=-0.75), attr("exclude_outside", i=0),
                       attr("coordinate_transformation_mode", s="half_pixel"), attr("scales", floats_=[1.0, 1.0])]))
    nodes.append(node("Transpose", ["resized"], ["resized_t"]))
    nodes.append(node("Reshape", ["resized_t", "onnx::Reshape_52"], ["flat"]))
    nodes.append(node("Concat", ["onnx::Slice_51", "flat"], ["positions"], attrs=[attr("axis", i=1)]))
    return model(nodes, inits, [value_info("pixel_values", ["batch", 3, "height", "width"])],
                 [value_info("last_hidden_state", ["batch", "tokens", d])], name="main_graph")


out("onnx", "dinov2-tiny.onnx", dinov2())
out("onnx", "dinov2-tiny-concat-cast.onnx", dinov2(concat_heads=True, cast=True, named_nodes=False))
out("onnx", "typed-data.onnx", model(
    [node("Constant", [], ["k"], "k", [attr("value", t=tensor("kv", [2], ints=[3, -4], raw=False, dtype=7))]),
     node("Gemm", ["x", "W", "b"], ["y"], "gemm", [attr("alpha", f=1.0), attr("transB", i=1), attr("name", s="gemm")])],
    [tensor("W", [2, 2], [1, 2, 3, 4], raw=False),
     ld(1, varint(3)) + vi(2, 11) + ld(8, b"D") + ld(10, struct.pack("<3d", 1, 2, 3)),  # double_data
     vi(1, 2) + vi(2, 10) + ld(8, b"H") + ld(5, varint(0x3C00) + varint(0x4000)),  # float16 in int32_data
     vi(1, 1) + vi(2, 1) + ld(8, b"ext") + vi(14, 1),  # external data
     vi(1, 2) + vi(2, 7) + ld(8, b"b") + vi(7, 5) + vi(7, 6)],  # unpacked int64_data
    [value_info("x", [1, 2])], [value_info("y", [1, "n"])]))

# ---------------------------------------------------------------- JSON configs

out("bert-config", "tiny-bert.json", (TINY / "bert/config.json").read_bytes())
out("bert-config", "minilm.json", json.dumps({
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_size": 384,
    "initializer_range": 0.02, "intermediate_size": 1536, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
    "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 6, "pad_token_id": 0,
    "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522}, indent=2))
CORPUS.joinpath("hf-config").mkdir(parents=True, exist_ok=True)
for name in ["vit", "dinov2", "llama", "mistral", "qwen2", "bert"]:
    shutil.copy(TINY / name / "config.json", CORPUS / f"hf-config/{name}.json")

# ---------------------------------------------------------------- tokenizers

CORPUS.joinpath("tokenizer-json").mkdir(parents=True, exist_ok=True)
shutil.copy(TINY / "llama/tokenizer.json", CORPUS / "tokenizer-json/byte-level-bpe.json")
vocab = (TINY / "bert/vocab.txt").read_text().split("\n")
vocab = [t for t in vocab if t]
ids = {t: i for i, t in enumerate(vocab)}
wordpiece = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [{"id": ids[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True} for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if t in ids],
    "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None,
                   "lowercase": True},
    "pre_tokenizer": {"type": "BertPreTokenizer"},
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                  {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                       "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                                {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                       "special_tokens": {t: {"id": t, "ids": [ids[t]], "tokens": [t]} for t in ["[CLS]", "[SEP]"]}},
    "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
    "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
              "max_input_chars_per_word": 100, "vocab": ids},
}
out("tokenizer-json", "wordpiece-template.json", json.dumps(wordpiece, ensure_ascii=False, indent=1))
wordpiece["post_processor"] = {"type": "BertProcessing", "sep": ["[SEP]", ids["[SEP]"]], "cls": ["[CLS]", ids["[CLS]"]]}
wordpiece["truncation"] = {"direction": "Right", "max_length": 16, "strategy": "LongestFirst", "stride": 0}
wordpiece["padding"] = {"strategy": "BatchLongest", "pad_id": 0, "pad_token": "[PAD]"}
wordpiece["normalizer"] = None
out("tokenizer-json", "wordpiece-bert-processing.json", json.dumps(wordpiece, ensure_ascii=False))
bpe = {"model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(BPE_TOKENS[:-2])}, "merges": [m.split(" ") for m in MERGES]},
       "added_tokens": [{"id": len(BPE_TOKENS) - 2 + k, "content": t, "special": True} for k, t in enumerate(BPE_TOKENS[-2:])],
       "normalizer": None,
       "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
           {"type": "Split", "pattern": {"Regex": "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"},
            "behavior": "Removed", "invert": True},
           {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}}
out("tokenizer-json", "bpe-split-pairs.json", json.dumps(bpe, ensure_ascii=False))

CORPUS.joinpath("vocab").mkdir(parents=True, exist_ok=True)
shutil.copy(TINY / "bert/vocab.txt", CORPUS / "vocab/tiny-bert-vocab.txt")
out("vocab", "small.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n##s\n##ing\nna\n##ive\ncafe\n你\n好\n,\n!\n'\nt\n")

# ---------------------------------------------------------------- text data

out("textdata", "quoted.csv", 'text,label,pair\n"Hello, ""world""",pos,a\n"two\nlines",neg,b\nplain text,pos,c\n\n')
out("textdata", "crlf-bom.csv", b"\xef\xbb\xbftext,label\r\nfirst,0\r\nsecond,1\rthird,1\r\n\"bad\"x,0\r\nbroken \xff\xfe utf8,1\r\n")
out("textdata", "tab.tsv", "label\ttext\tpair\nsports\tgoal \"scored\"\tp\nnews\tvote\tq\n")
out("textdata", "rows.jsonl", '{"text": "good", "label": 1, "pair": "x"}\n{"text": "bad", "label": 0, "pair": "y"}\n'
    '\n{"text": 3, "label": "a"}\n[1, 2]\n{"label": "b"}\n{"text": "ok", "label": "b"}\r\n{bad json\n')
out("textdata", "pixels.csv", "label,p0,p1,p2,p3\n3,0,255,12,7\n1, 1,2,3,4\n")

# ---------------------------------------------------------------- IDX

def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


images = idx([3, 4, 4], [rng.randrange(256) for _ in range(48)])
labels = idx([3], [0, 9, 4])
out("idx", "images-idx3-ubyte", images)
out("idx", "labels-idx1-ubyte", labels)
out("idx", "images-idx3-ubyte.gz", gzip.compress(images, mtime=0))
out("idx", "labels-idx1-ubyte.gz", gzip.compress(labels, mtime=0))
out("idx", "two-members.gz", gzip.compress(images[:20], mtime=0) + gzip.compress(images[20:], mtime=0) + b"\0\0")

# ---------------------------------------------------------------- checkpoint.json

options = {"reduction": 8, "gateTemperature": 0.1, "sideInit": "fisher", "fisherExamples": 1024, "droppedLayers": [],
           "pooling": "mean", "rank": 16, "groupSize": 1, "attentionTemperature": 1, "biasCorrection": True, "loraRank": 8,
           "loraAlpha": 16, "adapterBottleneck": 64, "promptLength": 20, "dropout": 0.1,
           "qst": {"reduction": 16, "adapterWidth": 16, "downsample": "adapter", "gateInit": 0.5, "outputGateInit": 1}}
checkpoint = {"format": "sidetune-checkpoint-1", "method": "lst", "options": options, "labels": ["negative", "neutral", "positive"],
              "max_length": 64, "backbone_name": "minilm", "backbone_sha256": "0" * 64, "seed": 0, "epoch": 2,
              "validation_accuracy": 0.75, "backbone_family": "bert"}
out("checkpoint", "lst-bert.json", json.dumps(checkpoint, indent=2, sort_keys=True))
out("checkpoint", "qst-llama-lm.json", json.dumps(dict(checkpoint, method="qst", labels=[], backbone_family="llama",
                                                       options=dict(options, weights="nf4", sideMatmul="bf16", packing=False))))
out("checkpoint", "hst-vit.json", json.dumps(dict(checkpoint, method="hst", backbone_family="vit", image_size=84,
                                                  image_pipeline="centre-crop", backbone_path="/models/vit.onnx",
                                                  options=dict(options, hst={"dims": [8, 16], "depths": [1, 0], "heads": [2, 4],
                                                                             "mlpRatio": 2}, droppedLayers=[2]))))

# ---------------------------------------------------------------- images

CORPUS.joinpath("image").mkdir(parents=True, exist_ok=True)
for f in sorted(IMAGES.iterdir()):
    if f.suffix in (".jpg", ".png"):
        shutil.copy(f, CORPUS / "image" / f.name)
out("image", "grey-plain.pgm", "P2\n# a comment\n3 2\n255\n0 128 255\n10 20 30\n")
out("image", "colour-plain.ppm", "P3 2 1 15 0 0 15 15 15 0\n")
out("image", "grey.pgm", b"P5\n4 3\n255\n" + bytes(rng.randrange(256) for _ in range(12)))
out("image", "grey16.pgm", b"P5 2 2 65535\n" + struct.pack(">4H", 0, 1000, 40000, 65535))
out("image", "colour.ppm", b"P6\n2 2\n255\n" + bytes(rng.randrange(256) for _ in range(12)))


def npy(descr, shape, body, version=1):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, "".join(f"{d}, " for d in shape))
    prefix = 10 if version == 1 else 12
    header += " " * (-(prefix + len(header) + 1) % 64) + "\n"
    length = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header.encode() + body


out("image", "grey.npy", npy("|u1", [3, 4], bytes(range(12))))
out("image", "rgb.npy", npy("|u1", [2, 2, 3], bytes(range(12)), version=2))
out("image", "stack.npy", npy("|u1", [2, 2, 2], bytes(range(8))))
out("image", "floats.npy", npy("<f4", [2, 2], f32([0, 0.5, 1, 0.25])))

total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
print(f"{sum(1 for f in CORPUS.rglob('*') if f.is_file())} seed files, {total} bytes in {CORPUS}")
