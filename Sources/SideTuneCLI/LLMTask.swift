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
    var task: LLMTask = .classify

    public init() {}
}

/// Byte-level BPE ids of a text for classification: the text alone, truncated to `maxLength`
/// tokens (the classifier reads the last one), never empty (an empty text becomes EOS).
func llmClassificationIds(_ tok: ByteLevelBPE, _ text: String, maxLength: Int) -> [Int32] {
    let ids = Array(tok.encode(text).prefix(maxLength))
    return ids.isEmpty ? [tok.eosId ?? 0] : ids
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
    /// QST causal-LM tuning through the trainer: the side network learns from the response tokens
    /// of a JSONL file of prompt/response pairs (chat template applied). The last 10% of the pairs
    /// are the test set and the 10% before them the validation set, scored by next-token accuracy
    /// on the response tokens; the test prompts are then answered greedily and the answers shown.
    func tuneLanguageModel(_ llama: Llama, tokenizer: ByteLevelBPE, source: BackboneSource, options: MethodOptions,
                           log: @escaping (String) -> Void) throws -> TrainingReport {
        guard let output else { throw ValidationError("--task lm needs --output (where the tuned side network is saved)") }
        let pairs = try InstructionPair.load(task.data)
        guard pairs.count >= 3 else { throw ValidationError("\(task.data): --task lm needs at least 3 pairs (train, validation, test), found \(pairs.count)") }
        let template = try ChatTemplate(source: tokenizer.chatTemplate)
        let held = max(1, pairs.count / 10)
        let trainPairs = Array(pairs.dropLast(2 * held)), validationPairs = Array(pairs.dropLast(held).suffix(held))
        let testPairs = Array(pairs.suffix(held))
        func split(_ ps: [InstructionPair]) -> LMSplit { LMSplit(ps.map { lmExample(tokenizer, template, $0, maxLength: task.maxLength) }) }
        let model = try QSTLanguageModel(backbone: llama, options: options.qst,
                                         activationBits: MethodRegistry.activationBits(.qst, options: options), seed: task.seed)
        log("QST causal-LM tuning: \(trainPairs.count) training pairs, \(validationPairs.count) validation, \(testPairs.count) test")
        let config = CheckpointConfig(method: .qst, options: options, labels: [], maxLength: task.maxLength, backboneName: source.name,
                                      backboneSHA256: source.sha256, seed: task.seed, epoch: 0, validationAccuracy: nil,
                                      backboneFamily: .llama, backbonePath: source.path)
        var report = try train(model, train: split(trainPairs), validation: split(validationPairs), test: split(testPairs),
                               config: config, log: log)
        let best = URL(fileURLWithPath: output, isDirectory: true).appendingPathComponent("best")
        log("the tuned side network is in \(best.path) (sidetune generate --checkpoint \(best.path) --prompt ...)")
        // The format taught: the longest prefix every training response shares (e.g. "ANSWER: ").
        var shared = trainPairs[0].response
        for pair in trainPairs.dropFirst() { shared = String(shared.commonPrefix(with: pair.response)) }
        var exact = 0, formatted = 0
        for pair in testPairs {
            let prompt = tokenizer.encode(template.render([.user(pair.prompt)]))
            let text = tokenizer.decode(model.generate(prompt: prompt, maxTokens: 48, stopTokens: stopTokens(tokenizer)))
            if text == pair.response { exact += 1 }
            if !shared.isEmpty && text.hasPrefix(shared) { formatted += 1 }
            log("test: \(String(reflecting: pair.prompt)) -> \(String(reflecting: text))")
        }
        if !shared.isEmpty { log("test: \(formatted) of \(testPairs.count) answers start with the shared prefix \(String(reflecting: shared)); \(exact) exact") }
        report.method = "qst-lm"
        return report
    }
}
