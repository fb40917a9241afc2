import ArgumentParser
import Foundation
import SideTuneMethods
import SideTuneTrainer

/// Flags of LLM tasks (used when --model names a decoder LLM).
public struct LLMTaskOptions: ParsableArguments {
    public init() {}
}

extension SideTuneCommand.Train {
    /// Classification (and LM tuning) on the LLM backbone.
    func runLLMTraining(_ kind: MethodKind, log: @escaping (String) -> Void) throws -> TrainingReport {
        throw ValidationError("--model \(task.model): LLM training is not built yet")
    }
}
