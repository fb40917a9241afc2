import Foundation
import SideTuneEngine

/// A training run's folder, consistent as a whole at every instant:
///
///     run/
///       epoch-0002/         checkpoint.json, weights.safetensors, optimizer.safetensors, state.json
///       epoch-0003/
///       best -> epoch-0002  symbolic links, each switched by one rename
///       last -> epoch-0003
///       run.lock            while a process trains here
///
/// An epoch's files are written into a hidden folder, flushed to disk, and the folder renamed into
/// place, so a reader (`eval`, `--resume`) only ever sees complete epochs; `best` and `last` then
/// switch to it with one rename of a fresh symbolic link each (`best` first: a kill between the two
/// leaves `last` one epoch behind, and resuming recomputes that epoch bit for bit). Epoch folders
/// that neither link names are removed afterwards.
public struct RunFolder {
    public let url: URL
    /// Called before every change to the folder with a description of it ("write epoch-0002/
    /// weights.safetensors", "rename epoch-0002", "link last -> epoch-0002", "remove epoch-0001").
    /// Tests throw from it to stand for a kill at that point.
    public var beforeChange: ((String) throws -> Void)?

    public init(_ url: URL, beforeChange: ((String) throws -> Void)? = nil) {
        self.url = url
        self.beforeChange = beforeChange
    }

    public static let links = ["best", "last"]
    /// Files of an older layout (a `last/` folder and `state.json` beside it).
    static let olderLayout = ["state.json"]

    public static func epochName(_ epoch: Int) -> String { String(format: "epoch-%04d", epoch) }

    /// Whether `url` holds a run (or part of one): a `best` or `last` link or folder, an epoch
    /// folder, or an older run's `state.json`.
    public static func holdsRun(_ url: URL) -> Bool {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        return entries.contains { links.contains($0) || olderLayout.contains($0) || $0.hasPrefix("epoch-") }
    }

    /// Whether the run was written by an older SideTune (real `best/`, `last/` folders and a
    /// top-level `state.json`): it cannot be resumed exactly.
    public static func isOlderLayout(_ url: URL) -> Bool {
        let fm = FileManager.default
        if fm.fileExists(atPath: url.appendingPathComponent("state.json").path) { return true }
        return links.contains { (try? fm.destinationOfSymbolicLink(atPath: url.appendingPathComponent($0).path)) == nil
            && fm.fileExists(atPath: url.appendingPathComponent($0).path) }
    }

    /// The epoch folder a link names, if the link exists and its folder does.
    public func resolve(_ link: String) -> URL? {
        let path = url.appendingPathComponent(link).path
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path) else { return nil }
        let folder = url.appendingPathComponent(target)
        return FileManager.default.fileExists(atPath: folder.appendingPathComponent("state.json").path) ? folder : nil
    }

    private func change(_ what: String) throws { try beforeChange?(what) }

    /// Writes one epoch: each `(name, write)` creates file `name` at the URL it is given, inside a
    /// hidden folder; the files and the folder are flushed and the folder renamed to
    /// `epoch-NNNN` (or `epoch-NNNN.K` when an earlier attempt at that epoch is still named by a
    /// link). Returns the new folder's name.
    public func writeEpoch(_ epoch: Int, files: [(name: String, write: (URL) throws -> Void)]) throws -> String {
        let fm = FileManager.default
        var name = Self.epochName(epoch), attempt = 1
        while fm.fileExists(atPath: url.appendingPathComponent(name).path) {
            name = Self.epochName(epoch) + ".\(attempt)"
            attempt += 1
        }
        let tmp = url.appendingPathComponent(".\(name).tmp-\(getpid())")
        try? fm.removeItem(at: tmp)
        try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
        for (file, write) in files {
            try change("write \(name)/\(file)")
            let target = tmp.appendingPathComponent(file)
            try write(target)
            try flush(target)
        }
        try flush(tmp)
        try change("rename \(name)")
        try rename(tmp, to: url.appendingPathComponent(name))
        try flush(url)
        return name
    }

    /// Points `link` ("best" or "last") at the epoch folder `name` by renaming a new symbolic link
    /// over the old one (one atomic step).
    public func point(_ link: String, at name: String) throws {
        try change("link \(link) -> \(name)")
        let tmp = url.appendingPathComponent(".\(link).tmp-\(getpid())")
        unlink(tmp.path)
        guard symlink(name, tmp.path) == 0 else { throw TrainerError("\(tmp.path): cannot create a link: \(String(cString: strerror(errno)))") }
        try rename(tmp, to: url.appendingPathComponent(link))
        try flush(url)
    }

    /// Removes epoch folders that no link names, and what interrupted writes left (hidden
    /// `.epoch-*` folders and `.best`/`.last` links of other processes; the lock keeps writers to one).
    public func prune() throws {
        let fm = FileManager.default
        let named = Set(Self.links.compactMap { try? fm.destinationOfSymbolicLink(atPath: url.appendingPathComponent($0).path) })
        for entry in (try? fm.contentsOfDirectory(atPath: url.path)) ?? [] {
            let stale = entry.hasPrefix("epoch-") && !named.contains(entry)
            let leftover = entry.hasPrefix(".epoch-") || Self.links.contains { entry.hasPrefix(".\($0).tmp-") }
            guard stale || leftover else { continue }
            try change("remove \(entry)")
            try fm.removeItem(at: url.appendingPathComponent(entry))
        }
    }

    /// Removes the run (links, epoch folders, leftovers, an older layout's files) and nothing else
    /// the user keeps in the folder (`--overwrite`).
    public func removeRun() throws {
        let fm = FileManager.default
        for entry in (try? fm.contentsOfDirectory(atPath: url.path)) ?? [] {
            let ours = Self.links.contains(entry) || Self.olderLayout.contains(entry) || entry.hasPrefix("epoch-")
                || entry.hasPrefix(".epoch-") || Self.links.contains { entry.hasPrefix(".\($0).tmp-") }
            if ours { try fm.removeItem(at: url.appendingPathComponent(entry)) }
        }
    }

    private func rename(_ from: URL, to: URL) throws {
        guard Foundation.rename(from.path, to.path) == 0 else {
            throw TrainerError("\(to.path): cannot rename \(from.lastPathComponent) into place: \(String(cString: strerror(errno)))")
        }
    }

    /// fsync(2) on a file or folder, so a power cut after the rename cannot leave empty files.
    private func flush(_ at: URL) throws {
        let fd = open(at.path, O_RDONLY)
        guard fd >= 0 else { throw TrainerError("\(at.path): cannot open to flush: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw TrainerError("\(at.path): cannot flush to disk: \(String(cString: strerror(errno)))") }
    }
}

/// `run.lock`: refuses a second live run on one folder. Holds the owner's pid, host and process
/// start time; a lock whose process is gone (or is another process with a reused pid) is stale and
/// taken over.
public final class RunLock {
    public let url: URL
    // False until the file is ours: an init that throws still runs deinit, which must not remove
    // the other run's lock.
    private var held = false

    public init(folder: URL) throws {
        url = folder.appendingPathComponent("run.lock")
        let me = Self.describe(pid: getpid())
        for _ in 0..<2 {
            let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
            if fd >= 0 {
                let bytes = Array(me.utf8)
                _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
                held = true
                LiveRuns.add(url)
                ProcessExit.beforeExit = { LiveRuns.releaseAll() }
                return
            }
            guard errno == EEXIST else {
                throw TrainerError("\(url.path): cannot create the run lock: \(String(cString: strerror(errno)))")
            }
            let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
            if let owner = Self.liveOwner(text) {
                throw TrainerError("\(folder.path): another run (\(owner)) is training in this folder; wait for it, or use another --output")
            }
            unlink(url.path) // stale: its process is gone
        }
        throw TrainerError("\(url.path): cannot take the run lock (another process keeps creating it)")
    }

    public func release() {
        guard held else { return }
        held = false
        unlink(url.path)
        LiveRuns.remove(url)
    }

    deinit { release() }

    /// "pid 123 on host, started at tick 456" for this host's process `pid`.
    static func describe(pid: Int32) -> String {
        "pid \(pid)\nhost \(ProcessInfo.processInfo.hostName)\nstart \(processStart(pid) ?? "?")\n"
    }

    /// The owner described by a lock's text, if that process is alive (same host, same start time).
    static func liveOwner(_ text: String) -> String? {
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        guard let pidText = fields["pid"], let pid = Int32(pidText) else { return nil }
        let host = fields["host"] ?? "?"
        // Another machine's process (a shared folder) cannot be checked: taken as live.
        guard host == ProcessInfo.processInfo.hostName else { return "pid \(pid) on \(host); remove run.lock if it is gone" }
        guard kill(pid, 0) == 0 || errno == EPERM else { return nil }
        if let start = fields["start"], start != "?", let now = processStart(pid), now != start { return nil }
        return "pid \(pid)"
    }

    /// The process's start time in clock ticks since boot (/proc/PID/stat field 22), which tells a
    /// reused pid from the lock's owner.
    static func processStart(_ pid: Int32) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? String(fields[19]) : nil
    }
}

/// Locks of runs in progress in this process, released by `releaseAll` when the process is
/// stopped by a signal or runs out of memory (deinit does not run then).
public enum LiveRuns {
    nonisolated(unsafe) static var locks: Set<String> = []
    static let mutex = NSLock()

    static func add(_ url: URL) { mutex.lock(); locks.insert(url.path); mutex.unlock() }
    static func remove(_ url: URL) { mutex.lock(); locks.remove(url.path); mutex.unlock() }

    /// Removes every lock file this process holds.
    public static func releaseAll() {
        mutex.lock()
        for path in locks { unlink(path) }
        locks.removeAll()
        mutex.unlock()
    }
}
