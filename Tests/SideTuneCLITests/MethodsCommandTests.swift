import Foundation
import SideTuneCLI
import SideTuneEngine
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

    /// Every environment variable the engine reads is in docs/architecture.md's table, and no
    /// other `SIDETUNE_` variable is read anywhere in Sources/ but the assets' folder.
    @Test func kernelVariablesAreDocumentedAndTheOnlyOnes() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL
        let doc = try String(contentsOf: root.appendingPathComponent("docs/architecture.md"), encoding: .utf8)
        for v in KernelEnvironment.documented { #expect(doc.contains("| `\(v.name)` |"), "\(v.name) is not in docs/architecture.md") }
        let sources = FileManager.default.enumerator(at: root.appendingPathComponent("Sources"), includingPropertiesForKeys: nil)!
        for case let url as URL in sources where url.pathExtension == "swift" && url.lastPathComponent != "KernelEnvironment.swift" {
            let text = try String(contentsOf: url, encoding: .utf8)
            #expect(!text.contains("environment[\"SIDETUNE_") || text.contains("environment[\"SIDETUNE_CACHE\"]"),
                    "\(url.lastPathComponent) reads an environment variable outside KernelEnvironment")
        }
    }

    /// The README's Swift example is examples/library/main.swift (which .ci/run builds against a
    /// tagged version and runs), line for line.
    @Test func readmeExampleIsTheBuiltOne() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let example = try String(contentsOf: root.appendingPathComponent("examples/library/main.swift"), encoding: .utf8)
        let code = example.split(separator: "\n", omittingEmptySubsequences: false).drop { !$0.hasPrefix("import ") }
        #expect(code.count > 10 && readme.contains(code.joined(separator: "\n")), "README and examples/library/main.swift differ")
    }
}
