/// Element types a tensor's storage can hold. Compute is always Float32; the other types are
/// storage formats that are converted (or dequantised inside a kernel) on use.
///
/// Block-quantised types store `blockSize` elements in `bytesPerBlock` bytes, laid out as in
/// GGUF (Q8_0, Q4_0, Q4_1) or QLoRA (NF4, block 64, scales double-quantised separately).
public enum DType: String, Sendable, CaseIterable, Codable {
    case float32 = "F32"
    case float16 = "F16"
    case bfloat16 = "BF16"
    /// GGUF `block_q8_0`: f16 scale + 32 int8.
    case q8_0 = "Q8_0"
    /// GGUF `block_q4_0`: f16 scale + 16 bytes of nibbles (value = (q - 8) * d).
    case q4_0 = "Q4_0"
    /// GGUF `block_q4_1`: f16 scale + f16 min + 16 bytes of nibbles (value = q * d + m).
    case q4_1 = "Q4_1"
    /// NF4 codes, two per byte, block 64; the per-block scales live beside the codes.
    case nf4 = "NF4"

    /// Elements per quantisation block (1 for plain scalar types).
    public var blockSize: Int {
        switch self {
        case .float32, .float16, .bfloat16: return 1
        case .q8_0, .q4_0, .q4_1: return 32
        case .nf4: return 64
        }
    }

    /// Bytes per block (per element for scalar types). NF4's counts only the packed codes.
    public var bytesPerBlock: Int {
        switch self {
        case .float32: return 4
        case .float16, .bfloat16: return 2
        case .q8_0: return 34
        case .q4_0: return 18
        case .q4_1: return 20
        case .nf4: return 32
        }
    }

    public var isQuantized: Bool { blockSize > 1 }

    /// Bytes needed for `elements` values, or nil when `elements` is not a whole number of blocks.
    public func byteCount(elements: Int) -> Int? {
        guard elements >= 0, elements % blockSize == 0 else { return nil }
        return elements / blockSize * bytesPerBlock
    }
}
