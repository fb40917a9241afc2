// The README's "From Swift" example, built and run by .ci/run from a package that depends on
// SideTune by version. Usage: library-example MODEL_FOLDER (an all-MiniLM-L6-v2 folder).
import Foundation
import SideTune

let folder = URL(fileURLWithPath: CommandLine.arguments[1])   // e.g. an all-MiniLM-L6-v2 folder
let encoder = try BertEncoder.load(folder: folder)
let tokenizer = try WordPieceTokenizer.load(modelFolder: folder)
func split(_ texts: [String], _ labels: [Int]) -> EncodedSplit {
    EncodedSplit(ids: texts.map { tokenizer.encode($0, maxLength: 32).ids }, labels: labels)
}
let train = split(["what a lovely day", "this is awful", "I love it", "worst service ever",
                   "great news today", "I hate waiting", "such a fun trip", "this made me sad"], [1, 0, 1, 0, 1, 0, 1, 0])
let test = split(["a wonderful evening", "terrible, just terrible", "so happy for you", "I am so angry"], [1, 0, 1, 0])

let model = try MethodRegistry.classifier(.last, on: encoder, classes: 2, seed: 1)  // any method, any backbone
var settings = TrainingParameters()
settings.epochs = 5
settings.batchSize = 4
settings.learningRate = MethodRegistry.method(.last).defaultLearningRate
let report = try Trainer(model: model, parameters: settings, train: train, validation: test, test: test).run()
print(report.table())   // accuracy, trainable parameters, peak memory by category, s/step
