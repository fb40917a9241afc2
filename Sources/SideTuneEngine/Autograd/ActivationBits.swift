import CSideTuneKernels

/// How many bits per element backward keeps of the tensors ops save for it (`--activation-bits`).
/// At 32 everything is kept exactly. Below, what is kept shrinks where a derivative can afford it:
///
/// | saved for backward                          | 32  | 16   | 8           | 4           |
/// |---------------------------------------------|-----|------|-------------|-------------|
/// | GELU / SiLU input                           | f32 | bf16 | 8-bit code  | 4-bit code  |
/// | ReLU input                                  | f32 | 1-bit code | 1-bit | 1-bit       |
/// | LayerNorm / RMSNorm input                   | f32 | bf16 | bf16        | bf16        |
/// | attention q, k, v and output                | f32 | bf16 | bf16        | bf16        |
/// | a linear layer's input (for its dW)         | f32 | bf16 | bf16        | bf16        |
/// | softmax output (side networks)              | f32 | bf16 | bf16        | bf16        |
///
/// A code is the index of x's interval in a piecewise-constant fit of f' (Few-Bit Backward's
/// construction; `scripts/fewbit_tables.py`), so backward multiplies by a table level. Attention
/// probabilities are never kept at any setting: backward recomputes them from q and k.
public enum ActivationBits: Int, Codable, Sendable, CaseIterable, Comparable {
    case four = 4, eight = 8, sixteen = 16, thirtyTwo = 32

    @TaskLocal static var current: ActivationBits = .thirtyTwo

    /// The setting ops recorded here use (see `Tensor.withActivationBits`).
    public static var inEffect: ActivationBits { current }

    public static func < (a: ActivationBits, b: ActivationBits) -> Bool { a.rawValue < b.rawValue }

    /// Whether tensors saved for backward are rounded to bf16.
    public var roundsToBFloat16: Bool { self <= .sixteen }
}

extension Tensor {
    /// Runs `body` with ops saving for backward at `bits` per element (see `ActivationBits`).
    public static func withActivationBits<R>(_ bits: ActivationBits, _ body: () throws -> R) rethrows -> R {
        try ActivationBits.$current.withValue(bits) { try body() }
    }
}

/// Whether attention whose q, k and v projections are frozen keeps their input and recomputes them
/// in backward (`Tensor.projectedSelfAttention`) rather than keeping q, k and v: 1 value per token
/// and width instead of 3, for one more projection product per block in backward. Off unless a
/// method asks for it (S2A does); backbones read it where they build attention.
public enum AttentionRecompute {
    @TaskLocal static var current = false

    /// The setting in effect here (see `Tensor.withAttentionRecompute`).
    public static var projections: Bool { current }
}

extension Tensor {
    /// Runs `body` with frozen attention projections recomputed in backward when `on`.
    public static func withAttentionRecompute<R>(_ on: Bool, _ body: () throws -> R) rethrows -> R {
        try AttentionRecompute.$current.withValue(on) { try body() }
    }
}

/// A tensor an op keeps for its backward: as it is, or rounded to bf16 (at 16 bits or fewer) and
/// widened again when backward reads it.
struct SavedTensor {
    private let kept: Tensor

    init(_ t: Tensor, bits: ActivationBits = .current) {
        kept = bits.roundsToBFloat16 && t.dtype == .float32 ? t.converted(to: .bfloat16, category: .activations) : t
    }

    /// The kept values in f32 (a widened copy, alive while backward uses it, when kept in bf16).
    var float32: Tensor { kept.float32() }

    var shape: [Int] { kept.shape }

    /// The kept tensor as stored (bf16 or f32): for ops that read bf16 in place, such as `linear`.
    var stored: Tensor { kept }

    /// The kept values as a GEMM operand (bf16 read in place by the GEMMs), with the tensor that
    /// owns them.
    var operand: (GEMMOperand, owner: Tensor) {
        switch kept.dtype {
        case .bfloat16: (.bf16(UnsafePointer(kept.storage.raw.assumingMemoryBound(to: UInt16.self))), kept)
        default: (.f32(kept.data), kept)
        }
    }
}

/// The codes of f'(x) for one pointwise op's input: `bits` per element (1 for ReLU, 4 or 8 else),
/// packed into bytes tagged as activations.
final class ActivationCodes {
    let kind: UnaryKind
    let bits: Int
    let count: Int
    let storage: TensorStorage

    /// The code width for `kind` at this setting, or nil where the input is kept (no table, or 16
    /// bits and more for the smooth functions, which keep bf16 or f32 inputs instead).
    static func bits(for kind: UnaryKind, at setting: ActivationBits) -> Int? {
        guard setting < .thirtyTwo else { return nil }
        let b = Int(st_code_bits(kind.c, Int32(setting.rawValue)))
        guard b > 0, b == 1 || setting <= .eight else { return nil }
        return b
    }

    init(kind: UnaryKind, bits: Int, count: Int) {
        self.kind = kind
        self.bits = bits
        self.count = count
        storage = TensorStorage(byteCount: max(1, st_code_bytes(Int32(bits), count)), dtype: .bfloat16, category: .activations)
    }

    var bytes: UnsafeMutablePointer<UInt8> { storage.raw.assumingMemoryBound(to: UInt8.self) }
}
