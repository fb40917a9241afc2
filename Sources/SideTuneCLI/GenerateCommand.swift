import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneMethods
import SideTuneTokenizers
import SideTuneTrainer

extension SideTuneCommand {
    public struct Generate: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Generate text with a decoder backbone (SmolLM2), streaming tokens to stdout.",
            discussion: """
            The prompt is wrapped in the model's chat template (a user message, then the assistant \
            header) unless --raw is given. The file's 4-bit blocks are de-quantised to F32 at load, or \
            re-quantised to NF4 with --weights nf4 (as QST's backbone is). Timing and the memory ledger \
            go to stderr.
            """
        )
        @Option(help: "Model asset name (fetched into the SideTune cache on first use).")
        var model: String = "smollm2"
        @Option(help: "A GGUF file to use instead of the named asset.")
        var gguf: String?
        @Option(help: "The prompt text.")
        var prompt: String
        @Option(help: "An optional system message (the template's default otherwise).")
        var system: String?
        @Option(name: .customLong("max-tokens"), help: "Maximum number of new tokens.")
        var maxTokens: Int = 128
        @Option(help: "Sampling temperature; 0 is greedy.")
        var temperature: Float = 0
        @Option(help: "Random seed for temperature sampling.")
        var seed: UInt64 = 0
        @Flag(help: "Use the prompt as is, without the chat template.")
        var raw = false
        @Option(help: "Block weight format: f32 (exact) or nf4 (4-bit NormalFloat, QST's backbone).")
        var weights: WeightFormat = .f32
        @Flag(help: "Print the memory ledger after generating.")
        var ledger = false
        @Option(help: "A QST side network tuned with `train --task lm --output DIR`: generate with it (greedy).")
        var checkpoint: String?
        @Flag(name: .customLong("no-kv-cache"), help: "With --checkpoint: recompute the whole sequence per token instead of caching keys and values (the reference; slower).")
        var noKVCache = false

        public init() {}

        public func validate() throws {
            guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1") }
            guard temperature >= 0 else { throw ValidationError("--temperature must be >= 0") }
            guard model == "smollm2" || gguf != nil else { throw ValidationError("only the smollm2 decoder is supported (or pass --gguf)") }
        }

        public func run() throws {
            if let checkpoint { return try runTuned(checkpoint) }
            let path: String
            if let gguf {
                path = gguf
            } else {
                let store = AssetStore()
                try store.fetch(model) { p in if case .downloading(let spec) = p { eprint("fetching \(spec) ...") } }
                path = try store.path(of: model, file: .gguf).path
            }
            let t0 = Date()
            let file = try GGUFFile(path: path)
            let llama = try Llama.load(gguf: file, weights: weights)
            let tok = try ByteLevelBPE(gguf: file)
            eprint(String(format: "loaded %@ (%d blocks, width %d) in %.2f s", (path as NSString).lastPathComponent as NSString,
                          llama.config.layers, llama.config.dim, Date().timeIntervalSince(t0)))
            let text: String
            if raw {
                text = prompt
            } else {
                let template = try ChatTemplate(source: tok.chatTemplate, file: path)
                text = template.render((system.map { [ChatMessage.system($0)] } ?? []) + [.user(prompt)])
            }
            let ids = tok.encode(text)
            let budget = try contextBudget(prompt: ids.count, context: llama.config.contextLength)
            var stops: Set<Int32> = []
            if let e = tok.eosId { stops.insert(e) }
            if let e = tok.id(of: "<|endoftext|>") { stops.insert(e) }
            var pending: [UInt8] = []
            var prefill = 0.0
            let start = Date()
            let out = llama.generate(prompt: ids, parameters: GenerateParameters(maxTokens: budget, temperature: temperature,
                                                                                  seed: seed, stopTokens: stops)) { event in
                switch event {
                case .prefill(_, let s): prefill = s
                case .token(let id):
                    // Print whole characters only: a UTF-8 sequence may span tokens.
                    pending += tok.bytes(of: id)
                    let valid = validUTF8Prefix(pending)
                    if valid > 0 {
                        FileHandle.standardOutput.write(Data(pending[0..<valid]))
                        pending.removeFirst(valid)
                    }
                }
                return true
            }
            if !pending.isEmpty { FileHandle.standardOutput.write(Data(String(decoding: pending, as: UTF8.self).utf8)) }
            // The text's own line ends before the statistics (stderr) are written.
            FileHandle.standardOutput.write(Data("\n".utf8))
            let total = Date().timeIntervalSince(start)
            let decode = total - prefill
            eprint(String(format: "prompt %d tokens in %.2f s (%.1f tok/s); generated %d tokens in %.2f s (%.1f tok/s)",
                          ids.count, prefill, Double(ids.count) / max(prefill, 1e-9), out.count, decode,
                          Double(max(out.count - 1, 0)) / max(decode, 1e-9)))
            if ledger { eprint(MemoryLedger.shared.snapshot().report()) }
        }
    }
}

extension SideTuneCommand.Generate {
    /// Greedy generation through the backbone and a tuned QST side network.
    func runTuned(_ folder: String) throws {
        let url = URL(fileURLWithPath: folder, isDirectory: true)
        let config = try Checkpoint.readConfig(url)
        guard config.method == .qst, config.labels.isEmpty else {
            throw ValidationError("\(folder): not a QST language-model checkpoint (method \(config.method.rawValue), \(config.labels.count) labels)")
        }
        let view = CheckpointConfigView(family: .llama, backboneName: config.backboneName, backbonePath: config.backbonePath,
                                        backboneSHA256: config.backboneSHA256)
        let source = try BackboneSource.of(checkpoint: view, hint: BackboneHint(model: gguf, modelDir: nil), checkpointPath: folder, log: eprint)
        guard case let .llama(llama, tokenizer) = try source.load(weights: MethodRegistry.weights(.qst, options: config.options), log: eprint) else {
            throw ValidationError("\(folder): the checkpoint's backbone is not a decoder LLM")
        }
        let model = try QSTLanguageModel(backbone: llama, options: config.options.qst, seed: config.seed)
        try Checkpoint.loadParameters(into: model, from: url)
        let template = try ChatTemplate(source: tokenizer.chatTemplate)
        let text = raw ? prompt : template.render((system.map { [ChatMessage.system($0)] } ?? []) + [.user(prompt)])
        let ids = tokenizer.encode(text)
        let budget = try contextBudget(prompt: ids.count, context: llama.config.contextLength)
        let start = Date()
        let out = model.generate(prompt: ids, maxTokens: budget, stopTokens: stopTokens(tokenizer), cached: !noKVCache)
        let seconds = Date().timeIntervalSince(start)
        print(tokenizer.decode(out))
        eprint(String(format: "prompt %d tokens; generated %d tokens in %.2f s including the prompt (%.1f tok/s, %@)",
                      ids.count, out.count, seconds, Double(out.count) / max(seconds, 1e-9), noKVCache ? "no KV cache" : "KV cache"))
    }
}

extension SideTuneCommand.Generate {
    /// Tokens that may be generated after a prompt of `prompt` tokens: --max-tokens, lowered (with
    /// a note) to what the model's context leaves; a prompt that fills the context is refused.
    func contextBudget(prompt: Int, context: Int) throws -> Int {
        guard prompt < context else {
            throw ValidationError("the prompt is \(prompt) tokens, but the model's context is \(context) tokens: shorten it")
        }
        if maxTokens > context - prompt {
            eprint("note: --max-tokens \(maxTokens) lowered to \(context - prompt): the context is \(context) tokens and the prompt \(prompt)")
        }
        return min(maxTokens, context - prompt)
    }
}

/// Length of the longest prefix of `bytes` that ends on a UTF-8 character boundary.
func validUTF8Prefix(_ bytes: [UInt8]) -> Int {
    var i = bytes.count
    var back = 0
    while i > 0 && back < 4 {
        let b = bytes[i - 1]
        if b & 0xC0 != 0x80 {
            let need = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
            return back + 1 >= need ? bytes.count : i - 1
        }
        i -= 1; back += 1
    }
    return bytes.count
}

func eprint(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }
