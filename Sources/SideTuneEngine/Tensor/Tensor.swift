import Foundation

/// An n-dimensional array with contiguous row-major storage. Compute is Float32; F16, BF16 and
/// block-quantised storage are converted on use (`float32()`) or read by quantised kernels.
///
/// Tensors are reference types: autograd records how each was made (`gradFn`) and backward writes
/// `grad`. A tensor's bytes are counted in the memory ledger until its last reference goes.
public final class Tensor: @unchecked Sendable, CustomStringConvertible {
    public let shape: [Int]
    public let storage: TensorStorage
    /// Leaves with `requiresGrad` receive `.grad` from backward; results of ops on them inherit it.
    public var requiresGrad: Bool
    public var grad: Tensor?
    /// How this tensor was made (nil for leaves and for results computed without grad).
    var gradFn: GradNode?
    public var name: String = ""

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    public var dtype: DType { storage.dtype }

    /// Uninitialised tensor tagged with the current ledger category.
    public init(shape: [Int], dtype: DType = .float32, category: MemoryCategory = MemoryLedger.currentCategory) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in shape \(shape)")
        let n = shape.reduce(1, *)
        guard let bytes = dtype.byteCount(elements: n) else {
            preconditionFailure("\(n) elements is not a whole number of \(dtype.rawValue) blocks of \(dtype.blockSize)")
        }
        storage = TensorStorage(byteCount: bytes, dtype: dtype, category: category)
        self.shape = shape
        requiresGrad = false
    }

    /// A tensor over existing storage (a view with another shape, or mapped file bytes).
    public init(storage: TensorStorage, shape: [Int], requiresGrad: Bool = false) {
        precondition(storage.dtype.byteCount(elements: shape.reduce(1, *)) ?? -1 <= storage.byteCount,
                     "shape \(shape) needs more bytes than the storage has (\(storage.byteCount))")
        self.storage = storage
        self.shape = shape
        self.requiresGrad = requiresGrad
    }

    public convenience init(_ values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values for shape \(shape)")
        self.init(shape: shape)
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: values.count) }
    }

    public static func zeros(_ shape: [Int], category: MemoryCategory = MemoryLedger.currentCategory) -> Tensor {
        full(shape, 0, category: category)
    }
    public static func ones(_ shape: [Int]) -> Tensor { full(shape, 1) }
    public static func full(_ shape: [Int], _ value: Float, category: MemoryCategory = MemoryLedger.currentCategory) -> Tensor {
        let t = Tensor(shape: shape, category: category)
        t.data.initialize(repeating: value, count: t.count)
        return t
    }
    public static func scalar(_ value: Float) -> Tensor { full([], value) }

    /// Normal(0, std) values from a seeded generator.
    public static func randn(_ shape: [Int], std: Float = 1, rng: inout SplitMix64) -> Tensor {
        let t = Tensor(shape: shape)
        for i in 0..<t.count { t.data[i] = rng.nextNormal() * std }
        return t
    }
    /// Uniform [low, high) values from a seeded generator.
    public static func uniform(_ shape: [Int], low: Float, high: Float, rng: inout SplitMix64) -> Tensor {
        let t = Tensor(shape: shape)
        for i in 0..<t.count { t.data[i] = low + (high - low) * rng.nextFloat() }
        return t
    }

    /// The Float32 elements (storage must be F32).
    @inline(__always) public var data: UnsafeMutablePointer<Float> {
        precondition(storage.dtype == .float32, "tensor '\(name)' holds \(dtype.rawValue): convert with float32() first")
        return storage.floats
    }

    public func toArray() -> [Float] {
        let t = dtype == .float32 ? self : float32()
        return Array(UnsafeBufferPointer(start: t.data, count: count))
    }

    public func item() -> Float {
        precondition(count == 1, "item() of a tensor with shape \(shape)")
        return toArray()[0]
    }

    public subscript(_ index: Int...) -> Float {
        get { data[flatIndex(index)] }
        set { data[flatIndex(index)] = newValue }
    }

    func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == rank, "index \(index) for shape \(shape)")
        var f = 0
        for (i, d) in zip(index, shape) { precondition(i >= 0 && i < d, "index \(index) out of range for \(shape)"); f = f * d + i }
        return f
    }

    /// Dimension of `axis`, which may be negative (counted from the end).
    public func size(_ axis: Int) -> Int { shape[normalizeAxis(axis, rank)] }

    /// The same storage and shape, cut off from autograd.
    public func detach() -> Tensor { Tensor(storage: storage, shape: shape) }

    /// A fresh copy (no autograd).
    public func copy(category: MemoryCategory = MemoryLedger.currentCategory) -> Tensor {
        let t = Tensor(shape: shape, dtype: dtype, category: category)
        t.storage.raw.copyMemory(from: storage.raw, byteCount: storage.dtype.byteCount(elements: count)!)
        return t
    }

    /// Float32 copy of this tensor's values (the tensor itself when already F32).
    public func float32() -> Tensor {
        if dtype == .float32 { return self }
        let t = Tensor(shape: shape)
        convertToFloat32(storage.raw, dtype: dtype, count: count, into: t.data)
        return t
    }

    /// This tensor's values stored as `dtype` (F16, BF16 or a GGUF block type).
    public func converted(to dtype: DType, category: MemoryCategory? = nil) -> Tensor {
        if dtype == self.dtype { return self }
        let src = float32()
        let t = Tensor(shape: shape, dtype: dtype, category: category ?? storage.category)
        convertFromFloat32(src.data, to: dtype, count: count, into: t.storage.raw)
        return t
    }

    public var description: String {
        let values = count <= 8 ? toArray().map { String(format: "%.4g", $0) }.joined(separator: ", ") : "..."
        return "Tensor\(shape) \(dtype.rawValue)\(requiresGrad ? " grad" : "") [\(values)]"
    }
}

/// Maps a possibly negative axis into 0..<rank.
@inline(__always) public func normalizeAxis(_ axis: Int, _ rank: Int) -> Int {
    let a = axis < 0 ? axis + rank : axis
    precondition(a >= 0 && a < max(rank, 1), "axis \(axis) out of range for rank \(rank)")
    return a
}
