import Foundation

/// A fresh folder for one test's files. All of them sit in one folder per test process, removed
/// when the process exits: helpers that made folders straight in the system temporary folder left
/// hundreds behind after a few test runs.
public func scratchFolder(_ prefix: String) -> URL {
    let u = testProcessScratchRoot.appendingPathComponent("\(prefix)-\(UUID().uuidString)", isDirectory: true)
    try? FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
    return u
}

private let testProcessScratchRoot: URL = {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("sidetune-tests-\(getpid())", isDirectory: true)
    atexit { try? FileManager.default.removeItem(at: testProcessScratchRoot) }
    return root
}()
