/// Classification metrics from predictions and gold labels.
public struct ClassificationMetrics: Codable, Sendable, Equatable {
    public var accuracy: Double
    public var macroF1: Double
    public var count: Int
    /// confusion[gold][predicted]
    public var confusion: [[Int]]

    public init(predictions: [Int], labels: [Int], classes: Int) {
        precondition(predictions.count == labels.count, "\(predictions.count) predictions for \(labels.count) labels")
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

    enum CodingKeys: String, CodingKey { case accuracy, macroF1 = "macro_f1", count, confusion }
}
