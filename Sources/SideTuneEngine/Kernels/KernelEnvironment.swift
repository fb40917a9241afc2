import Foundation

/// Every environment variable the engine reads, read here once. They exist for debugging and
/// tuning kernels, so that one binary can compare paths; a setting that changes a training result
/// is a `sidetune` flag instead, recorded in reports and checkpoints (`--threads`,
/// `--micro-batches`, `--no-packing`, `--weights`, `--side-matmul`). docs/architecture.md lists
/// them with `sidetune bench` recipes.
public enum KernelEnvironment {
    static let values = ProcessInfo.processInfo.environment

    /// What each variable does, for the docs and `sidetune bench --help`.
    public static let documented: [(name: String, meaning: String)] = [
        ("SIDETUNE_ISA", "cap the kernels' instruction set: generic, avx2, avx512 or avx512bf16 (default: what the CPU has)"),
        ("SIDETUNE_THREADS", "size of the thread pool (default: the online cores); --threads runs fewer"),
        ("SIDETUNE_GEMM_KERNEL", "force a packed GEMM micro-kernel by name (6x16, 4x24, 6x16c, 12x32)"),
        ("SIDETUNE_GEMM_BLOCKING", "mc,kc,nc cache blocking of the packed GEMM (tuning on a new CPU)"),
        ("SIDETUNE_GEMM_THIN", "0 turns the strided thin-GEMM tiles off (every product packed)"),
        ("SIDETUNE_AMX", "0 turns Intel AMX tiles off for bf16-input linears"),
        ("SIDETUNE_NF4_GEMV", "reference runs the Swift NF4 GEMV instead of the C kernel"),
        ("SIDETUNE_BLOCK_CACHE_MB", "idle MiB the block pool may keep above the live peak (default 16; 0: no reuse)"),
    ]

    /// SIDETUNE_THREADS, when a positive integer.
    public static var threads: Int? { values["SIDETUNE_THREADS"].flatMap(Int.init).flatMap { $0 >= 1 ? $0 : nil } }
    /// SIDETUNE_GEMM_KERNEL: a micro-kernel's name.
    public static var gemmKernel: String? { values["SIDETUNE_GEMM_KERNEL"] }
    /// SIDETUNE_GEMM_BLOCKING=mc,kc,nc, when three positive integers.
    public static var gemmBlocking: (mc: Int, kc: Int, nc: Int)? {
        guard let v = values["SIDETUNE_GEMM_BLOCKING"]?.split(separator: ",").compactMap({ Int($0) }), v.count == 3,
              v.allSatisfy({ $0 > 0 }) else { return nil }
        return (v[0], v[1], v[2])
    }
    /// False when SIDETUNE_GEMM_THIN=0.
    public static var thinGEMM: Bool { values["SIDETUNE_GEMM_THIN"] != "0" }
    /// False when SIDETUNE_AMX=0.
    public static var amx: Bool { values["SIDETUNE_AMX"] != "0" }
    /// SIDETUNE_NF4_GEMV: a GEMV kernel's name.
    public static var nf4Gemv: String? { values["SIDETUNE_NF4_GEMV"] }
    /// SIDETUNE_BLOCK_CACHE_MB, when an integer.
    public static var blockCacheMB: Int? { values["SIDETUNE_BLOCK_CACHE_MB"].flatMap(Int.init) }
}
