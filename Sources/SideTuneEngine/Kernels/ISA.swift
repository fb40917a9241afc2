import CSideTuneKernels

/// The instruction-set levels the C kernels are compiled for (Sources/CSideTuneKernels/include/isa.h),
/// each including the ones below it. One binary runs on any x86-64 (and arm64): the level the CPU
/// allows is detected at run time, and `SIDETUNE_ISA=generic|avx2|avx512|avx512bf16` caps it, so
/// every path can be tested on one machine.
public enum ISA: Int, Comparable, CaseIterable, Sendable, CustomStringConvertible {
    /// Portable C (the x86-64 baseline's SSE2, arm64's NEON).
    case generic
    /// AVX2 + FMA + F16C.
    case avx2
    /// AVX-512 F, BW, DQ, VL.
    case avx512
    /// AVX-512 BF16 (vdpbf16ps; and AMX tiles where the CPU has them).
    case avx512bf16

    /// The highest level this CPU supports.
    public static let detected = ISA(rawValue: Int(sidetune_isa_detected())) ?? .generic
    /// The level the kernels use: `detected`, capped by SIDETUNE_ISA.
    public static let current = ISA(rawValue: Int(sidetune_isa())) ?? .generic

    public var name: String { String(cString: sidetune_isa_name(Int32(rawValue))) }
    public var description: String { name }
    public static func < (a: ISA, b: ISA) -> Bool { a.rawValue < b.rawValue }
}
