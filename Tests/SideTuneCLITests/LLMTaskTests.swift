import Foundation
import SideTuneBackbones
import SideTuneCLI
import SideTuneMethods
import Testing

@Suite struct LLMTaskTests {
    @Test func badLLMFlagsAreRefusedAtParse() {
        for args in [["--weights", "f16"], ["--task", "chat"], ["--qst-downsample", "median"], ["--qst-reduction", "0"],
                     ["--method", "nope"], ["--side-init", "zero"]] {
            #expect(throws: (any Error).self, "\(args)") {
                _ = try SideTuneCommand.parseAsRoot(["train", "--model", "smollm2", "--method", "qst"] + args)
            }
        }
    }

    @Test func weightFormatDefaultsPerMethod() throws {
        let o = try MethodFlags.parse([]).options()
        #expect(MethodRegistry.weights(.qst, options: o) == .nf4 && MethodRegistry.weights(.qlora, options: o) == .nf4)
        #expect(MethodRegistry.weights(.lora, options: o) == .f32 && MethodRegistry.weights(.full, options: o) == .f32)
        #expect(MethodRegistry.weights(.qst, options: try MethodFlags.parse(["--weights", "f32"]).options()) == .f32)
        // The older spelling still parses.
        #expect(try MethodFlags.parse(["--weights", "float32"]).options().weights == .f32)
    }

    /// Methods that cannot run with the asked-for weights are refused before the model is loaded.
    @Test func wrongMethodsFailBeforeLoading() throws {
        for (args, message) in [(["--method", "hst"], "convolutional"), (["--method", "qlora", "--weights", "f32"], "use --weights nf4"),
                                (["--method", "lora", "--weights", "nf4"], "--method qlora"), (["--method", "full", "--weights", "nf4"], "cannot be trained")] {
            var cmd = try SideTuneCommand.parseAsRoot(["train", "--model", "smollm2"] + args)
            do {
                try cmd.run()
                Issue.record("\(args) should fail")
            } catch {
                #expect("\(error)".contains(message), "\(args): \(error)")
            }
        }
    }

    @Test func instructionFilesAreCheckedLineByLine() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sidetune-pairs-\(getpid()).jsonl")
        defer { try? FileManager.default.removeItem(at: url) }
        try Data("{\"prompt\": \"a\", \"response\": \"b\"}\n\n{\"prompt\": \"c\"}\n".utf8).write(to: url)
        #expect(throws: (any Error).self) { try InstructionPair.load(url.path) }
        do { _ = try InstructionPair.load(url.path) } catch { #expect("\(error)".contains(":3:"), "\(error)") }
        // The committed example teaches one prefix to every response.
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../examples/llm/answer_format.jsonl")
        let pairs = try InstructionPair.load(example.standardizedFileURL.path)
        #expect(pairs.count == 40 && pairs.allSatisfy { $0.response.hasPrefix("ANSWER: ") })
    }
}
