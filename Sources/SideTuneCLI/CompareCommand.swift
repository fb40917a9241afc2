import ArgumentParser
import Foundation
import SideTuneMethods
import SideTuneTrainer

extension SideTuneCommand {
    public struct Compare: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Train several methods on the same data and split; write a Markdown table, a CSV and an SVG plot of accuracy against peak memory.",
            discussion: """
            Each method runs in its own process (`sidetune train ... --report`), so peak RSS is measured \
            per method, not inherited from the previous one. Every option after the method list is \
            passed to train unchanged (e.g. --epochs, --train-limit, --max-length, --batch-size).

            Example: sidetune compare --methods lst,last,lora,full --train-limit 2000 --epochs 3
            """
        )
        @Option(help: "Comma-separated methods (\(MethodKind.allCases.map(\.rawValue).joined(separator: ","))).")
        var methods = MethodList([.lst, .last, .lora, .full])
        @Option(help: "Folder for compare.md, compare.csv, compare.svg and the per-method reports.")
        var output: String = "runs/compare"
        @Argument(parsing: .allUnrecognized, help: "Options passed to each `sidetune train`.")
        var trainArguments: [String] = []

        public init() {}

        public func run() throws {
            let folder = URL(fileURLWithPath: output, isDirectory: true)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let exe = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
            var reports: [TrainingReport] = []
            for m in methods.kinds.map(\.rawValue) {
                let reportURL = folder.appendingPathComponent("\(m).json")
                FileHandle.standardError.write(Data("== \(m)\n".utf8))
                let p = Process()
                p.executableURL = exe
                p.arguments = ["train", "--method", m, "--report", reportURL.path] + trainArguments
                try p.run()
                p.waitUntilExit()
                guard p.terminationStatus == 0 else {
                    throw ValidationError("train --method \(m) failed (exit \(p.terminationStatus)); its output is above")
                }
                let data = try Data(contentsOf: reportURL)
                reports.append(try JSONDecoder().decode(TrainingReport.self, from: data))
            }
            let md = CompareOutput.markdown(reports)
            try Data(md.utf8).write(to: folder.appendingPathComponent("compare.md"))
            try Data(CompareOutput.csv(reports).utf8).write(to: folder.appendingPathComponent("compare.csv"))
            try Data(CompareOutput.svg(reports).utf8).write(to: folder.appendingPathComponent("compare.svg"))
            print(md)
            print("wrote \(folder.path)/compare.md, compare.csv, compare.svg")
        }
    }
}

/// Side-by-side tables and the accuracy-vs-memory plot.
public enum CompareOutput {
    static func mib(_ b: Int) -> String { String(format: "%.1f", Double(b) / 1_048_576) }

    public static func markdown(_ rs: [TrainingReport]) -> String {
        var out = ["| method | test acc | macro-F1 | trainable params | weights MiB | activations MiB | gradients MiB | optimizer MiB | cache MiB | ledger peak MiB | peak RSS MiB | s/step | s/step cached | CPU stolen |",
                   "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rs {
            let b = r.peakBytes
            out.append("| \(r.method) | \(String(format: "%.2f", 100 * r.accuracy)) | \(String(format: "%.2f", 100 * r.macroF1)) | \(r.trainableParams) | \(mib(b["weights"] ?? 0)) | \(mib(b["activations"] ?? 0)) | \(mib(b["gradients"] ?? 0)) | \(mib(b["optimizer"] ?? 0)) | \(mib(b["cache"] ?? 0)) | \(mib(b["total"] ?? 0)) | \(mib(r.peakRSSBytes)) | \(String(format: "%.3f", r.secondsPerStep)) | \(r.secondsPerStepCached.map { String(format: "%.4f", $0) } ?? "-") | \(r.stolenCPUShare.map { String(format: "%.0f%%", 100 * $0) } ?? "-") |")
        }
        return out.joined(separator: "\n") + "\n"
    }

    public static func csv(_ rs: [TrainingReport]) -> String {
        var out = ["method,accuracy,macro_f1,trainable_params,weights_bytes,activations_bytes,gradients_bytes,optimizer_bytes,cache_bytes,workspace_bytes,total_peak_bytes,peak_rss_bytes,seconds_per_step,seconds_per_step_cached,stolen_cpu_share"]
        for r in rs {
            let b = r.peakBytes
            out.append([r.method, String(r.accuracy), String(r.macroF1), String(r.trainableParams), String(b["weights"] ?? 0),
                        String(b["activations"] ?? 0), String(b["gradients"] ?? 0), String(b["optimizer"] ?? 0), String(b["cache"] ?? 0),
                        String(b["workspace"] ?? 0), String(b["total"] ?? 0), String(r.peakRSSBytes), String(r.secondsPerStep),
                        r.secondsPerStepCached.map { String($0) } ?? "", r.stolenCPUShare.map { String($0) } ?? ""].joined(separator: ","))
        }
        return out.joined(separator: "\n") + "\n"
    }

    /// Accuracy (y) against ledger peak memory (x, MiB), one labelled point per method.
    public static func svg(_ rs: [TrainingReport]) -> String {
        let w = 640.0, h = 420.0, left = 70.0, right = 30.0, top = 30.0, bottom = 60.0
        let xs = rs.map { Double($0.peakBytes["total"] ?? 0) / 1_048_576 }, ys = rs.map { 100 * $0.accuracy }
        let xMax = max((xs.max() ?? 1) * 1.1, 1), yMin = max(0, (ys.min() ?? 0) - 5), yMax = min(100, (ys.max() ?? 100) + 5)
        func px(_ x: Double) -> Double { left + x / xMax * (w - left - right) }
        func py(_ y: Double) -> Double { top + (yMax - y) / max(yMax - yMin, 1e-9) * (h - top - bottom) }
        var s = ["<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">",
                 "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
                 "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - right)\" y2=\"\(h - bottom)\" stroke=\"black\"/>",
                 "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(h - bottom)\" stroke=\"black\"/>",
                 "<text x=\"\((left + w - right) / 2)\" y=\"\(h - 20)\" text-anchor=\"middle\">peak training memory, ledger total (MiB)</text>",
                 "<text x=\"18\" y=\"\((top + h - bottom) / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 18 \((top + h - bottom) / 2))\">test accuracy (%)</text>"]
        for i in 0...4 {
            let xv = xMax * Double(i) / 4, yv = yMin + (yMax - yMin) * Double(i) / 4
            s.append("<text x=\"\(px(xv))\" y=\"\(h - bottom + 16)\" text-anchor=\"middle\">\(Int(xv))</text>")
            s.append("<text x=\"\(left - 8)\" y=\"\(py(yv) + 4)\" text-anchor=\"end\">\(String(format: "%.1f", yv))</text>")
        }
        for (r, (x, y)) in zip(rs, zip(xs, ys)) {
            let color = MethodKind(rawValue: r.method).map { MethodRegistry.method($0).readsFrozenTaps } == true ? "#1f77b4" : "#d62728"
            s.append("<circle cx=\"\(px(x))\" cy=\"\(py(y))\" r=\"5\" fill=\"\(color)\"/>")
            s.append("<text x=\"\(px(x) + 8)\" y=\"\(py(y) - 6)\">\(r.method)</text>")
        }
        s.append("<text x=\"\(w - right)\" y=\"\(top - 10)\" text-anchor=\"end\" fill=\"#1f77b4\">blue: side methods (frozen taps)</text>")
        s.append("</svg>")
        return s.joined(separator: "\n") + "\n"
    }
}
