import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneMethods
import SideTuneNN
import SideTuneTokenizers
import SideTuneTrainer

/// Flags of LLM tasks (used when --model names a decoder LLM).
public struct LLMTaskOptions: ParsableArguments {
    @Option(help: "LLM task: classify (--data labelled texts) or lm (causal-LM tuning on a JSONL file of prompt/response pairs; qst only, needs --output).")
    var task: String = "classify"
    @Option(help: "LLM block weights: nf4 (4-bit NormalFloat, double-quantised scales) or f32. Default: nf4 for qst and qlora, f32 otherwise.")
    var weights: String?
    @Option(help: "QST: side width = width / r (d_ff / r for the FFN).")
    var qstReduction: Int = 16
    @Option(help: "QST: downsample per tap: adapter (Linear-SiLU-Linear-LayerNorm), avgpool or maxpool (parameter-free).")
    var qstDownsample: String = "adapter"
    @Option(help: "QST: hidden width of the adapter downsample.")
    var qstAdapterWidth: Int = 16

    public init() {}

    public func validate() throws {
        guard task == "classify" || task == "lm" else { throw ValidationError("--task must be classify or lm, got \(task)") }
        if let w = weights, LLMTaskOptions.format(w) == nil { throw ValidationError("--weights must be nf4 or f32, got \(w)") }
        guard QSTDownsample(rawValue: qstDownsample) != nil else {
            throw ValidationError("--qst-downsample must be one of \(QSTDownsample.allCases.map(\.rawValue).joined(separator: ", ")), got \(qstDownsample)")
        }
        guard qstReduction >= 1, qstAdapterWidth >= 1 else { throw ValidationError("--qst-reduction and --qst-adapter-width must be >= 1") }
    }

    static func format(_ s: String) -> LlamaWeightFormat? {
        switch s.lowercased() {
        case "nf4": .nf4
        case "f32", "float32": .float32
        default: nil
        }
    }

    /// The block weight format for a method: the flag, else NF4 for the 4-bit methods.
    public func weightFormat(for kind: MethodKind) -> LlamaWeightFormat {
        weights.flatMap(Self.format) ?? (kind == .qst || kind == .qlora ? .nf4 : .float32)
    }

    func apply(to o: inout MethodOptions) {
        o.qst.reduction = qstReduction
        o.qst.downsample = QSTDownsample(rawValue: qstDownsample)!
        o.qst.adapterWidth = qstAdapterWidth
    }
}

/// A decoder LLM, its tokenizer and the identity of its weights file.
struct LoadedLLM {
    var llama: Llama
    var tokenizer: ByteLevelBPE
    var name: String
    var sha256: String

    static func load(_ model: String, weights: LlamaWeightFormat, log: (String) -> Void) throws -> LoadedLLM {
        let store = AssetStore()
        _ = try store.fetch(model) { if case .downloading = $0 { log("fetching \(model) ...") } }
        let path = try store.path(of: model, file: .gguf).path
        let t0 = Date()
        let file = try GGUFFile(path: path)
        let llama = try Llama.load(gguf: file, weights: weights)
        let tok = try ByteLevelBPE(gguf: file)
        let sha = try SHA256.hexDigest(ofFile: path)
        log(String(format: "loaded %@ (%d blocks, width %d, %@ blocks) in %.1f s", model, llama.config.layers, llama.config.dim,
                   weights.rawValue, Date().timeIntervalSince(t0)))
        // The checkpoint's backbone identity includes the block format (NF4 weights differ from F32).
        return LoadedLLM(llama: llama, tokenizer: tok, name: "\(model)-\(weights.rawValue)", sha256: sha + "-\(weights.rawValue)")
    }

    /// The asset and block format of a checkpoint's backbone name "<asset>-<format>" (see `load`),
    /// nil when the name is not of that form.
    static func parse(backboneName: String) -> (asset: String, weights: LlamaWeightFormat)? {
        guard let dash = backboneName.lastIndex(of: "-"),
              let format = LlamaWeightFormat(rawValue: String(backboneName[backboneName.index(after: dash)...])) else { return nil }
        return (String(backboneName[..<dash]), format)
    }
}

/// Byte-level BPE ids of a text for classification: the text alone, truncated to `maxLength`
/// tokens (the classifier reads the last one), never empty (an empty text becomes EOS).
func llmClassificationIds(_ tok: ByteLevelBPE, _ text: String, maxLength: Int) -> [Int32] {
    let ids = Array(tok.encode(text).prefix(maxLength))
    return ids.isEmpty ? [tok.eosId ?? 0] : ids
}

extension SideTuneCommand.Train {
    /// Classification on the LLM backbone: the texts tokenised by the model's byte-level BPE,
    /// right-padded batches, the logits at each row's last token.
    func runLLMTraining(_ kind: MethodKind, log: @escaping (String) -> Void) throws -> TrainingReport {
        if llm.task == "lm" { return try runLLMLanguageModelTuning(kind, log: log) }
        guard LLMClassifier.methods.contains(kind) else {
            throw ValidationError("--method \(kind.rawValue) is not available on --model \(task.model) (available: \(LLMClassifier.methods.map(\.rawValue).joined(separator: ", ")))")
        }
        let format = llm.weightFormat(for: kind)
        // Refused before minutes of loading (LLMClassifier checks the same on the built backbone).
        if kind == .qlora && format != .nf4 { throw ValidationError("--method qlora needs --weights nf4") }
        if (kind == .lora || kind == .full) && format == .nf4 {
            throw ValidationError("--method \(kind.rawValue) trains F32 weights: use --weights f32 (the default for it)")
        }
        let loaded = try LoadedLLM.load(task.model, weights: format, log: log)
        let (labels, train, validation, test) = try loadTextSplits(task, log: log) {
            llmClassificationIds(loaded.tokenizer, $0, maxLength: task.maxLength)
        }
        var options = try methodFlags.options()
        llm.apply(to: &options)
        let model = try LLMClassifier(backbone: loaded.llama, method: kind, classes: labels.count, options: options, seed: task.seed)
        let config = CheckpointConfig(method: kind, options: options, labels: labels, maxLength: task.maxLength,
                                      backboneName: loaded.name, backboneSHA256: loaded.sha256, seed: task.seed, epoch: 0,
                                      validationAccuracy: nil, backboneFamily: BackboneFamily.llama.rawValue)
        return try self.train(model, train: train, validation: validation, test: test, config: config, log: log)
    }
}

/// A prompt/response pair of an instruction file (JSONL: one {"prompt": ..., "response": ...} per line).
public struct InstructionPair: Codable, Equatable {
    public var prompt: String
    public var response: String

    public static func load(_ path: String) throws -> [InstructionPair] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ValidationError("\(path): cannot read the instruction file")
        }
        var out: [InstructionPair] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            do { out.append(try JSONDecoder().decode(InstructionPair.self, from: Data(trimmed.utf8))) } catch {
                throw ValidationError("\(path):\(n + 1): expected {\"prompt\": \"...\", \"response\": \"...\"}")
            }
        }
        guard out.count >= 2 else { throw ValidationError("\(path): needs at least 2 prompt/response pairs, found \(out.count)") }
        return out
    }
}

/// Token ids of an instruction pair in the chat template: the prompt as a user turn and the
/// assistant header, then the response and the end-of-turn token (the loss covers these).
func lmExample(_ tok: ByteLevelBPE, _ template: ChatTemplate, _ pair: InstructionPair, maxLength: Int) -> LMExample {
    let prompt = tok.encode(template.render([.user(pair.prompt)]))
    let response = tok.encode(pair.response + "<|im_end|>")
    let ids = Array((prompt + response).prefix(max(maxLength, prompt.count + 1)))
    return LMExample(ids: ids, responseStart: prompt.count)
}

/// Tokens that end an assistant turn.
func stopTokens(_ tok: ByteLevelBPE) -> Set<Int32> {
    var s: Set<Int32> = []
    if let e = tok.eosId { s.insert(e) }
    for t in ["<|im_end|>", "<|endoftext|>"] { if let id = tok.id(of: t) { s.insert(id) } }
    return s
}

extension SideTuneCommand.Train {
    /// QST causal-LM tuning: the side network learns from the response tokens of a JSONL file of
    /// prompt/response pairs (chat template applied); the last 10% of the pairs are held out and
    /// answered greedily at the end. Accuracy in the report: held-out responses generated exactly.
    func runLLMLanguageModelTuning(_ kind: MethodKind, log: @escaping (String) -> Void) throws -> TrainingReport {
        guard kind == .qst else { throw ValidationError("--task lm trains the QST side network only (--method qst)") }
        guard let output else { throw ValidationError("--task lm needs --output (where the tuned side network is saved)") }
        let pairs = try InstructionPair.load(task.data)
        let format = llm.weightFormat(for: kind)
        let loaded = try LoadedLLM.load(task.model, weights: format, log: log)
        let template = try ChatTemplate(source: loaded.tokenizer.chatTemplate)
        let heldCount = max(1, pairs.count / 10)
        let trainPairs = Array(pairs.dropLast(heldCount)), heldOut = Array(pairs.suffix(heldCount))
        let examples = trainPairs.map { lmExample(loaded.tokenizer, template, $0, maxLength: task.maxLength) }
        var options = try methodFlags.options()
        llm.apply(to: &options)
        let model = try QSTLanguageModel(backbone: loaded.llama, options: options.qst, seed: task.seed)
        let trainable = model.trainableParameters().map { $0.1 }
        log("QST causal-LM tuning: \(examples.count) training pairs, \(heldOut.count) held out; \(model.trainableParameterCount) trainable parameters")
        let p = trainingParameters(kind)
        let optimizer = AdamW(parameters: trainable, learningRate: p.learningRate, weightDecay: p.weightDecay)
        let stepsPerEpoch = (examples.count + p.batchSize - 1) / p.batchSize
        let schedule = LRSchedule(peak: p.learningRate, warmupSteps: Int(Float(stepsPerEpoch * p.epochs) * p.warmupFraction),
                                  totalSteps: stepsPerEpoch * p.epochs, decay: .cosine)
        MemoryLedger.shared.resetPeaks()
        ProcessMemory.resetPeak()
        var step = 0, stepTimes: [Double] = [], epochSeconds: [Double] = []
        for epoch in 0..<p.epochs {
            var order = Array(0..<examples.count)
            var shuffler = SplitMix64(seed: p.seed &+ UInt64(epoch))
            shuffler.shuffle(&order)
            let e0 = Date()
            var lossSum = 0.0
            for s in 0..<stepsPerEpoch {
                let t0 = Date()
                let batch = order[(s * p.batchSize)..<min((s + 1) * p.batchSize, examples.count)].map { examples[$0] }
                optimizer.learningRate = schedule.rate(at: step)
                let loss = model.loss(batch)
                optimizer.zeroGrad()
                loss.backward()
                if p.clipNorm > 0 { clipGradNorm(trainable, maxNorm: p.clipNorm) }
                optimizer.step()
                step += 1
                let l = loss.item()
                guard l.isFinite else { throw TrainerError("loss became \(l) at epoch \(epoch + 1) step \(s + 1): lower --lr") }
                lossSum += Double(l)
                stepTimes.append(Date().timeIntervalSince(t0))
            }
            epochSeconds.append(Date().timeIntervalSince(e0))
            log(String(format: "epoch %d: response loss %.4f, %.1f s", epoch + 1, lossSum / Double(stepsPerEpoch), epochSeconds.last!))
        }
        let snapshot = MemoryLedger.shared.snapshot()
        let folder = URL(fileURLWithPath: output, isDirectory: true)
        let config = CheckpointConfig(method: .qst, options: options, labels: [], maxLength: task.maxLength, backboneName: loaded.name,
                                      backboneSHA256: loaded.sha256, seed: task.seed, epoch: p.epochs, validationAccuracy: nil,
                                      backboneFamily: BackboneFamily.llama.rawValue)
        try Checkpoint.save(module: model, config: config, to: folder)
        log("saved the side network to \(folder.path) (sidetune generate --checkpoint \(folder.path) --prompt ...)")
        // The format taught: the longest prefix every training response shares (e.g. "ANSWER: ").
        var shared = trainPairs[0].response
        for pair in trainPairs.dropFirst() { shared = String(shared.commonPrefix(with: pair.response)) }
        var exact = 0, formatted = 0
        for pair in heldOut {
            let prompt = loaded.tokenizer.encode(template.render([.user(pair.prompt)]))
            let ids = model.generate(prompt: prompt, maxTokens: 48, stopTokens: stopTokens(loaded.tokenizer))
            let text = loaded.tokenizer.decode(ids)
            if text == pair.response { exact += 1 }
            if !shared.isEmpty && text.hasPrefix(shared) { formatted += 1 }
            log("held out: \(String(reflecting: pair.prompt)) -> \(String(reflecting: text))")
        }
        if !shared.isEmpty { log("held out: \(formatted) of \(heldOut.count) answers start with the shared prefix \(String(reflecting: shared)); \(exact) exact") }
        var peak = [String: Int]()
        for c in MemoryCategory.allCases { peak[c.rawValue] = snapshot.peak[c] ?? 0 }
        peak["total"] = snapshot.peakTotal
        let acc = Double(exact) / Double(heldOut.count)
        return TrainingReport(method: "qst-lm", accuracy: acc, macroF1: acc, validationAccuracy: acc,
                              trainableParams: model.trainableParameterCount, totalParams: model.parameterCount, peakBytes: peak,
                              peakRSSBytes: snapshot.peakRSS, secondsPerStep: stepTimes.reduce(0, +) / Double(max(stepTimes.count, 1)),
                              secondsPerStepCached: nil, epochSeconds: epochSeconds, trainExamples: examples.count,
                              testExamples: heldOut.count, batchSize: p.batchSize, maxLength: task.maxLength,
                              threads: ThreadPool.shared.activeThreads, cacheBytes: nil)
    }
}
