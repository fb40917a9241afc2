import ArgumentParser
import Foundation
import SideTuneMethods
import SideTuneTrainer

/// Flags of image tasks (used when --model names a ViT).
public struct ImageTaskOptions: ParsableArguments {
    public init() {}
}

extension SideTuneCommand.Train {
    /// Image classification on the ViT backbone.
    func runImageTraining(_ kind: MethodKind, log: @escaping (String) -> Void) throws -> TrainingReport {
        throw ValidationError("--model \(task.model): image training is not built yet")
    }
}
