#!/usr/bin/env python3
"""Few-bit activation codes: optimal piecewise-constant approximations of f' for the backward pass.

Following Few-Bit Backward (Novikov et al. 2022, arXiv:2202.00441; reference code skolai/fewbit), the
backward of y = f(x) keeps a b-bit code of x instead of x: the index of the interval of x among 2^b - 1
sorted boundaries, and uses q(x) = level[code] in place of f'(x). Boundaries and levels minimise

    J(q) = integral over [-100, 100] of (f'(x) - q(x))^2 w(x) dx,  w(x) = 1 (uniform weight).

Weighting: uniform in x on (-100, 100), as the paper's released tables do (fewbit/approx.py, run by
fewbit/cli.py with domain=(-100, 100), computes each level as the plain interval mean (F(b) - F(a)) / (b - a);
the dynamic-programming notebook calls its uniform_weight variant, the N(0, 2^2)-weighted variant is
commented out). The uniform weight does not bet on the scale of the inputs: activations in real models are
wider than N(0, 1) and their spread moves during training. For comparison the script also fits tables for
w = N(0, 1) density (not emitted) and reports every table's error under x ~ N(0, 1) and x ~ N(0, 3^2).

Method (deterministic, no sampling):
  1. Quadrature: the x-axis is cut into cells (width 2^-12 on [-16, 16], 2^-6 outside); each cell is
     represented by its midpoint with mass w(mid) * width. Boundaries live on cell edges (exact floats).
  2. Global search: dynamic programming over a coarse subset of edges (every 48th edge in [-12, 12]):
     the cost of an interval is the mass-weighted variance of f' in it, and the DP finds the best
     partition into 2^b intervals on that subset (the paper's dynamic programming; handles f' that is not
     monotone, as GELU's and SiLU's are).
  3. Refinement on all edges (Lloyd-style block coordinate descent): levels = conditional means of f' on
     their intervals; then each boundary, its neighbours and the levels held, moves to the edge that
     minimises J inside its bracket (exact 1-D argmin, so f' crossing the midpoint of adjacent levels several
     times is handled); even and odd boundaries alternate. J never increases; stop when no boundary moves.
  4. Tables are rounded to float32 (boundaries are multiples of 2^-12, so exact) and all errors are
     evaluated with the float32 tables.
  Baseline: 2^b - 1 boundaries evenly spaced over [-4, 4] (and over the best [-R, R]) with optimal levels.

The code of x is #{j : x > boundary[j]} (x on a boundary takes the lower interval; NaN -> 0).
ReLU gets the exact 1-bit table: boundary 0, levels 0 and 1.

Run from the repository root (about 30 s on two cores; needs numpy and scipy):
    python3 scripts/fewbit_tables.py
It writes scripts/fewbit_tables.json (inputs and results) and
Sources/CSideTuneKernels/activation_codes_tables.h (float tables for activation_codes.c).
"""
import json
import math
import os
import sys
import time

import numpy as np
from scipy import special

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_JSON = os.path.join(ROOT, 'scripts', 'fewbit_tables.json')
OUT_HEADER = os.path.join(ROOT, 'Sources', 'CSideTuneKernels', 'activation_codes_tables.h')

C_GELU = math.sqrt(2.0 / math.pi)


def gelu_d(x):
    """d/dx 0.5 x (1 + erf(x / sqrt 2)) = Phi(x) + x phi(x)."""
    return special.ndtr(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def gelu_tanh_d(x):
    """d/dx 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    t = np.tanh(C_GELU * (x + 0.044715 * x ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C_GELU * (1.0 + 3.0 * 0.044715 * x * x)


def silu_d(x):
    """d/dx x sigmoid(x) = s (1 + x (1 - s))."""
    s = special.expit(x)
    return s * (1.0 + x * (1.0 - s))


FUNCS = {
    'gelu': {'derivative': gelu_d, 'f': '0.5 x (1 + erf(x / sqrt 2))', 'c_kind': 'ST_UNARY_GELU'},
    'gelu_tanh': {'derivative': gelu_tanh_d, 'f': '0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))',
                  'c_kind': 'ST_UNARY_GELU_TANH'},
    'silu': {'derivative': silu_d, 'f': 'x sigmoid(x)', 'c_kind': 'ST_UNARY_SILU'},
}
BITS = [4, 8]

# The weighting the emitted tables use, and the alternative fitted for comparison only.
WEIGHTINGS = {
    'uniform': {'density': 'w(x) = 1 on [-100, 100] (Few-Bit Backward / skolai/fewbit)', 'domain': [-100.0, 100.0]},
    'normal1': {'density': 'w(x) = N(0, 1) density on [-10, 10]', 'domain': [-10.0, 10.0], 'sigma': 1.0},
}
EMITTED = 'uniform'
GRID = {'fine_step': 2.0 ** -12, 'fine_half_width': 16.0, 'coarse_step': 2.0 ** -6,
        'dp_stride': 48, 'dp_half_width': 12.0, 'max_refine_iterations': 20000}
EVAL = {'normal_sigmas': [1.0, 3.0], 'step': 2.0 ** -13, 'half_width_sigmas': 10.0}
BASELINE = {'fixed_half_width': 4.0, 'search_half_widths': [0.25 * k for k in range(4, 49)]}


def make_edges(lo, hi):
    """Cell edges on [lo, hi]: fine steps on [-16, 16], coarse outside. Every edge is a float32 value."""
    fw, fs, cs = GRID['fine_half_width'], GRID['fine_step'], GRID['coarse_step']
    a, b = max(lo, -fw), min(hi, fw)
    parts = []
    if lo < a:
        parts.append(np.linspace(lo, a, int(round((a - lo) / cs)) + 1)[:-1])
    parts.append(np.linspace(a, b, int(round((b - a) / fs)) + 1))
    if b < hi:
        parts.append(np.linspace(b, hi, int(round((hi - b) / cs)) + 1)[1:])
    e = np.concatenate(parts)
    assert np.all(np.diff(e) > 0) and np.all(e.astype(np.float32).astype(np.float64) == e)
    return e


def normal_pdf(x, sigma):
    return np.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))


class Problem:
    """Cells, their masses and the cumulative moments of f' for one function and weighting. Moments of a
    run of cells come from sums from the left end for runs starting left of 0 and from the right end for
    the others, so the tails of a density keep their precision."""

    def __init__(self, dfun, weighting):
        self.edges = make_edges(*weighting['domain'])
        mid = 0.5 * (self.edges[1:] + self.edges[:-1])
        width = np.diff(self.edges)
        mass = width if 'sigma' not in weighting else normal_pdf(mid, weighting['sigma']) * width
        d = dfun(mid)
        z = np.zeros(1)
        self.left = [np.concatenate([z, np.cumsum(v)]) for v in (mass, mass * d, mass * d * d)]
        self.right = [np.concatenate([np.cumsum(v[::-1])[::-1], z]) for v in (mass, mass * d, mass * d * d)]
        self.zero = int(np.searchsorted(self.edges, 0.0))

    def seg(self, m, a, b):
        """Moment m (0: mass, 1: of f', 2: of f'^2) of the cells [a, b) (edge indices; arrays broadcast)."""
        a, b = np.asarray(a), np.asarray(b)
        return np.where(a < self.zero, self.left[m][b] - self.left[m][a], self.right[m][a] - self.right[m][b])

    def levels(self, bidx):
        """Conditional means of f' on the intervals between consecutive edge indices bidx."""
        return self.seg(1, bidx[:-1], bidx[1:]) / self.seg(0, bidx[:-1], bidx[1:])

    def objective(self, bidx, levels=None):
        m0, m1, m2 = (self.seg(m, bidx[:-1], bidx[1:]) for m in range(3))
        if levels is None:
            return float(np.sum(np.maximum(m2 - m1 * m1 / m0, 0.0)))
        return float(np.sum(m2 - 2.0 * levels * m1 + levels * levels * m0))


def dynamic_programming(p, k):
    """Best partition into k intervals with boundaries on a coarse subset of edges (plus both ends)."""
    e = p.edges
    inner = np.nonzero(np.abs(e) <= GRID['dp_half_width'])[0][::GRID['dp_stride']]
    cand = np.unique(np.concatenate([[0], inner, [len(e) - 1]]))
    n = len(cand)
    d0, d1, d2 = (p.seg(m, cand[:, None], cand[None, :]) for m in range(3))
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    assert np.all(d0[upper] > 0)
    with np.errstate(divide='ignore', invalid='ignore'):
        cost = np.where(upper, np.maximum(d2 - d1 * d1 / np.where(upper, d0, 1.0), 0.0), np.inf)
    del d0, d1, d2
    dp = np.full(n, np.inf)
    dp[0] = 0.0
    back = []
    cols = np.arange(n)
    for _ in range(k):
        tot = dp[:, None] + cost
        arg = np.argmin(tot, axis=0)
        dp = tot[arg, cols]
        back.append(arg)
    path = [n - 1]
    for arg in reversed(back):
        path.append(arg[path[-1]])
    path = path[::-1]
    assert path[0] == 0 and len(path) == k + 1
    return cand[np.array(path)], float(dp[n - 1])


def refine(p, bidx):
    """Lloyd-style block coordinate descent on all edges; returns (bidx, iterations, converged)."""
    bidx = bidx.copy()
    k = len(bidx) - 1
    for it in range(GRID['max_refine_iterations']):
        moved = 0
        for parity in (1, 2):
            lv = p.levels(bidx)
            for i in range(parity, k, 2):
                lo, hi = bidx[i - 1] + 1, bidx[i + 1] - 1
                a, b = lv[i - 1], lv[i]
                # J(t) - J(lo) = sum over cells [lo, t) of mass ((f' - a)^2 - (f' - b)^2).
                ts = np.arange(lo, hi + 1)
                s0, s1 = p.seg(0, lo, ts), p.seg(1, lo, ts)
                t = lo + int(np.argmin((b - a) * (2.0 * s1 - (a + b) * s0)))
                if t != bidx[i]:
                    moved += 1
                    bidx[i] = t
        if moved == 0:
            return bidx, it + 1, True
    return bidx, GRID['max_refine_iterations'], False


def codes_of(bounds, x):
    """The code of x: #{j : x > bounds[j]}."""
    return np.searchsorted(bounds, x, side='left')


def eval_normal(dfun, bounds32, levels32, sigma):
    """E[(f' - q)^2] and the relative RMS error sqrt(E[(f' - q)^2] / E[f'^2]) for x ~ N(0, sigma^2)."""
    h = EVAL['step']
    hw = EVAL['half_width_sigmas'] * sigma
    m = int(round(2 * hw / h))
    x = -hw + h * (np.arange(m) + 0.5)
    w = normal_pdf(x, sigma) * h
    d = dfun(x)
    q = levels32.astype(np.float64)[codes_of(bounds32.astype(np.float64), x)]
    mse = float(np.sum(w * (d - q) ** 2) / np.sum(w))
    return {'mse': mse, 'rel_rms': math.sqrt(mse / float(np.sum(w * d * d) / np.sum(w)))}


def weighted_objective(p, bounds32, levels32):
    """J of the float32 tables on the problem's quadrature (boundaries are edges, so exact)."""
    bidx = np.concatenate([[0], np.searchsorted(p.edges, bounds32.astype(np.float64)), [len(p.edges) - 1]])
    return p.objective(bidx, levels32.astype(np.float64))


def errors(p, dfun, bounds32, levels32):
    out = {'weighted_objective': weighted_objective(p, bounds32, levels32)}
    for s in EVAL['normal_sigmas']:
        out['normal_sigma_%g' % s] = eval_normal(dfun, bounds32, levels32, s)
    return out


def uniform_baseline(p, dfun, bits, half_width):
    """Evenly spaced boundaries over [-R, R] with the optimal (conditional mean) levels."""
    b = np.linspace(-half_width, half_width, 2 ** bits + 1)[1:-1]
    bidx = np.concatenate([[0], np.searchsorted(p.edges, b), [len(p.edges) - 1]])
    assert np.all(p.edges[bidx[1:-1]] == b)
    return b.astype(np.float32), p.levels(bidx).astype(np.float32)


def fit(name, bits, weighting):
    dfun = FUNCS[name]['derivative']
    p = Problem(dfun, WEIGHTINGS[weighting])
    t0 = time.time()
    bidx, j_dp = dynamic_programming(p, 2 ** bits)
    t1 = time.time()
    bidx, iters, converged = refine(p, bidx)
    t2 = time.time()
    bounds32 = p.edges[bidx[1:-1]].astype(np.float32)
    levels32 = p.levels(bidx).astype(np.float32)
    assert np.all(np.diff(bounds32) > 0)
    res = {'boundaries': [float(v) for v in bounds32], 'levels': [float(v) for v in levels32],
           'dp_objective': j_dp, 'refined_objective': p.objective(bidx), 'refine_iterations': iters,
           'refine_converged': converged, 'errors': errors(p, dfun, bounds32, levels32)}
    base = {}
    rb, rl = uniform_baseline(p, dfun, bits, BASELINE['fixed_half_width'])
    base['fixed'] = {'half_width': BASELINE['fixed_half_width'], 'errors': errors(p, dfun, rb, rl)}
    best = min([r for r in BASELINE['search_half_widths'] if r < p.edges[-1]],
               key=lambda r: weighted_objective(p, *uniform_baseline(p, dfun, bits, r)))
    rb, rl = uniform_baseline(p, dfun, bits, best)
    base['best'] = {'half_width': best, 'errors': errors(p, dfun, rb, rl)}
    res['uniform_baseline'] = base
    print('%-9s %d bits, %-7s: J dp %.4e refined %.4e (%d it, %.1fs + %.1fs); baseline R=4 %.4e, R=%g %.4e; '
          'relRMS N(0,1) %.4f N(0,9) %.4f' % (
              name, bits, weighting, j_dp, res['refined_objective'], iters, t1 - t0, t2 - t1,
              base['fixed']['errors']['weighted_objective'], best, base['best']['errors']['weighted_objective'],
              res['errors']['normal_sigma_1']['rel_rms'], res['errors']['normal_sigma_3']['rel_rms']),
          file=sys.stderr)
    return res


def relu_table():
    b, lv = np.array([0.0], np.float32), np.array([0.0, 1.0], np.float32)
    return {'boundaries': [0.0], 'levels': [0.0, 1.0], 'exact': True,
            'errors': {'normal_sigma_%g' % s: {'mse': 0.0, 'rel_rms': 0.0} for s in EVAL['normal_sigmas']},
            'note': 'f\'(x) = 1 for x > 0, 0 for x <= 0 (as st_unary_backward); code = x > 0'}, b, lv


def eytzinger(bounds):
    """tree[1 ..< 2^b]: node i at depth d, position p = i - 2^d holds boundary p 2^(b-d) + 2^(b-d-1) - 1;
    the search i = 1; b times i = 2 i + (x > tree[i]) ends at 2^b + code. tree[0] is unused (0)."""
    n = len(bounds) + 1
    bits = n.bit_length() - 1
    tree = np.zeros(n, np.float32)
    for i in range(1, n):
        d = i.bit_length() - 1
        pos = i - (1 << d)
        tree[i] = bounds[pos * (1 << (bits - d)) + (1 << (bits - d - 1)) - 1]
    x = np.concatenate([bounds, np.nextafter(bounds, np.float32(np.inf)), [-np.inf, np.inf]]).astype(np.float32)
    node = np.ones(len(x), np.int64)
    for _ in range(bits):
        node = 2 * node + (x > tree[node])
    assert np.array_equal(node - n, codes_of(bounds, x))
    return tree


def c_float(v):
    s = '%.9g' % float(v)
    if not any(ch in s for ch in '.en'):
        s += '.0'
    return s + 'f'


def c_array(name, values, per_line=6):
    vals = [c_float(v) for v in values]
    lines = ['static const float %s[%d] = {' % (name, len(vals))]
    for i in range(0, len(vals), per_line):
        lines.append('    ' + ', '.join(vals[i:i + per_line]) + ',')
    lines.append('};')
    return '\n'.join(lines)


def write_header(tables):
    out = ['// generated by scripts/fewbit_tables.py, do not edit.',
           '// Few-bit activation codes (activation_codes.c): for each function and width b, the 2^b - 1',
           '// sorted boundaries, the 2^b levels (q(x) = levels[#{j : x > bounds[j]}] approximates f\'(x)), and',
           '// the boundaries in Eytzinger order for the vector search (tree[0] unused; node i has children',
           '// 2i and 2i + 1). Fitted with uniform weight on [-100, 100]; see scripts/fewbit_tables.json.',
           '#ifndef SIDETUNE_ACTIVATION_CODES_TABLES_H',
           '#define SIDETUNE_ACTIVATION_CODES_TABLES_H', '']
    for key, (bounds, levels) in tables.items():
        out.append(c_array('st_codes_%s_bounds' % key, bounds))
        out.append(c_array('st_codes_%s_levels' % key, levels))
        out.append(c_array('st_codes_%s_tree' % key, eytzinger(bounds)))
        out.append('')
    out.append('#endif')
    with open(OUT_HEADER, 'w') as fh:
        fh.write('\n'.join(out) + '\n')


def main():
    results = {}
    tables = {}
    relu, rb, rl = relu_table()
    results['relu'] = {'1': relu}
    tables['relu_1'] = (rb, rl)
    alternatives = {}
    for name in FUNCS:
        results[name] = {}
        for bits in BITS:
            res = fit(name, bits, EMITTED)
            results[name][str(bits)] = res
            tables['%s_%d' % (name, bits)] = (np.array(res['boundaries'], np.float32),
                                              np.array(res['levels'], np.float32))
            for w in WEIGHTINGS:
                if w != EMITTED:
                    alt = fit(name, bits, w)
                    alternatives.setdefault(w, {}).setdefault(name, {})[str(bits)] = {
                        k: alt[k] for k in ('errors', 'refined_objective', 'refine_iterations', 'boundaries',
                                            'levels')}
    doc = {
        'description': 'Few-bit activation codes (Few-Bit Backward, Novikov et al. 2022): piecewise-constant '
                       'q(x) = levels[#{j : x > boundaries[j]}] approximating f\'(x); see the script docstring.',
        'inputs': {
            'functions': {k: v['f'] for k, v in FUNCS.items()} | {'relu': 'max(x, 0) (exact 1-bit table)'},
            'bits': BITS, 'emitted_weighting': EMITTED, 'weightings': WEIGHTINGS, 'grid': GRID,
            'evaluation': EVAL | {'mse': 'E[(f\'(x) - q(x))^2], x ~ N(0, sigma^2)',
                                  'rel_rms': 'sqrt(E[(f\' - q)^2] / E[f\'^2]), x ~ N(0, sigma^2)',
                                  'weighted_objective': 'integral of (f\' - q)^2 w dx under the fitting weight'},
            'baseline': BASELINE | {'description': '2^b - 1 boundaries evenly spaced over [-R, R], levels the '
                                                   'conditional means under the fitting weight'},
        },
        'tables': results,
        'alternative_weightings': alternatives,
    }
    with open(OUT_JSON, 'w') as fh:
        json.dump(doc, fh, indent=1)
        fh.write('\n')
    write_header(tables)
    print('wrote %s and %s' % (OUT_JSON, OUT_HEADER), file=sys.stderr)


if __name__ == '__main__':
    main()
