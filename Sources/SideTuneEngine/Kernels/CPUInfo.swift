import Foundation

/// What the benchmarks print about the machine: model name and family from /proc/cpuinfo.
public struct CPUInfo: Sendable, Codable {
    public var model: String
    public var family: Int?
    public var cores: Int
    public var hasAVX512: Bool

    public static func current() -> CPUInfo {
        let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        var model = "unknown", family: Int?, avx512 = false
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            if parts[0] == "model name", model == "unknown" { model = parts[1] }
            if parts[0] == "cpu family", family == nil { family = Int(parts[1]) }
            if parts[0] == "flags" { avx512 = parts[1].contains("avx512f") }
        }
        return CPUInfo(model: model, family: family, cores: ProcessInfo.processInfo.activeProcessorCount, hasAVX512: avx512)
    }

    public var description: String {
        "\(model)\(family.map { " (family \($0))" } ?? ""), \(cores) cores\(hasAVX512 ? ", AVX-512" : "")"
    }
}
