import Foundation
import SideTuneCLI
import Testing

@Suite struct CLITests {
    /// `bench gemm --json` prints one JSON object with the documented keys.
    @Test func benchGEMMJSON() throws {
        var cmd = try SideTuneCommand.parseAsRoot(["bench", "gemm", "--json", "--shapes", "64x48x40", "--threads", "1", "--seconds", "0.01"])
        let output = try captureStandardOutput { try cmd.run() }
        // Only the JSON line: swift-testing's own progress lines can land in the captured stdout
        // while other suites run in parallel.
        let line = try #require(output.split(separator: "\n").last { $0.hasPrefix("{") })
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        #expect(object["cpu"] is String)
        let peaks = object["peak_gflops"] as! [String: Double]
        #expect((peaks["1"] ?? 0) > 1)
        let rows = object["rows"] as! [[String: Any]]
        #expect(rows.count == 1)
        for key in ["m", "n", "k", "threads", "gflops", "seconds"] { #expect(rows[0][key] != nil, "missing \(key)") }
        #expect(rows[0]["m"] as? Int == 64 && rows[0]["n"] as? Int == 48 && rows[0]["k"] as? Int == 40)
    }

    @Test func badShapeIsAClearError() {
        #expect(throws: (any Error).self) {
            var cmd = try SideTuneCommand.parseAsRoot(["bench", "gemm", "--shapes", "12x3"])
            try cmd.run()
        }
    }

    @Test func helpExplainsCommands() {
        let help = SideTuneCommand.helpMessage(for: SideTuneCommand.Bench.GEMMBench.self)
        #expect(help.contains("--json") && help.contains("peak"))
    }
}

/// Runs `body` with stdout redirected into a pipe and returns what it printed.
func captureStandardOutput(_ body: () throws -> Void) throws -> String {
    fflush(nil)
    let saved = dup(1)
    var fds: [Int32] = [0, 0]
    pipe(&fds)
    dup2(fds[1], 1)
    close(fds[1])
    var thrown: Error?
    do { try body() } catch { thrown = error }
    fflush(nil)
    dup2(saved, 1)
    close(saved)
    var data = Data()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fds[0], &buf, buf.count)
        if n <= 0 { break }
        data.append(contentsOf: buf[0..<n])
    }
    close(fds[0])
    if let thrown { throw thrown }
    return String(decoding: data, as: UTF8.self)
}
