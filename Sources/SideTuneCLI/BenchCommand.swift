import ArgumentParser
import Foundation
import SideTuneEngine

extension SideTuneCommand {
    public struct Bench: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Measure the engine's kernels and encoders against the machine's own peak.",
            subcommands: [GEMMBench.self, EncodeBench.self, StepBench.self]
        )
        public init() {}
    }
}

extension SideTuneCommand.Bench {
    public struct GEMMBench: ParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "gemm",
            abstract: "Time the FP32 GEMM on square and transformer shapes on 1 and 2 threads.",
            discussion: """
            First measures the machine's FP32 peak with an in-register FMA loop, then reports GFLOPS \
            (2*m*n*k / best time) and the fraction of that peak for each shape and thread count. \
            Compare ratios within one run: these machines differ (Zen 4 runs 512-bit FMAs at half rate).
            """
        )
        @Flag(help: "Print one JSON object (cpu, peak_gflops by thread count, rows) instead of a table.")
        var json = false
        @Option(help: "Comma-separated thread counts to run.")
        var threads: String = "1,2"
        @Option(help: "Comma-separated shapes MxNxK; default: squares 256..2048 and transformer shapes.")
        var shapes: String?
        @Option(help: "Minimum seconds spent timing each shape (best run is reported).")
        var seconds: Double = 0.5

        @Flag(help: "Also time the micro-kernel alone on cache-resident panels (the ceiling for the full GEMM).")
        var microKernel = false

        public init() {}

        public func run() throws {
            if microKernel {
                let k = GEMMKernel.native
                print(String(format: "micro-kernel %@ alone: %.1f GFLOPS; FP32 peak 1 thread: %.1f GFLOPS", k.name,
                             GEMMBenchmark.microKernelGFLOPS(kernel: k), PeakFLOPS.measure(threads: 1)))
            }
            let threadCounts = try threads.split(separator: ",").map { s -> Int in
                guard let t = Int(s), t >= 1 else { throw ValidationError("bad thread count '\(s)'") }
                return min(t, ThreadPool.shared.maxThreads)
            }
            let list = try shapes.map(GEMMBenchmark.parseShapes) ?? GEMMBenchmark.defaultShapes
            let report = GEMMBenchmark.run(shapes: list, threadCounts: threadCounts, minSeconds: seconds,
                                           progress: json ? nil : { print($0) })
            if json {
                print(report.jsonString())
            } else {
                print(report.table())
            }
        }
    }
}
