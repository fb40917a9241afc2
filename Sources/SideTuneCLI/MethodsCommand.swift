import ArgumentParser
import Foundation
import SideTuneBackbones
import SideTuneMethods

extension SideTuneCommand {
    public struct Methods: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "List every method and the backbones it runs on (the method registry's matrix).",
            discussion: "A cell that does not run says why with --why. --markdown prints the table the README shows."
        )
        @Flag(help: "Print a Markdown table (as in the README).")
        var markdown = false
        @Flag(help: "Say why a method does not run on a backbone.")
        var why = false

        public init() {}

        /// The backbones the CLI ships, one per family, as the columns.
        public static let columns: [(family: BackboneFamily, title: String)] = [
            (.bert, "MiniLM (BERT)"), (.vit, "ViT-S/14 (DINOv2)"), (.llama, "SmolLM2 (Llama)"),
        ]

        public func run() throws {
            if markdown {
                print(MethodRegistry.markdownMatrix(columns: Self.columns), terminator: "")
                return
            }
            print(Self.table(why: why), terminator: "")
        }

        static func table(why: Bool) -> String {
            let widths = columns.map { max($0.title.count, 3) }
            var lines = ["method   " + zip(columns, widths).map { $0.title.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                         + "  default lr  weights"]
            var reasons: [String] = []
            for row in MethodRegistry.matrix() {
                let m = MethodRegistry.method(row.method)
                var line = row.method.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)
                for (column, width) in zip(columns, widths) {
                    let refusal = row.cells.first { $0.family == column.family }?.refusal
                    line += (refusal == nil ? "yes" : "-").padding(toLength: width + 2, withPad: " ", startingAt: 0)
                    if let refusal { reasons.append("\(row.method.rawValue) on \(column.title): \(refusal)") }
                }
                line += String(format: "%-10@  %@", String(format: "%g", m.defaultLearningRate) as NSString, m.defaultWeights.rawValue as NSString)
                lines.append(line)
            }
            lines.append("")
            for row in MethodRegistry.matrix() { lines.append("\(row.method.rawValue): \(row.summary)") }
            if why && !reasons.isEmpty { lines += [""] + reasons }
            return lines.joined(separator: "\n") + "\n"
        }
    }
}
