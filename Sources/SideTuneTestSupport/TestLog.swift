import Foundation

/// A test's diagnostic line (measured errors, timings), on standard error. Suites run in parallel
/// in one process and CLI tests capture standard output while a command runs, so a `print` from
/// another test could land in a captured output and break its parsing (seen in CI).
public func testLog(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
