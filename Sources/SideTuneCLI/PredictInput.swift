import Foundation
import SideTuneData

/// Texts of one CSV column (labels not needed), with the data loader's error handling.
func loadCSVTexts(_ url: URL, column: String) throws -> [String] {
    // The loader needs a label column; reuse the text column so every row qualifies.
    let ds = try TextDataset.load(url, options: LoadOptions(textColumn: column, labelColumn: column))
    return ds.texts
}
