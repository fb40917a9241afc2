import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats

extension SideTuneCommand.Bench {
    /// `sidetune bench encode --model vit-s14`: frozen image-encoder throughput. A separate type
    /// from any text encoder benchmark so the two can be merged under one `encode` command.
    public struct EncodeBenchVision: ParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "encode-vision",
            abstract: "Time the frozen image encoder (no autograd) and report images/s, GFLOPS and peak memory.",
            discussion: """
            Loads the model (from --onnx, or the cached asset, fetched if missing), runs one warm-up \
            pass, then --iterations timed passes on seeded random pixels of --batch x 3 x --size x --size, \
            collecting the 13 taps a side network reads. Reports images/s of the best pass, effective \
            GFLOPS (matrix products and attention) against the FMA-loop peak measured in the same run, \
            and peak memory per ledger category plus the process's peak RSS.

            scripts/bench_encode_vit_twin.py runs this and onnxruntime on the same work and prints the ratio.
            """
            , shouldDisplay: false // reached through `bench encode --model vit-s14`
        )
        @Option(help: "Model to time (vit-s14).")
        var model: String = "vit-s14"
        @Option(help: "Path to the .onnx file; default: the cached asset (fetched if needed).")
        var onnx: String?
        @Option(help: "Images per pass.")
        var batch: Int = 32
        @Option(help: "Image side in pixels (a multiple of 14).")
        var size: Int = 224
        @Option(help: "Timed passes after the warm-up.")
        var iterations: Int = 3
        @Option(help: "Threads (default: all the pool has).")
        var threads: Int?
        @Option(help: ArgumentHelp("The frozen forward's products (as train's --backbone-precision): "
                                   + SideMatmulChoice.help + ".", valueName: "f32|bf16|auto"))
        var precision: SideMatmulChoice = .f32
        @Flag(help: "Print one JSON object instead of a table.")
        var json = false

        public init() {}

        public func validate() throws {
            guard model == "vit-s14" else { throw ValidationError("unknown image model '\(model)'; available: vit-s14") }
            guard batch >= 1, iterations >= 1 else { throw ValidationError("--batch and --iterations must be >= 1") }
            guard size >= 14, size % 14 == 0 else { throw ValidationError("--size \(size) is not a positive multiple of 14") }
        }

        public func run() throws {
            let path = try onnx ?? {
                let store = AssetStore()
                try store.fetch(model)
                return try store.path(of: model, file: .onnx).path
            }()
            let t0 = Date()
            let (vit, _) = try DINOv2ViT.load(onnx: ONNXModel(path: path))
            if precision.precision == .bfloat16 { vit.freeze(); vit.convertProjectionsToBFloat16() }
            var p = VisionEncodeBenchmark.Parameters()
            p.batch = batch
            p.size = size
            p.iterations = iterations
            if let threads { p.threads = max(1, min(threads, ThreadPool.shared.maxThreads)) }
            var report = Tensor.withMatmulPrecision(precision.precision) {
                VisionEncodeBenchmark.run(vit, model: model, loadSeconds: Date().timeIntervalSince(t0), p,
                                          progress: json ? nil : { print($0) })
            }
            report.precision = precision.precision.rawValue
            print(json ? report.jsonString() : report.table())
        }
    }
}
