#!/usr/bin/env python3
"""PyTorch twins of the LST and LAST side networks on small random weights: writes inputs (taps,
mask, labels), every parameter under SideTune's name, the logits, the loss and every gradient to
Tests/SideTuneMethodsTests/Goldens/side_goldens.safetensors. The Swift test loads the same
weights, runs forward and backward, and compares. Usage: python3 scripts/goldens/side_goldens.py"""
import math, os, torch
from safetensors.torch import save_file

torch.manual_seed(0)
B, T, D, L, HEADS, FF, CLASSES = 2, 5, 16, 2, 2, 32, 3
R = 4          # LST reduction: side width 4, 2 heads of 2, FFN 8
RANK = 4       # LAST rank
EPS = 1e-12    # BertConfig default layer_norm_eps
GATE_T = 0.1
taps = [torch.randn(B, T, D) for _ in range(L + 1)]
mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.float32)
labels = torch.tensor([2, 0])

def P(shape, scale=0.3):
    return (torch.randn(*shape) * scale).requires_grad_()

def ln(x, w, b):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, EPS)

def mean_pool(x):
    m = mask.unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1e-9)

def attention(q, k, v, heads, scale):
    b, t, d = q.shape
    hd = d // heads
    q, k, v = (z.view(b, t, heads, hd).transpose(1, 2) for z in (q, k, v))
    s = q @ k.transpose(-1, -2) * scale
    s = s.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    return (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)

def lst():
    ds, ffs = D // R, FF // R
    p = {"down0.weight": P((ds, D)), "down0.bias": P((ds,)), "gates": P((L,), 0.05)}
    for j in range(L):
        p[f"downs.{j}.weight"], p[f"downs.{j}.bias"] = P((ds, D)), P((ds,))
        for n in ["query", "key", "value", "output"]:
            p[f"blocks.{j}.attention.{n}.weight"], p[f"blocks.{j}.attention.{n}.bias"] = P((ds, ds), 0.5), P((ds,))
        p[f"blocks.{j}.intermediate.weight"], p[f"blocks.{j}.intermediate.bias"] = P((ffs, ds), 0.5), P((ffs,))
        p[f"blocks.{j}.output.weight"], p[f"blocks.{j}.output.bias"] = P((ds, ffs), 0.5), P((ds,))
        for n in ["attentionNorm", "outputNorm"]:
            p[f"blocks.{j}.{n}.weight"] = (1 + torch.randn(ds) * 0.1).requires_grad_()
            p[f"blocks.{j}.{n}.bias"] = P((ds,), 0.1)
    p["sideNorm.weight"], p["sideNorm.bias"] = (1 + torch.randn(ds) * 0.1).requires_grad_(), P((ds,), 0.1)
    p["up.weight"], p["up.bias"] = P((D, ds)), P((D,))
    p["headHidden.weight"], p["headHidden.bias"] = P((D, D)), P((D,))
    p["headOut.weight"], p["headOut.bias"] = P((CLASSES, D)), P((CLASSES,))
    lin = lambda x, n: x @ p[n + ".weight"].T + p[n + ".bias"]
    s = lin(taps[0], "down0")
    for j in range(L):
        mu = torch.sigmoid(p["gates"][j] / GATE_T)
        x = s * mu + lin(taps[j + 1], f"downs.{j}") * (1 - mu)
        a = lin(attention(lin(x, f"blocks.{j}.attention.query"), lin(x, f"blocks.{j}.attention.key"),
                          lin(x, f"blocks.{j}.attention.value"), HEADS, 1 / math.sqrt(ds // HEADS)), f"blocks.{j}.attention.output")
        h = ln(x + a, p[f"blocks.{j}.attentionNorm.weight"], p[f"blocks.{j}.attentionNorm.bias"])
        f = lin(torch.nn.functional.gelu(lin(h, f"blocks.{j}.intermediate")), f"blocks.{j}.output")
        s = ln(h + f, p[f"blocks.{j}.outputNorm.weight"], p[f"blocks.{j}.outputNorm.bias"])
    out = lin(ln(s, p["sideNorm.weight"], p["sideNorm.bias"]), "up")
    return p, lin(torch.tanh(lin(mean_pool(out), "headHidden")), "headOut")

def last():
    p = {}
    for j in range(L):
        p[f"blocks.{j}.norm.weight"] = (1 + torch.randn(D) * 0.1).requires_grad_()
        p[f"blocks.{j}.norm.bias"] = P((D,), 0.1)
        for n in ["query", "key", "value"]:
            p[f"blocks.{j}.{n}.weight"] = P((RANK, D))
        p[f"blocks.{j}.up.weight"], p[f"blocks.{j}.up.bias"] = P((D, RANK)), P((D,))
    p["headNorm.weight"], p["headNorm.bias"] = (1 + torch.randn(D) * 0.1).requires_grad_(), P((D,), 0.1)
    p["classifier.weight"], p["classifier.bias"] = P((CLASSES, D)), P((CLASSES,))
    u, sum_z = taps[0], taps[0]
    for j in range(L):
        z = taps[j + 1]
        x = u + z
        y = ln(x, p[f"blocks.{j}.norm.weight"], p[f"blocks.{j}.norm.bias"])
        a = attention(y @ p[f"blocks.{j}.query.weight"].T, y @ p[f"blocks.{j}.key.weight"].T, y @ p[f"blocks.{j}.value.weight"].T,
                      1, 1 / math.sqrt(RANK))
        u = x + a @ p[f"blocks.{j}.up.weight"].T + p[f"blocks.{j}.up.bias"]
        if j + 1 < L:
            sum_z = sum_z + z
    out = u - sum_z  # bias correction
    h = ln(mean_pool(out), p["headNorm.weight"], p["headNorm.bias"])
    return p, h @ p["classifier.weight"].T + p["classifier.bias"]

tensors = {f"tap.{i}": t for i, t in enumerate(taps)}
tensors["mask"] = mask
tensors["labels"] = labels.float()
for name, build in [("lst", lst), ("last", last)]:
    for t in taps:
        t.requires_grad_(True)
        t.grad = None
    params, logits = build()
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    tensors[f"{name}.logits"] = logits.detach()
    tensors[f"{name}.loss"] = loss.detach().reshape(1)
    for k, v in params.items():
        tensors[f"{name}.param.{k}"] = v.detach()
        tensors[f"{name}.grad.{k}"] = v.grad.detach()
    for i, t in enumerate(taps):
        tensors[f"{name}.grad.tap.{i}"] = t.grad.detach().clone()
out = os.path.join(os.path.dirname(__file__), "../../Tests/SideTuneMethodsTests/Goldens/side_goldens.safetensors")
save_file({k: v.contiguous() for k, v in tensors.items()}, out, metadata={"torch": torch.__version__})
print("wrote", os.path.normpath(out), len(tensors), "tensors")
