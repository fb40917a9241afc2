import ArgumentParser
import Foundation
import SideTuneEngine

extension SideTuneCommand {
    public struct Bench: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Measure the engine's kernels and encoders against the machine's own peak.",
            subcommands: [GEMMBench.self, EncodeBench.self, StepBench.self, ImagesBench.self]
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

        @Option(help: ArgumentHelp("Compare kernels instead (repeat the option): NAME[@mc,kc,nc], e.g. 6x16 or 6x16c@168,384,4080; one thread, interleaved rounds, thread CPU time.", valueName: "kernel"))
        var kernel: [String] = []
        @Option(help: "With --kernel: rounds of interleaved timing.")
        var rounds: Int = 5
        @Option(help: ArgumentHelp("Products in f32, or with bf16 operands and f32 sums (as --side-matmul bf16: packing included; the peak column stays FP32's, which bf16 products can double).", valueName: "f32|bf16"))
        var precision: MatmulPrecision = .float32
        @Flag(help: ArgumentHelp("With --precision bf16: B is a frozen weight [N, K], rounded and packed once "
                                 + "outside the timing as `--backbone-precision bf16` stores it; only A is rounded "
                                 + "per call (the frozen backbone's products)."))
        var frozenWeight = false

        public init() {}

        public func run() throws {
            OutOfMemory.advice = "use smaller --shapes"
            if !kernel.isEmpty {
                let kernels = try kernel.map(GEMMBenchmark.parseKernel)
                let list = try shapes.map(GEMMBenchmark.parseShapes) ?? GEMMBenchmark.defaultShapes
                print("GFLOPS on 1 thread (thread CPU time, best of \(rounds) interleaved rounds); peak 1 thread: "
                      + String(format: "%.1f", PeakFLOPS.measure(threads: 1)))
                print("shape".padding(toLength: 22, withPad: " ", startingAt: 0) + kernels.map { $0.name.padding(toLength: 22, withPad: " ", startingAt: 0) }.joined())
                for row in GEMMBenchmark.compareKernels(shapes: list, kernels: kernels, rounds: rounds, minSeconds: seconds / Double(rounds)) {
                    let s = row.shape
                    let name = "\(s.m)x\(s.n)x\(s.k):\(s.transA ? "T" : "N")\(s.transB ? "T" : "N")"
                    print(name.padding(toLength: 22, withPad: " ", startingAt: 0)
                          + row.gflops.map { String(format: "%-22.1f", $0) }.joined())
                }
                return
            }
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
            if frozenWeight && precision != .bfloat16 {
                throw ValidationError("--frozen-weight needs --precision bf16")
            }
            if frozenWeight, let s = list.first(where: { $0.transA || $0.transB }) {
                throw ValidationError("--frozen-weight times x W^T with W given as [N, K]: give shapes as MxNxK "
                                      + "without a transpose suffix (got \(s.m)x\(s.n)x\(s.k))")
            }
            let report = GEMMBenchmark.run(shapes: list, threadCounts: threadCounts, minSeconds: seconds, precision: precision,
                                           frozenWeight: frozenWeight, progress: json ? nil : { print($0) })
            if json {
                print(report.jsonString())
            } else {
                print(report.table())
            }
        }
    }
}
