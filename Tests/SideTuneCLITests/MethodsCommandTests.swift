import Foundation
import SideTuneCLI
import SideTuneMethods
import Testing

@Suite struct MethodsCommandTests {
    /// The README's method x backbone table is `sidetune methods --markdown`, word for word, and the
    /// train help lists every registered method.
    @Test func readmeAndHelpShowTheRegistry() throws {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../README.md")
        let text = try String(contentsOf: readme.standardizedFileURL, encoding: .utf8)
        let table = MethodRegistry.markdownMatrix(columns: SideTuneCommand.Methods.columns)
        #expect(text.contains(table), "the README's method table differs from `sidetune methods --markdown`:\n\(table)")
        // Help text wraps at the terminal's width: compare with the whitespace folded.
        let help = SideTuneCommand.helpMessage(for: SideTuneCommand.Train.self).split(whereSeparator: \.isWhitespace).joined(separator: " ")
        for m in MethodRegistry.matrix() { #expect(help.contains("\(m.method.rawValue) (\(m.summary))"), "\(m.method)") }
    }

    /// The matrix: HST on the ViT only, everything else on all three.
    @Test func matrixFromTheRegistry() {
        for row in MethodRegistry.matrix() {
            for cell in row.cells {
                #expect((cell.refusal == nil) == (row.method != .hst || cell.family == .vit), "\(row.method) on \(cell.family)")
            }
        }
    }
}
