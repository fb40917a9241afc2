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
        @Flag(help: "Do not train: rebuild compare.md, .csv and .svg from the reports already in --output (the methods' <method>.json).")
        var replot = false
        @Argument(parsing: .allUnrecognized, help: "Options passed to each `sidetune train`.")
        var trainArguments: [String] = []

        public init() {}

        /// The plot's title: the backbone, the data and the split every method ran on.
        func title(_ reports: [TrainingReport]) -> String {
            func flag(_ name: String, _ fallback: String) -> String {
                trainArguments.firstIndex(of: name).flatMap { $0 + 1 < trainArguments.count ? trainArguments[$0 + 1] : nil } ?? fallback
            }
            let model = trainArguments.contains("--model-dir") ? flag("--model-dir", "?") : flag("--model", "minilm")
            guard let r = reports.first else { return model }
            return "\(model) on \(flag("--data", "tweets")): \(r.trainExamples) training, \(r.testExamples) test examples, "
                + "batch \(r.batchSize), \(r.epochSeconds.count) epoch\(r.epochSeconds.count == 1 ? "" : "s"), \(r.threads) threads"
        }

        public func run() throws {
            let folder = URL(fileURLWithPath: output, isDirectory: true)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let exe = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
            var reports: [TrainingReport] = []
            for m in methods.kinds.map(\.rawValue) {
                let reportURL = folder.appendingPathComponent("\(m).json")
                if replot {
                    guard let data = FileManager.default.contents(atPath: reportURL.path) else {
                        throw ValidationError("--replot: no report \(reportURL.path) for method \(m)")
                    }
                    reports.append(try JSONDecoder().decode(TrainingReport.self, from: data))
                    continue
                }
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
            try Data(CompareOutput.svg(reports, title: title(reports)).utf8).write(to: folder.appendingPathComponent("compare.svg"))
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

    /// Accuracy (y, %) against ledger peak memory (x, MiB), one labelled point per method, under a
    /// title naming the setting. Labels are placed where they overlap no other label or point.
    public static func svg(_ rs: [TrainingReport], title: String = "") -> String {
        let w = 680.0, h = 440.0, left = 70.0, right = 30.0, top = 50.0, bottom = 60.0
        let xs = rs.map { Double($0.peakBytes["total"] ?? 0) / 1_048_576 }, ys = rs.map { 100 * $0.accuracy }
        let xMax = max((xs.max() ?? 1) * 1.1, 1), yMin = max(0, (ys.min() ?? 0) - 5), yMax = min(100, (ys.max() ?? 100) + 5)
        func px(_ x: Double) -> Double { left + x / xMax * (w - left - right) }
        func py(_ y: Double) -> Double { top + (yMax - y) / max(yMax - yMin, 1e-9) * (h - top - bottom) }
        func esc(_ t: String) -> String { t.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;") }
        var s = ["<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">",
                 "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
                 "<text x=\"\(w / 2)\" y=\"20\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">\(esc(title))</text>",
                 "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - right)\" y2=\"\(h - bottom)\" stroke=\"black\"/>",
                 "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(h - bottom)\" stroke=\"black\"/>",
                 "<text x=\"\((left + w - right) / 2)\" y=\"\(h - 20)\" text-anchor=\"middle\">peak training memory, ledger total (MiB)</text>",
                 "<text x=\"18\" y=\"\((top + h - bottom) / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 18 \((top + h - bottom) / 2))\">test accuracy (%)</text>"]
        for i in 0...4 {
            let xv = xMax * Double(i) / 4, yv = yMin + (yMax - yMin) * Double(i) / 4
            s.append("<text x=\"\(px(xv))\" y=\"\(h - bottom + 16)\" text-anchor=\"middle\">\(Int(xv))</text>")
            s.append("<text x=\"\(left - 8)\" y=\"\(py(yv) + 4)\" text-anchor=\"end\">\(String(format: "%.1f", yv))</text>")
        }
        let points = zip(xs, ys).map { (px($0), py($1)) }
        for (r, p) in zip(rs, points) {
            let color = MethodKind(rawValue: r.method).map { MethodRegistry.method($0).readsFrozenTaps } == true ? "#1f77b4" : "#d62728"
            s.append("<circle cx=\"\(p.0)\" cy=\"\(p.1)\" r=\"5\" fill=\"\(color)\"/>")
        }
        for (label, box) in zip(rs.map(\.method), labelBoxes(rs.map(\.method), points: points, bounds: (left, top, w - right, h - bottom))) {
            s.append("<text x=\"\(box.x)\" y=\"\(box.y + box.h - 3)\">\(esc(label))</text>")
        }
        s.append("<text x=\"\(w - right)\" y=\"\(top - 10)\" text-anchor=\"end\" fill=\"#1f77b4\">blue: side methods (frozen taps)</text>")
        s.append("<text x=\"\(left + 4)\" y=\"\(top - 10)\" fill=\"#d62728\">red: backprop through the backbone</text>")
        s.append("</svg>")
        return s.joined(separator: "\n") + "\n"
    }

    /// A box (x, y top, width, height) per label beside its point: the first of eight positions
    /// around the point that stays inside `bounds` and overlaps no point and no label placed
    /// before it (labels go in order of their points, top to bottom); the least crowded one if all do.
    public static func labelBoxes(_ labels: [String], points: [(Double, Double)], bounds: (Double, Double, Double, Double))
        -> [(x: Double, y: Double, w: Double, h: Double)] {
        typealias Box = (x: Double, y: Double, w: Double, h: Double)
        func overlap(_ a: Box, _ b: Box) -> Double {
            max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x)) * max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
        }
        let pointBoxes = points.map { Box(x: $0.0 - 6, y: $0.1 - 6, w: 12, h: 12) }
        var placed = [Box?](repeating: nil, count: labels.count)
        for i in points.indices.sorted(by: { points[$0].1 < points[$1].1 }) {
            let (x, y) = points[i], lw = 7.2 * Double(labels[i].count) + 2, lh = 14.0
            let candidates: [Box] = [(x + 8, y - lh - 2, lw, lh), (x + 8, y + 2, lw, lh), (x - 8 - lw, y - lh - 2, lw, lh),
                                     (x - 8 - lw, y + 2, lw, lh), (x - lw / 2, y - lh - 8, lw, lh), (x - lw / 2, y + 8, lw, lh),
                                     (x + 8, y - lh / 2, lw, lh), (x - 8 - lw, y - lh / 2, lw, lh)]
            func cost(_ c: Box) -> Double {
                let outside = c.x < bounds.0 || c.y < bounds.1 || c.x + c.w > bounds.2 || c.y + c.h > bounds.3 ? 1e6 : 0
                return outside + pointBoxes.map { overlap(c, $0) }.reduce(0, +) + placed.compactMap { $0 }.map { overlap(c, $0) }.reduce(0, +)
            }
            placed[i] = candidates.first { cost($0) == 0 } ?? candidates.min { cost($0) < cost($1) }!
        }
        return placed.map { $0! }
    }
}
