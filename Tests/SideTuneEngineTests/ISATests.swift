import CSideTuneKernels
import Foundation
import SideTuneEngine
import Testing

/// The run-time dispatch: the detected level is what /proc/cpuinfo's flags allow, SIDETUNE_ISA caps
/// it, and the kernels chosen are that level's. (.ci/run runs the suite once per cap.)
@Suite struct ISATests {
    static let flags: Set<Substring> = {
        let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("flags") } ?? ""
        return Set(line.split(separator: " "))
    }()

    /// The highest level the CPU's flags allow.
    static var allowedByFlags: ISA {
        #if arch(x86_64)
        let f = flags
        guard ["avx2", "fma", "f16c"].allSatisfy({ f.contains($0) }) else { return .generic }
        guard ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy({ f.contains(Substring($0)) }) else { return .avx2 }
        return f.contains("avx512_bf16") ? .avx512bf16 : .avx512
        #else
        return .generic
        #endif
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/proc/cpuinfo"), "needs /proc/cpuinfo"))
    func detectionFollowsTheCPUFlags() {
        #expect(ISA.detected == Self.allowedByFlags, "detected \(ISA.detected), flags allow \(Self.allowedByFlags)")
    }

    @Test func theCapIsHonoured() {
        let cap = ProcessInfo.processInfo.environment["SIDETUNE_ISA"].flatMap { name in ISA.allCases.first { $0.name == name } }
        #expect(ISA.current == min(cap ?? ISA.detected, ISA.detected))
        #expect(Int(sidetune_isa()) == ISA.current.rawValue)
    }

    @Test func kernelsAreTheLevelsOwn() {
        let gemm = GEMMKernel.native.name
        switch ISA.current {
        case .generic: #expect(gemm == "4x8" && StridedKernel.native.isEmpty && !MatmulPrecision.bfloat16IsNative)
        case .avx2: #expect(["6x16c", "6x16", "4x24"].contains(gemm) && StridedKernel.native.allSatisfy { $0.name.hasPrefix("strided") })
        case .avx512, .avx512bf16: #expect(GEMMKernel.available.contains { $0.name == "12x32" })
        }
        #expect(sidetune_bf16dot_native() == (ISA.current >= .avx512bf16))
        #expect((sidetune_nf4_gemv_is_vectorized() != 0) == (ISA.current >= .avx2))
    }
}
