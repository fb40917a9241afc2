/// Classification metrics from predictions and gold labels.
public struct ClassificationMetrics: Codable, Sendable, Equatable {
    public var accuracy: Double
    public var macroF1: Double
    public var count: Int
    /// confusion[gold][predicted]
    public var confusion: [[Int]]

    public init(predictions: [Int], labels: [Int], classes: Int) {
        precondition(predictions.count == labels.count, "\(predictions.count) predictions for \(labels.count) labels")
        guard classes <= Self.denseClassLimit else {
            self = ClassificationMetrics(sparsePredictions: predictions, labels: labels)
            return
        }
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
        for (p, g) in zip(predictions, labels) { confusion[g][p] += 1 }
        let correct = (0..<classes).reduce(0) { $0 + confusion[$1][$1] }
        count = labels.count
        accuracy = labels.isEmpty ? 0 : Double(correct) / Double(labels.count)
        // Macro-F1: the unweighted mean of per-class F1 (a class never predicted nor present counts 0).
        var f1s: [Double] = []
        for c in 0..<classes {
            let tp = Double(confusion[c][c])
            let predicted = Double((0..<classes).reduce(0) { $0 + confusion[$1][c] })
            let actual = Double(confusion[c].reduce(0, +))
            let precision = predicted > 0 ? tp / predicted : 0, recall = actual > 0 ? tp / actual : 0
            f1s.append(precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0)
        }
        macroF1 = f1s.isEmpty ? 0 : f1s.reduce(0, +) / Double(f1s.count)
        self.confusion = confusion
    }

    /// Above this many classes (a language model's vocabulary) no confusion matrix is kept.
    static let denseClassLimit = 1024

    /// Accuracy, and macro-F1 over the classes that occur as a target or a prediction (the
    /// vocabulary's other classes would each count 0); no confusion matrix.
    init(sparsePredictions predictions: [Int], labels: [Int]) {
        var tp: [Int: Int] = [:], predicted: [Int: Int] = [:], actual: [Int: Int] = [:]
        for (p, g) in zip(predictions, labels) {
            predicted[p, default: 0] += 1
            actual[g, default: 0] += 1
            if p == g { tp[g, default: 0] += 1 }
        }
        count = labels.count
        accuracy = labels.isEmpty ? 0 : Double(tp.values.reduce(0, +)) / Double(labels.count)
        let seen = Set(predicted.keys).union(actual.keys)
        let f1s = seen.map { c -> Double in
            let t = Double(tp[c] ?? 0), p = Double(predicted[c] ?? 0), a = Double(actual[c] ?? 0)
            let precision = p > 0 ? t / p : 0, recall = a > 0 ? t / a : 0
            return precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0
        }
        macroF1 = f1s.isEmpty ? 0 : f1s.reduce(0, +) / Double(f1s.count)
        confusion = []
    }

    enum CodingKeys: String, CodingKey { case accuracy, macroF1 = "macro_f1", count, confusion }
}
