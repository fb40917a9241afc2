import ArgumentParser

public struct SideTuneCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sidetune",
        abstract: "Side-tuning for pretrained transformers on CPU: train small side networks on frozen backbones, with memory measured.",
        subcommands: [Train.self, Eval.self, Predict.self, Compare.self, Sweep.self, Cache.self, Methods.self, Generate.self, Fetch.self, Bench.self]
    )
    public init() {}
}
