import Foundation

/// What the benchmarks print about the machine: model name and family from /proc/cpuinfo.
public struct CPUInfo: Sendable, Codable {
    public var model: String
    public var family: Int?
    public var cores: Int
    /// The CPU reports AVX-512 F (the kernels' level in use is `ISA.current`).
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
        "\(model)\(family.map { " (family \($0))" } ?? ""), \(cores) cores, kernels: \(ISA.current.name)"
            + (ISA.current < ISA.detected ? " (capped by SIDETUNE_ISA; the CPU has \(ISA.detected.name))" : "")
    }
}

/// The machine's CPU time so far, from the aggregate `cpu` line of /proc/stat (in clock ticks):
/// all of it, and what the hypervisor stole for other guests. On a shared VM steal slows every
/// timing, and many short two-thread regions (side networks) more than long ones (a backbone's
/// GEMMs), so reports state the stolen share next to their times.
public struct CPUTimes: Sendable, Equatable {
    public var total: Int
    public var steal: Int

    /// Parses /proc/stat text: `cpu  user nice system idle iowait irq softirq steal ...`.
    public init?(procStat: String) {
        guard let line = procStat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return nil }
        let fields = line.split(separator: " ").dropFirst().compactMap { Int($0) }
        guard fields.count >= 8 else { return nil }
        total = fields.prefix(8).reduce(0, +) // guest time is already inside user and nice
        steal = fields[7]
    }

    public static func now() -> CPUTimes? {
        (try? String(contentsOfFile: "/proc/stat", encoding: .utf8)).flatMap { CPUTimes(procStat: $0) }
    }

    /// The stolen share (0...1) of all CPU time between two readings; nil if no time passed.
    public static func stolenShare(from a: CPUTimes, to b: CPUTimes) -> Double? {
        let total = b.total - a.total
        return total > 0 ? Double(b.steal - a.steal) / Double(total) : nil
    }
}
