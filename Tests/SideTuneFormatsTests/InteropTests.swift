import Foundation
import Testing
import SideTuneFormats

/// Cross-checks against the Python `safetensors` + `torch` packages (reference only, never a
/// run-time dependency). Enable with SIDETUNE_PYTHON_INTEROP=1 where they are installed.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_PYTHON_INTEROP"] == "1",
                "set SIDETUNE_PYTHON_INTEROP=1 with python3, safetensors and torch installed"))
struct PythonInteropTests {
    func python(_ script: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script] + args
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        return text
    }

    @Test func torchReadsOurFileAndAgreesOnRounding() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SystemRandomNumberGenerator()
        let values = (0..<1000).map { _ in Float.random(in: -70000...70000, using: &rng) } + [1 + 1.0 / 2048, 1 + 1.0 / 256, 65520, 1e-7]
        var w = SafetensorsWriter(metadata: ["format": "pt"])
        try w.add("f32", floats: values, shape: [values.count])
        try w.add("f16", floats: values, shape: [values.count], as: .float16)
        try w.add("bf16", floats: values, shape: [values.count], as: .bfloat16)
        let path = dir + "/ours.safetensors"
        try w.write(to: path)
        let script = """
        import sys, torch
        from safetensors.torch import load_file
        t = load_file(sys.argv[1])
        x = t["f32"]
        ok16 = torch.equal(x.to(torch.float16).view(torch.int16), t["f16"].view(torch.int16))
        okbf = torch.equal(x.to(torch.bfloat16).view(torch.int16), t["bf16"].view(torch.int16))
        print(ok16, okbf, t["f16"].dtype, t["bf16"].dtype)
        """
        let out = try python(script, [path])
        #expect(out.trimmingCharacters(in: .whitespacesAndNewlines) == "True True torch.float16 torch.bfloat16")
    }

    @Test func weReadTorchsFile() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/theirs.safetensors"
        let script = """
        import sys, torch
        from safetensors.torch import save_file
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 5, generator=g) * 100
        save_file({"a": x, "h": x.half(), "b": x.bfloat16(), "i": torch.arange(7, dtype=torch.int64),
                   "u": torch.tensor([0, 255], dtype=torch.uint8)}, sys.argv[1], metadata={"k": "v"})
        for v in [x, x.half().float(), x.bfloat16().float()]:
            print(" ".join(repr(f) for f in v.flatten().tolist()))
        """
        let lines = try python(script, [path]).split(separator: "\n").map { $0.split(separator: " ").map { Float(String($0))! } }
        let f = try SafetensorsFile(path: path)
        #expect(f.metadata == ["k": "v"])
        #expect(f.warnings.isEmpty)
        #expect(try f.info("h").shape == [3, 5] && f.info("b").dtype == .bfloat16)
        #expect(try f.floats("a") == lines[0])
        #expect(try f.floats("h") == lines[1])
        #expect(try f.floats("b") == lines[2])
        #expect(try f.floats("i") == (0..<7).map(Float.init))
        #expect(try f.floats("u") == [0, 255])
    }
}
