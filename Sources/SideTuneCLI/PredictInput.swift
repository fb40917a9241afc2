import Foundation
import SideTuneData
import SideTuneEngine

/// Texts of one CSV column (labels not needed), with the data loader's error handling.
func loadCSVTexts(_ url: URL, column: String) throws -> [String] {
    // The loader needs a label column; reuse the text column so every row qualifies.
    let ds = try TextDataset.load(url, options: LoadOptions(textColumn: column, labelColumn: column))
    return ds.texts
}

/// The best label and the class probabilities of one prediction row, as CSV fields.
func predictionFields(_ probabilities: [Float], _ labels: [String]) -> [String] {
    let best = probabilities.indices.max { probabilities[$0] < probabilities[$1] }!
    return [csvQuoted(labels[best])] + probabilities.map { String(format: "%.4f", $0) }
}

/// A CSV field in double quotes (quotes doubled) when it holds a comma, quote or line break.
func csvQuoted(_ s: String) -> String {
    guard s.contains(where: { $0 == "," || $0 == "\"" || $0.isNewline }) else { return s }
    return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

