import ArgumentParser
import Foundation
import SideTuneData
import SideTuneEngine

extension SideTuneCommand.Bench {
    public struct ImagesBench: ParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "images",
            abstract: "Time decoding and preprocessing image files into backbone input (images per second).",
            discussion: """
            Reads every image file under --folder (JPEG, PNG, PGM/PPM, NPY; searched recursively), \
            then decodes and prepares them in batches as training does (shorter side to \
            size*256/224, antialiased bicubic, centre crop, ImageNet normalisation), in parallel on \
            --threads threads, for --rounds rounds, and reports the best round's images per second. \
            scripts/bench_decode.py runs the same work with Pillow on the same files and prints the ratio.
            """
        )
        @Option(help: "A folder of image files (searched recursively).")
        var folder: String
        @Option(help: "Output side in pixels.")
        var size: Int = 224
        @Option(help: "Images per batch.")
        var batch: Int = 32
        @Option(help: "Rounds over the folder (the best is reported).")
        var rounds: Int = 3
        @Option(help: ArgumentHelp("Threads (default: every core).", valueName: "n"))
        var threads: Int?
        @Flag(help: "Print one JSON object instead of a line.")
        var json = false

        public init() {}

        public func validate() throws {
            guard size >= 1, batch >= 1, rounds >= 1 else { throw ValidationError("--size, --batch and --rounds must be >= 1") }
            if let t = threads, t < 1 { throw ValidationError("--threads must be >= 1, got \(t)") }
        }

        public func run() throws {
            if let threads { ThreadPool.shared.activeThreads = threads }
            let root = URL(fileURLWithPath: folder, isDirectory: true)
            guard let walker = FileManager.default.enumerator(atPath: root.path) else { throw ValidationError("--folder \(folder): cannot list it") }
            let paths = walker.compactMap { $0 as? String }
                .filter { ImageDecoder.extensions.contains(($0 as NSString).pathExtension.lowercased()) }.sorted()
                .map { root.appendingPathComponent($0).path }
            guard !paths.isEmpty else { throw ValidationError("--folder \(folder): no image files") }
            let pre = CentreCropPreprocessor(size: size)
            var best = Double.infinity
            for _ in 0..<rounds {
                let t0 = DispatchTime.now().uptimeNanoseconds
                var i = 0
                while i < paths.count {
                    let part = Array(paths[i..<min(i + batch, paths.count)])
                    _ = try pre.batch(part)
                    i += part.count
                }
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            }
            let rate = Double(paths.count) / best
            if json {
                print("{\"engine\": \"sidetune\", \"images\": \(paths.count), \"size\": \(size), \"threads\": \(ThreadPool.shared.activeThreads), \"seconds\": \(best), \"images_per_second\": \(rate)}")
            } else {
                print(String(format: "%d images to %dx%d on %d thread(s): %.1f images/s (best of %d rounds, %.2f s)", paths.count, size, size,
                             ThreadPool.shared.activeThreads, rate, rounds, best))
            }
        }
    }
}
